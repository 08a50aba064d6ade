"""Gateway settings: where it listens, who may call it, how often it follows Prefect.

Read from `ESAP_GATEWAY_*` environment variables; the embedded default needs none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import home


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway needs to know; see the README's Configuration table."""

    host: str = field(default_factory=lambda: os.environ.get("ESAP_GATEWAY_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(os.environ.get("ESAP_GATEWAY_PORT", "8600")))
    public_url: str | None = field(default_factory=lambda: os.environ.get("ESAP_GATEWAY_URL"))
    database: Path = field(default_factory=lambda: home() / "gateway.db")
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
    jwks_cooldown: float = field(
        default_factory=lambda: _env_float("ESAP_GATEWAY_JWKS_COOLDOWN", 30.0)
    )

    @property
    def base_url(self) -> str:
        """The URL clients reach the gateway at."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
