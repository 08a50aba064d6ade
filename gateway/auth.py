"""Who is calling: bearer tokens from the local token file, or OIDC JWTs (ESCAPE IAM).

Every request needs one; the identity's name owns the jobs it creates.
"""

from __future__ import annotations

import getpass
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import jwt
from fastapi import HTTPException, Request

from blocks.secret_files import write_secret_file
from gateway.settings import GatewaySettings


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    user: str


def local_token(settings: GatewaySettings) -> str:
    """The embedded default's token for the local user, created (0600) on first use."""
    path = settings.token_file
    if not path.exists() or not path.read_text().strip():
        write_secret_file(path, secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


class Authenticator:
    """Checks `Authorization: Bearer ...` against the token file and, if set, an OIDC issuer."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._token = local_token(settings)
        self._local_user = getpass.getuser()
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience
        jwks = settings.oidc_jwks_url or (_discover_jwks(self._issuer) if self._issuer else None)
        self._keys = jwt.PyJWKClient(jwks, cache_keys=True, lifespan=3600) if jwks else None

    def identify(self, authorization: str | None) -> Identity:
        """The caller behind an Authorization header; HTTP 401 when there is none valid."""
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _unauthorized("a bearer token is required")
        if hmac.compare_digest(credential.encode(), self._token.encode()):
            return Identity(self._local_user)
        if self._keys is not None and credential.count(".") == 2:
            return Identity(self._oidc_subject(credential))
        raise _unauthorized("the bearer token is not valid")

    def _oidc_subject(self, token: str) -> str:
        assert self._keys is not None
        try:
            key = self._keys.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256", "RS384", "RS512", "ES256", "ES384"],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise _unauthorized(f"the bearer token is not valid: {exc}") from None
        return str(claims["sub"])


def _discover_jwks(issuer: str) -> str:
    """The issuer's key set URL from its OpenID configuration."""
    import httpx

    answer = httpx.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration", timeout=10)
    answer.raise_for_status()
    return str(answer.json()["jwks_uri"])


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="esap"'})


def current_user(request: Request) -> Identity:
    """FastAPI dependency: the authenticated caller."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.identify(request.headers.get("authorization"))
