"""Config of the police query service and its front doors (local HTTP, MQTT 5 request/response)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge.configbase import StrictModel


class HttpConfig(StrictModel):
    """The local HTTP query API."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = Field(default=8087, ge=0, le=65535)
    """0 picks a free port (tests)."""
    max_body_mb: float = Field(default=8.0, gt=0, le=64)
    max_clients: int = Field(default=8, ge=1, le=256)
    """Connections served at once; more are answered 503 (slow clients cannot pile up)."""
    request_timeout_s: float = Field(default=30.0, gt=0, le=600)
    """A connection must deliver its request (line, headers, body) within this; then it is closed."""
    tls_cert_file: Path | None = None
    """TLS certificate chain (PEM); required with tls_key_file when `bind` is not loopback."""
    tls_key_file: Path | None = None
    """TLS private key (PEM), mode 0600 (the key-file permission check applies)."""


class MqttQueryConfig(StrictModel):
    """MQTT 5 request/response for the district platform (uses the [mqtt] broker settings)."""

    enabled: bool = False
    topics: tuple[str, ...] = ()
    """Request topics; empty: `{prefix}/{district}/{community}/{gateway}/query/request` and the
    district-wide fan-out topic `{prefix}/{district}/query/request`."""
    max_skew_s: float = Field(default=300.0, gt=0)
    """Requests older or newer than this (by their timestamp) are refused; nonces are remembered as long."""
    reply_expiry_s: int = Field(default=300, ge=1)
    door_key_file: str = "query-door.key"
    """This gateway's X25519 door key (32 bytes, mode 0600; a path or a systemd credential name):
    requests are encrypted to its public half, replies derive their key from it."""
    nonce_db: Path = Path("query-nonces.db")
    """The replay window (nonces seen in the last 2 x max_skew_s), kept across restarts."""


class RateLimitConfig(StrictModel):
    """Per-officer query budget: at most `max_queries` in any `per_s` seconds."""

    max_queries: int = Field(default=30, ge=1)
    per_s: float = Field(default=3600.0, gt=0)


class QueryConfig(StrictModel):
    """The police query service and its front doors."""

    tokens_file: str = "query-tokens.toml"
    """Principals (token → name, role, officer); mode 0600. A path or a systemd credential name."""
    rate_db: Path = Path("query-rate.db")
    rate_limit: RateLimitConfig = RateLimitConfig()
    photo_threshold: float = Field(default=0.363, gt=-1, lt=1)
    """Cosine similarity a stored face must reach to match a query photo (SFace)."""
    max_results: int = Field(default=500, ge=1, le=100_000)
    max_range_days: float = Field(default=93.0, gt=0)
    max_photo_mb: float = Field(default=8.0, gt=0, le=64)
    max_photo_megapixels: float = Field(default=40.0, gt=0, le=400)
    """Checked from the image header before decoding: a decompression bomb is refused, never allocated."""
    http: HttpConfig = HttpConfig()
    mqtt: MqttQueryConfig = MqttQueryConfig()


