"""Config models for passage fusion, the passage store, the query service and the audit log.

`Config` gets three sections from here: `passages`, `query` and `audit`. Until it has them, the
accessors at the bottom return the defaults, so code and tests work either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from edge.configbase import StrictModel

if TYPE_CHECKING:
    from edge.config import Config

_ID = r"^[A-Za-z0-9_.-]{1,64}$"


class GateConfig(StrictModel):
    """One physical gate: the cameras and sensors whose observations fuse into its passages."""

    id: str = Field(pattern=_ID)
    sources: tuple[str, ...] = Field(min_length=1)
    """Camera and serial sensor ids at this gate."""


class RetentionConfig(StrictModel):
    """How long each class of stored data lives, in days (its epoch keys are destroyed after that)."""

    records_days: float = Field(default=30.0, gt=0)
    """Passage records (pseudonyms, times, links) and sealed resident ids."""
    plates_days: float = Field(default=30.0, gt=0)
    cards_days: float = Field(default=30.0, gt=0)
    devices_days: float = Field(default=14.0, gt=0)
    faces_days: float = Field(default=7.0, gt=0)
    """Face embeddings of unknown persons (biometric data: the shortest by default)."""

    @model_validator(mode="after")
    def _within_records(self) -> RetentionConfig:
        # A sealed value dies with its record; a longer class retention would be a silent lie.
        for name in ("plates_days", "cards_days", "devices_days", "faces_days"):
            if getattr(self, name) > self.records_days:
                raise ValueError(f"{name} ({getattr(self, name)}) cannot exceed records_days ({self.records_days}): "
                                 "raw values are deleted with their record")
        return self


class PassageConfig(StrictModel):
    """Passage fusion and the local encrypted passage store."""

    enabled: bool = True
    path: Path = Path("passages.db")
    keys_path: Path = Path("passage-keys.db")
    """Per-epoch data keys of the store (wrapped under a key derived from storage.data_key_file)."""
    gates: tuple[GateConfig, ...] = ()
    """Empty: one gate, `default_gate`, takes every source."""
    default_gate: str = Field(default="gate", pattern=_ID)
    window_s: float = Field(default=5.0, gt=0, le=600)
    """Observations at one gate whose times span at most this long fuse into one passage."""
    late_s: float = Field(default=0.0, ge=0, le=3600)
    """Extra wait for late members (device_seen arrives when its dedupe window closes)."""
    latency_s: float = Field(default=0.0, ge=0, le=3600)
    """How long a camera observation may take to reach fusion after it happened (the pipeline's
    latency: track end, inference, backlog). A passage waits this much longer for late members;
    fusion measures the latency of its gate's cameras and waits that long when it is longer."""
    max_latency_s: float = Field(default=30.0, ge=0, le=3600)
    """The most pipeline latency fusion tolerates, measured or configured (see docs/platforms.md)."""
    min_members: int = Field(default=2, ge=1)
    """Members a passage needs to be published; a lone face track is already its own event."""
    retention: RetentionConfig = RetentionConfig()
    purge_interval_s: float = Field(default=3600.0, ge=0)
    """How often the capture daemon purges expired data; 0: only `edgegw passages purge`."""

    @field_validator("gates")
    @classmethod
    def _unique_sources(cls, v: tuple[GateConfig, ...]) -> tuple[GateConfig, ...]:
        ids = [g.id for g in v]
        if len(set(ids)) != len(ids):
            raise ValueError("gate ids must be unique")
        sources = [s for g in v for s in g.sources]
        dupes = sorted({s for s in sources if sources.count(s) > 1})
        if dupes:
            raise ValueError(f"a source belongs to one gate only; repeated: {', '.join(dupes)}")
        return v

    def gate_of(self, source_id: str) -> str | None:
        """The gate a source belongs to; None for a source at no configured gate."""
        if not self.gates:
            return self.default_gate
        for gate in self.gates:
            if source_id in gate.sources:
                return gate.id
        return None


class HttpConfig(StrictModel):
    """The local HTTP query API."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = Field(default=8087, ge=0, le=65535)
    """0 picks a free port (tests)."""
    max_body_mb: float = Field(default=8.0, gt=0, le=64)


class MqttQueryConfig(StrictModel):
    """MQTT 5 request/response for the district platform (uses the [mqtt] broker settings)."""

    enabled: bool = False
    topics: tuple[str, ...] = ()
    """Request topics; empty: `{prefix}/{district}/{community}/{gateway}/query/request` and the
    district-wide fan-out topic `{prefix}/{district}/query/request`."""
    max_skew_s: float = Field(default=300.0, gt=0)
    """Requests older or newer than this (by their timestamp) are refused; nonces are remembered as long."""
    reply_expiry_s: int = Field(default=300, ge=1)


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
    http: HttpConfig = HttpConfig()
    mqtt: MqttQueryConfig = MqttQueryConfig()


class AuditConfig(StrictModel):
    """The hash-chained audit log (queries, purges, enrolments, key rotations, config changes)."""

    path: Path = Path("audit.db")
    anchor_path: Path | None = None
    """Default: `<path>.anchor`; put it on another file system or owner to make it worth more."""


def passage_config(cfg: Config) -> PassageConfig:
    """`cfg.passages`, or the defaults while Config has no such section."""
    value = getattr(cfg, "passages", None)
    return value if isinstance(value, PassageConfig) else PassageConfig()


def query_config(cfg: Config) -> QueryConfig:
    """`cfg.query`, or the defaults while Config has no such section."""
    value = getattr(cfg, "query", None)
    return value if isinstance(value, QueryConfig) else QueryConfig()


def audit_config(cfg: Config) -> AuditConfig:
    """`cfg.audit`, or the defaults while Config has no such section."""
    value = getattr(cfg, "audit", None)
    return value if isinstance(value, AuditConfig) else AuditConfig()
