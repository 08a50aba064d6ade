"""Gateway settings: where it listens, who may call it, how often it follows Prefect.

Read from `ESAP_GATEWAY_*` environment variables; the embedded default needs none.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import database_url, env_number, home


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)*")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def _prefix() -> str:
    """ESAP's mount point: `/esap-api` unless ESAP_GATEWAY_ESAP_PREFIX says (empty: none)."""
    value = os.environ.get("ESAP_GATEWAY_ESAP_PREFIX", "/esap-api").strip().rstrip("/")
    if value and not value.startswith("/"):
        value = f"/{value}"
    dots = any(part in (".", "..") for part in value.split("/"))
    if not _PREFIX.fullmatch(value) or dots or value in ("/uws", "/planner", "/broker", "/docs"):
        raise ValueError(
            f"ESAP_GATEWAY_ESAP_PREFIX {value!r} must be a path such as /esap-api "
            "(letters, digits, . _ ~ -), not one of the gateway's own trees; empty for none"
        )
    return value


def _origins() -> tuple[str, ...]:
    """Browser origins allowed to call the gateway (ESAP_GATEWAY_CORS_ORIGINS, comma-separated)."""
    text = os.environ.get("ESAP_GATEWAY_CORS_ORIGINS", "")
    origins = tuple(o.strip().rstrip("/") for o in text.replace(" ", ",").split(",") if o.strip())
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"ESAP_GATEWAY_CORS_ORIGINS: {origin!r} is not an origin such as "
                "https://esap.example.org (scheme, host and port only; no '*')"
            )
    return origins


def _database() -> str | Path:
    """$ESAP_GATEWAY_DATABASE_URL, else $ESAP_PREFECT_DATABASE_URL, else gateway.db in the home."""
    return os.environ.get("ESAP_GATEWAY_DATABASE_URL") or database_url() or home() / "gateway.db"


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway needs to know; see the README's Configuration table."""

    host: str = field(default_factory=lambda: os.environ.get("ESAP_GATEWAY_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(os.environ.get("ESAP_GATEWAY_PORT", "8600")))
    public_url: str | None = field(default_factory=lambda: os.environ.get("ESAP_GATEWAY_URL"))
    database: str | Path = field(default_factory=_database)
    token_file: Path = field(default_factory=lambda: home() / "token")
    oidc_issuer: str | None = field(
        default_factory=lambda: os.environ.get("ESAP_GATEWAY_OIDC_ISSUER")
    )
    oidc_jwks_url: str | None = field(
        default_factory=lambda: os.environ.get("ESAP_GATEWAY_OIDC_JWKS_URL")
    )
    oidc_audience: str | None = field(
        default_factory=lambda: os.environ.get("ESAP_GATEWAY_OIDC_AUDIENCE")
    )
    sync_interval: float = field(
        default_factory=lambda: _env_float("ESAP_GATEWAY_SYNC_SECONDS", 0.5)
    )
    max_wait: float = field(default_factory=lambda: _env_float("ESAP_GATEWAY_MAX_WAIT", 60.0))
    offer_seconds: float = field(
        default_factory=lambda: _env_float("ESAP_GATEWAY_OFFER_SECONDS", 600.0)
    )
    destruction_days: float = field(
        default_factory=lambda: _env_float("ESAP_GATEWAY_DESTRUCTION_DAYS", 30.0)
    )
    max_body: int = field(default_factory=lambda: _env_int("ESAP_GATEWAY_MAX_BODY", 1 << 20))
    header_seconds: float = field(
        default_factory=lambda: env_number("ESAP_GATEWAY_HEADER_SECONDS", "10", 1, 600)
    )
    body_seconds: float = field(
        default_factory=lambda: env_number("ESAP_GATEWAY_BODY_SECONDS", "60", 1, 3600)
    )
    jwks_cooldown: float = field(
        default_factory=lambda: _env_float("ESAP_GATEWAY_JWKS_COOLDOWN", 30.0)
    )
    esap_prefix: str = field(default_factory=_prefix)
    cors_origins: tuple[str, ...] = field(default_factory=_origins)
    callback_url: str | None = field(
        default_factory=lambda: os.environ.get("ESAP_GATEWAY_CALLBACK_URL")
    )

    @property
    def base_url(self) -> str:
        """The URL clients reach the gateway at."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def uws_app_url(self) -> str:
        """Where jobs call back: django-uws's app root (it holds `jobs/`), as its client takes.

        ESAP's mount when there is one, else the UWS tree; ESAP_GATEWAY_CALLBACK_URL for
        jobs that reach the gateway at another address (grid sites).
        """
        if self.callback_url:
            return self.callback_url.rstrip("/")
        return f"{self.base_url}{self.esap_prefix}/uws"
