"""The root gateway configuration: TOML validated by pydantic v2; errors name the file, the line and the key.

Relative paths in the file are resolved against the file's own directory, so a config and its data
can move together. Secrets are never in the config itself: only paths to key files (or systemd
credential names).

This module assembles the sections each wing defines in its own config.py and imports nothing
else of theirs: parsing a config loads no OpenCV, ONNX Runtime or pyserial.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from drivers.camera.config import CameraConfig
from drivers.inputs.config import InputModuleConfig
from drivers.serial.config import SerialSensorConfig
from edge.aim import AimConfig
from edge.app.drawing import Drawing, drawing_path, merge
from edge.audit import AuditConfig
from edge.compat import tomllib
from edge.configbase import StrictModel
from edge.console.config import ConsoleConfig
from edge.errors import ConfigError
from edge.models.config import ModelsConfig
from edge.outbox import OutboxConfig
from edge.passages.config import PassageConfig
from edge.pipeline.config import DeviceConfig, FaceConfig, GateLineConfig, MotionConfig, PlateConfig
from edge.pipeline.maskconfig import MaskConfig
from edge.pipeline.zoneconfig import ZonesConfig
from edge.principals import PrincipalsConfig
from edge.privacy.config import PrivacyConfig
from edge.privacy.pipl import PiplConfig
from edge.query.config import QueryConfig
from edge.telemetry.config import MetricsConfig
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.watchlistconfig import WatchlistConfig

_ID = r"^[A-Za-z0-9_.-]{1,64}$"


class GatewayConfig(StrictModel):
    """Who this gateway is and where it keeps its state."""

    district: str = Field(pattern=_ID)
    community: str = Field(pattern=_ID)
    gateway: str = Field(pattern=_ID)
    data_dir: Path = Path("/var/lib/edgegw")


class StorageConfig(StrictModel):
    """Local encrypted storage (resident gallery, passage records) and its key."""

    data_key_file: str = "data.key"
    """Master key for data at rest; separate from the pseudonym key."""
    residents_db: Path = Path("residents.db")


class CommissionConfig(StrictModel):
    """What `edgegw check` compares against."""

    ntp_servers: tuple[str, ...] = ()
    """host or host:port of the district's NTP servers (empty: ask systemd whether the clock is synced)."""
    units: tuple[str, ...] = ("edgegw-capture.service", "edgegw-uplink.service")


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
    inputs: tuple[InputModuleConfig, ...] = ()
    """Wired-input modules (`[[inputs]]`): alarm columns, door contacts, tamper loops (docs/alarms.md)."""
    zones: ZonesConfig = ZonesConfig()
    """Camera zones (`[[zones.zone]]`): fire-lane obstruction and dwell."""
    masks: tuple[MaskConfig, ...] = ()
    """Detection masks (`[[masks]]`): polygons blacked out of every frame before anything sees it."""
    watchlist: WatchlistConfig = WatchlistConfig()
    """Signed watch-lists from the platform (`[watchlist]`)."""

    @field_validator("inputs")
    @classmethod
    def _unique_inputs(cls, v: tuple[InputModuleConfig, ...]) -> tuple[InputModuleConfig, ...]:
        # A module id is the alarm's `source`: two modules under one id could not be told apart.
        ids = [m.id for m in v]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"input module ids must be unique; repeated: {', '.join(dupes)}")
        return v
    metrics: MetricsConfig = MetricsConfig()
    console: ConsoleConfig = ConsoleConfig()
    aim: AimConfig = AimConfig()
    commission: CommissionConfig = CommissionConfig()
    pipl: PiplConfig = PiplConfig()
    principals: PrincipalsConfig = PrincipalsConfig()
    """The principal registry shared by the console and the query door (edge.principals)."""

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, v: tuple[CameraConfig, ...]) -> tuple[CameraConfig, ...]:
        ids = [c.id for c in v]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(dupes)}")
        return v

    @model_validator(mode="after")
    def _zones_on_known_cameras(self) -> Config:
        known = {c.id for c in self.cameras}
        unknown = sorted({z.camera for z in self.zones.zone} - known)
        if unknown:
            raise ValueError(f"zones are drawn on cameras that are not configured: {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _masks_on_known_cameras(self) -> Config:
        known = {c.id for c in self.cameras}
        unknown = sorted({m.camera for m in self.masks} - known)
        if unknown:
            raise ValueError(f"masks are drawn on cameras that are not configured: {', '.join(unknown)}")
        ids = [m.id for m in self.masks]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"mask ids must be unique; repeated: {', '.join(dupes)}")
        return self

    def masks_for(self, camera: str) -> tuple[MaskConfig, ...]:
        """The masks drawn on `camera`."""
        return tuple(m for m in self.masks if m.camera == camera)

    @model_validator(mode="after")
    def _gate_lines_name_cameras(self) -> Config:
        known = {c.id for c in self.cameras}
        unknown = sorted(set(self.gate_lines) - known)
        if unknown:
            raise ValueError(f"gate_lines name no configured camera: {', '.join(unknown)}")
        return self

    def card_readers_by_gate(self) -> dict[str, list[str]]:
        """Per passage gate, the serial sensors that read cards (the non-biometric alternative)."""
        from drivers.serial.registry import FORMATS
        from edge.types import IdKind

        cards = [s.id for s in self.serial if FORMATS[s.format].id_kind is IdKind.CARD]
        if not self.passages.gates:
            return {self.passages.default_gate: cards}
        return {g.id: [c for c in cards if c in g.sources] for g in self.passages.gates}

    def gate_of(self, source_id: str) -> str:
        """The passage gate a camera or sensor belongs to."""
        for g in self.passages.gates:
            if source_id in g.sources:
                return g.id
        return self.passages.default_gate

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

    def zone_cameras(self) -> list[str]:
        """Ids of the configured cameras that have at least one zone drawn on them."""
        return [c.id for c in self.cameras if self.zones.for_camera(c.id)]

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


def _validated(model: type[StrictModel], raw: dict[str, Any], text: str, source: str) -> Any:
    try:
        return model.model_validate(raw)
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


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None,
                 drawing: tuple[str, str] | None = None) -> Config:
    """Parse and validate config text; ConfigError names the source, line and key on failure.

    `drawing`: the console's drop-in (text, source), see edge.app.drawing: checked on its own first
    (so its errors name its own lines), then its cameras' drawings replace the main file's.
    """
    raw = _toml(text, source)
    if drawing is not None:
        drawn = _toml(drawing[0], drawing[1])
        _validated(Drawing, drawn, drawing[0], drawing[1])
        raw = merge(raw, drawn)
    cfg: Config = _validated(Config, raw, text, source)
    _check_cross_fields(cfg, text, source)
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


def _check_cross_fields(cfg: Config, text: str, source: str) -> None:
    from edge.app.crossfield import cross_field_problems  # beside this module; it imports Config

    problems = cross_field_problems(cfg)
    if problems:
        lines = _key_lines(text)
        out = []
        for loc, message in problems:
            line = _locate(loc, lines)
            out.append(f"{source}:{line}: key '{'.'.join(loc)}': {message}" if line
                       else f"{source}: key '{'.'.join(loc)}': {message}")
        raise ConfigError("\n".join(out))


def read_drawing(path: Path) -> tuple[str, str] | None:
    """The console's drop-in beside config `path` as (text, source), or None when there is none."""
    dropin = drawing_path(path)
    try:
        return dropin.read_text(encoding="utf-8"), str(dropin)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{dropin}: cannot read: {exc.strerror}") from exc


def load_config(path: Path) -> Config:
    """Load a config file and its console drop-in (console.d/drawing.toml beside it, if any); relative
    paths inside it are taken relative to its directory."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_config(text, str(path), path.resolve().parent, drawing=read_drawing(path))
