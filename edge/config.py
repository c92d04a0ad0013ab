"""Gateway configuration: TOML validated by pydantic v2; errors name the file, the line and the key.

Relative paths in the file are resolved against the file's own directory, so a config and its data
can move together. Secrets are never in the config itself: only paths to key files (or systemd
credential names).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from drivers.camera.config import CameraConfig
from drivers.serial.config import SerialSensorConfig
from edge.compat import tomllib
from edge.configbase import BackoffConfig, StrictModel
from edge.devices import DeviceConfig
from edge.errors import ConfigError
from edge.motion import MotionConfig
from edge.passages.config import AuditConfig, PassageConfig, QueryConfig
from edge.privacy.pseudonym import EpochPolicy
from edge.tracker import GateLineConfig

_ID = r"^[A-Za-z0-9_.-]{1,64}$"


class GatewayConfig(StrictModel):
    """Who this gateway is and where it keeps its state."""

    district: str = Field(pattern=_ID)
    community: str = Field(pattern=_ID)
    gateway: str = Field(pattern=_ID)
    data_dir: Path = Path("/var/lib/edgegw")


class PrivacyConfig(StrictModel):
    """Pseudonym keys: the district key file (0600) and how long one epoch key lives."""

    district_key_file: str = "district.key"
    """Path to the key file, or a systemd credential name (looked up in $CREDENTIALS_DIRECTORY)."""
    epoch: EpochPolicy = EpochPolicy.MONTH
    local_plate_prefixes: tuple[str, ...] = ()


class StorageConfig(StrictModel):
    """Local encrypted storage (resident gallery, passage records) and its key."""

    data_key_file: str = "data.key"
    """Master key for data at rest; separate from the pseudonym key."""
    residents_db: Path = Path("residents.db")


class ModelsConfig(StrictModel):
    """Where the verified models are, and how ONNX Runtime runs them."""

    dir: Path = Path("models")
    providers: tuple[str, ...] = ("cpu",)
    intra_op_threads: int = Field(default=1, ge=1, le=16)
    sface_int8: bool = False
    """Use the int8 SFace written by `edgegw models quantize` (1.3-1.5x faster embedding on this
    machine; cosine to the float model >= 0.98 on ../shared/data). Re-check accuracy on your site."""


class FaceConfig(StrictModel):
    """Face detection, tracking and matching."""

    enabled: bool = True
    detect_max_side: int = Field(default=640, ge=160, le=4096)
    score_threshold: float = Field(default=0.6, gt=0, lt=1)
    min_face_px: int = Field(default=20, ge=8)
    match_threshold: float = Field(default=0.363, gt=-1, lt=1)
    track_max_age_s: float = Field(default=0.8, gt=0)
    track_min_hits: int = Field(default=2, ge=1)
    embed_best: int = Field(default=3, ge=1, le=16)
    cameras: tuple[str, ...] = ()
    """Camera ids this path runs on; empty: every camera not given to the plate path."""


class PlateConfig(StrictModel):
    """Plate detection, reading and the per-track vote."""

    enabled: bool = True
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    track_max_age_s: float = Field(default=1.0, gt=0)
    track_min_hits: int = Field(default=1, ge=1)
    cameras: tuple[str, ...] = ()
    """Camera ids this path runs on (plate cameras usually differ from face cameras)."""


class OutboxConfig(StrictModel):
    """The durable outbox file and its quota."""

    path: Path = Path("outbox.db")
    max_events: int = Field(default=1_000_000, ge=100)
    max_mb: float = Field(default=512.0, gt=0)
    retention_days: float = Field(default=7.0, gt=0)


class TlsConfig(StrictModel):
    """TLS and mutual TLS for the broker connection."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class MqttConfig(StrictModel):
    """The district broker."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None
    username: str | None = None
    password_file: str | None = None
    keepalive_s: int = Field(default=30, ge=5)
    topic_prefix: str = Field(default="edgegw", pattern=r"^[A-Za-z0-9_/-]{1,64}$")
    tls: TlsConfig | None = None
    will_delay_s: int = Field(default=30, ge=0)


class UplinkConfig(StrictModel):
    """How the uplink drains the outbox."""

    window: int = Field(default=64, ge=1, le=65535)
    backoff: BackoffConfig = BackoffConfig(initial_s=1.0, max_s=60.0)
    status_interval_s: float = Field(default=30.0, gt=0)
    backlog_rate: float | None = Field(default=None, gt=0)
    """Events/s for the backlog after an outage (live events go first); None = no limit, strict order."""
    ack_mode: Literal["puback", "end_to_end"] = "puback"
    ack_timeout_s: float = Field(default=120.0, gt=0)


class Config(StrictModel):
    """The whole gateway configuration."""

    gateway: GatewayConfig
    privacy: PrivacyConfig = PrivacyConfig()
    storage: StorageConfig = StorageConfig()
    models: ModelsConfig = ModelsConfig()
    face: FaceConfig = FaceConfig()
    plates: PlateConfig = PlateConfig()
    motion: MotionConfig = MotionConfig()
    cameras: tuple[CameraConfig, ...] = ()
    serial: tuple[SerialSensorConfig, ...] = ()
    devices: DeviceConfig = DeviceConfig()
    """Dedupe windows for phones seen by sniffers, card debounce, bounds."""
    gate_lines: dict[str, GateLineConfig] = Field(default_factory=dict)
    """Per camera id: a line on the image; crossing it gives a track its in/out direction."""
    outbox: OutboxConfig = OutboxConfig()
    mqtt: MqttConfig = MqttConfig()
    uplink: UplinkConfig = UplinkConfig()
    passages: PassageConfig = PassageConfig()
    query: QueryConfig = QueryConfig()
    audit: AuditConfig = AuditConfig()

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, v: tuple[CameraConfig, ...]) -> tuple[CameraConfig, ...]:
        ids = [c.id for c in v]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(dupes)}")
        return v

    def face_cameras(self) -> list[str]:
        """Ids of the cameras the face path runs on."""
        if not self.face.enabled:
            return []
        ids = [c.id for c in self.cameras]
        return [i for i in ids if i in self.face.cameras] if self.face.cameras else [
            i for i in ids if i not in self.plates.cameras]

    def plate_cameras(self) -> list[str]:
        """Ids of the cameras the plate path runs on."""
        if not self.plates.enabled:
            return []
        return [c.id for c in self.cameras if c.id in self.plates.cameras]

    def path(self, p: Path) -> Path:
        """Resolve a state path against gateway.data_dir."""
        return p if p.is_absolute() else self.gateway.data_dir / p


def _key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Map each key path in a TOML text to its 1-based line (tables, arrays of tables, dotted keys)."""
    lines: dict[tuple[str | int, ...], int] = {}
    counts: dict[tuple[str | int, ...], int] = {}
    table: tuple[str | int, ...] = ()
    header = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    keyval = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")
    for no, line in enumerate(text.splitlines(), start=1):
        m = header.match(line)
        if m:
            parts: tuple[str | int, ...] = tuple(p.strip().strip("\"'") for p in m.group(2).split("."))
            if m.group(1) == "[[":
                idx = counts.get(parts, 0)
                counts[parts] = idx + 1
                table = (*parts, idx)
            else:
                table = parts
            lines.setdefault(table, no)
            continue
        m = keyval.match(line)
        if m:
            key = tuple(p.strip().strip("\"'") for p in m.group(1).split("."))
            lines.setdefault((*table, *key), no)
    return lines


def _locate(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    # Pydantic adds the union tag (e.g. 'file') into the location of discriminated unions; drop
    # non-matching parts from the end until a key path with a known line remains.
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        filtered = tuple(p for p in path if p in {q for k in lines for q in k} or isinstance(p, int))
        if filtered in lines:
            return lines[filtered]
        path = path[:-1]
    return None


def _without_union_tags(loc: tuple[str | int, ...], raw: object) -> tuple[str | int, ...]:
    # Pydantic puts the discriminator value (e.g. 'file') into error locations of tagged unions;
    # users never wrote that key, so leave it out.
    out: list[str | int] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node and node.get("kind") == part:
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Parse and validate config text; ConfigError names the source, line and key on failure."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        lines = _key_lines(text)
        problems = []
        for err in exc.errors():
            loc = _without_union_tags(tuple(err["loc"]), raw)
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _locate(loc, lines)
            where = f"{source}:{line}" if line else source
            problems.append(f"{where}: key '{key}': {err['msg']}")
        raise ConfigError("\n".join(problems)) from exc
    if base_dir is not None and not cfg.gateway.data_dir.is_absolute():
        gw = cfg.gateway.model_copy(update={"data_dir": (base_dir / cfg.gateway.data_dir).resolve()})
        models = cfg.models
        if not models.dir.is_absolute():
            models = models.model_copy(update={"dir": (base_dir / models.dir).resolve()})
        cfg = cfg.model_copy(update={"gateway": gw, "models": models})
    elif base_dir is not None and not cfg.models.dir.is_absolute():
        models = cfg.models.model_copy(update={"dir": (base_dir / cfg.models.dir).resolve()})
        cfg = cfg.model_copy(update={"models": models})
    return cfg


def load_config(path: Path) -> Config:
    """Load a config file; relative paths inside it are taken relative to its directory."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_config(text, str(path), path.resolve().parent)
