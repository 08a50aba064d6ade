"""Who is calling: bearer tokens from the local token file, or OIDC JWTs (ESCAPE IAM).

Every request needs one; the identity's name owns the jobs it creates. OIDC owners are
`<sub>@<issuer>`, so no token can stand for the local user or another issuer's subject.
"""

from __future__ import annotations

import asyncio
import getpass
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from fastapi import Request

from core.files import write_secret_file
from core.params import ParameterError, check_text
from gateway.errors import Unauthenticated
from gateway.settings import GatewaySettings

log = logging.getLogger("esap.gateway")

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384"]
MAX_KEY_SET = 1 << 20
MAX_TOKEN = 16_384


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


class KeySet:
    """The issuer's signing keys, fetched in a worker thread, never on the event loop.

    An unknown key id triggers one fetch; after any fetch (failed or not) the next waits
    `cooldown` seconds, so forged key ids cannot make the gateway hammer the issuer.
    """

    def __init__(
        self, issuer: str | None, jwks_url: str | None, cooldown: float, lifetime: float = 3600
    ) -> None:
        self._issuer, self._url = issuer, jwks_url
        self._cooldown, self._lifetime = cooldown, lifetime
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = -float("inf")
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key with this id, or None when the issuer does not (or cannot now) say."""
        stale = time.monotonic() - self._fetched > self._lifetime
        if kid in self._keys and not stale:
            return self._keys[kid]
        async with self._lock:
            if kid in self._keys and time.monotonic() - self._fetched <= self._lifetime:
                return self._keys[kid]
            if time.monotonic() < self._next:
                return self._keys.get(kid)
            self._next = time.monotonic() + self._cooldown
            try:
                self._keys = await asyncio.to_thread(self._fetch)
                self._fetched = time.monotonic()
            except Exception as exc:  # an issuer away must not take the gateway down
                log.warning("could not fetch the OIDC key set: %s", exc)
        return self._keys.get(kid)

    def _get(self, client: httpx.Client, url: str) -> Any:
        with client.stream("GET", url) as answer:
            answer.raise_for_status()
            body = b""
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > MAX_KEY_SET:
                    raise ValueError(f"{url} answered more than {MAX_KEY_SET} bytes")
        return json.loads(body)

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        with httpx.Client(timeout=10, follow_redirects=True) as client:
            url = self._url
            if url is None:
                assert self._issuer is not None
                config = self._get(
                    client, f"{self._issuer.rstrip('/')}/.well-known/openid-configuration"
                )
                url = self._url = str(config["jwks_uri"])
            keys = jwt.PyJWKSet.from_dict(self._get(client, url))
        return {key.key_id: key for key in keys.keys if key.key_id}


class Authenticator:
    """Checks `Authorization: Bearer ...` against the token file and, if set, an OIDC issuer."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._token = local_token(settings)
        self._local_user = getpass.getuser()
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience
        self._keys = (
            KeySet(self._issuer, settings.oidc_jwks_url, settings.jwks_cooldown)
            if self._issuer or settings.oidc_jwks_url
            else None
        )

    async def identify(self, authorization: str | None) -> Identity:
        """The caller behind an Authorization header; HTTP 401 when there is none valid."""
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("a bearer token is required")
        if hmac.compare_digest(credential.encode(), self._token.encode()):
            return Identity(self._local_user)
        if self._keys is not None and credential.count(".") == 2 and len(credential) < MAX_TOKEN:
            return Identity(await self._oidc_owner(credential))
        raise Unauthenticated("the bearer token is not valid")

    async def _oidc_owner(self, token: str) -> str:
        assert self._keys is not None
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = await self._keys.key(str(kid)) if kid else None
            if key is None:
                raise jwt.InvalidTokenError("no key of the issuer has this key id")
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
            subject = check_text(str(claims["sub"]), "sub", 255)
        except (jwt.PyJWTError, ParameterError) as exc:
            log.info("refused a bearer token: %s", exc)
            raise Unauthenticated("the bearer token is not valid") from None
        return f"{subject}@{(self._issuer or 'oidc').rstrip('/')}"


def job_token(request: Request) -> str | None:
    """The job token of a call-back (`Authorization: Token ...`, django-uws's scheme), if sent."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    return credential.strip() if scheme == "Token" else None


async def current_user(request: Request) -> Identity:
    """FastAPI dependency: the authenticated caller (before any body is read)."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.identify(request.headers.get("authorization"))
