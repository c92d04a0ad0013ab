"""Config of passage fusion and the local encrypted passage store (gates, windows, retention)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from edge.configbase import StrictModel

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
