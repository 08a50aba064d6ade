"""DRF token authentication under the Bearer keyword."""

from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    """`Authorization: Bearer <key>`."""

    keyword = "Bearer"
