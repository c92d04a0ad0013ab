"""The platform's configuration (TOML, validated like the gateway's: unknown keys are errors).

    [database]
    dsn = "host=127.0.0.1 port=5432 dbname=edgegw user=edgegw"

    [mqtt]                       # one district: mosquitto with MQTT 5 shared subscriptions
    host = "127.0.0.1"
    port = 1883
    group = "ingest"             # the shared-subscription group every worker joins

    [amqp]                       # a city: RabbitMQ cluster, quorum queue
    url = "amqp://guest:guest@127.0.0.1:5672/%2F"

    [ingest]
    batch_max = 1000
    batch_ms = 50

    [search]
    key_file = "/etc/edgegw-district/keys/district.key"
    tokens_file = "/etc/edgegw-district/tokens.toml"

    [door]                       # search details over the gateways' MQTT query door (v2)
    principal = "district-police"
    signing_key_file = "/etc/edgegw-district/keys/door-signing.key"

    [watchlist]                  # watch-lists (布控) built, signed and pushed to the gateways
    district = "dl-gjz"
    signing_key = "/etc/edgegw-district/keys/watchlist-signing.key"
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from edge.compat import tomllib
from edge.configbase import BackoffConfig, StrictModel
from edge.errors import ConfigError
from edge.privacy.config import EpochPolicy


class DatabaseConfig(StrictModel):
    """Where PostgreSQL is; the DSN carries no password (use ~/.pgpass or a systemd credential)."""

    dsn: str = "host=127.0.0.1 port=5432 dbname=edgegw"
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # While PostgreSQL is away a worker retries its batch: a refused connect costs next to nothing,
    # but every second of backoff left when it returns is a second of backlog not drained (with 5 s,
    # the first commit came 2.5-5 s after the server was back).
    backoff: BackoffConfig = BackoffConfig(initial_s=0.2, max_s=1.0)


class MqttConfig(StrictModel):
    """The district broker the workers subscribe to (MQTT 5 shared subscriptions)."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: str = Field(default="edgegw", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    group: str = Field(default="ingest", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: int = Field(default=15, ge=5)
    # Receive Maximum: the broker sends at most this many unacknowledged QoS 1 messages to one
    # worker, which is what keeps a worker's memory bounded while PostgreSQL is away.
    receive_max: int = Field(default=4000, ge=1, le=65535)
    session_expiry_s: int = Field(default=300, ge=0)


class AmqpConfig(StrictModel):
    """The RabbitMQ cluster gateways publish to (MQTT plugin) and workers consume from (AMQP)."""

    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    queue: str = "edgegw.events"
    status_queue: str = "edgegw.status"
    prefetch: int = Field(default=4000, ge=1, le=65535)


class IngestConfig(StrictModel):
    """Batching, validation limits and the watermark/gap timings."""

    batch_max: int = Field(default=1000, ge=1, le=100_000)
    batch_ms: float = Field(default=50.0, gt=0)
    max_payload_bytes: int = Field(default=65536, ge=1024)
    accept_past_days: int = Field(default=60, ge=1)
    accept_future_days: int = Field(default=1, ge=0)
    sweep_s: float = Field(default=1.0, gt=0)
    # Watermarks are advanced (and published) at most this often, over every source touched since:
    # the protocol allows 50-200 ms, and one advance over many batches costs about what one costs.
    mark_interval_ms: float = Field(default=100.0, ge=0)
    gap_grace_s: float = Field(default=10.0, gt=0)
    replay_interval_s: float = Field(default=30.0, gt=0)


class SearchConfig(StrictModel):
    """The key service and the police search's limits."""

    key_file: str | None = None
    epoch: EpochPolicy = EpochPolicy.MONTH
    tokens_file: Path | None = None
    max_per_window: int = Field(default=20, ge=1)
    window_s: float = Field(default=3600.0, gt=0)
    max_period_days: int = Field(default=366, ge=1)
    max_results: int = Field(default=10_000, ge=1)


class WatchlistConfig(StrictModel):
    """Watch-lists (布控) the platform builds, signs and pushes to the gateways (`edgegw district watchlist`)."""

    district: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # The seed the Ed25519 signing key is derived from (a 0600 file or a systemd credential); the
    # gateways pin its public key (`edgegw district watchlist public-key`).
    signing_key: str | None = None
    epochs_ahead: int = Field(default=1, ge=0, le=3)
    max_days: int = Field(default=90, ge=1, le=366)


class DoorConfig(StrictModel):
    """The gateways' MQTT query door as the platform calls it (`search details`), over `[mqtt]`'s broker.

    Requests for officer O are signed as principal `{principal}:O` with a key derived from
    `signing_key_file` for O (a gateway binds each police principal to one officer); the gateways
    list it in their tokens file (`edgegw district gateway door-principal --officer O` prints it).
    """

    principal: str = Field(default="district-police", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    signing_key_file: str | None = None
    client_id: str | None = None
    # The door client's own broker login (the ACL's `district-door` user); `[mqtt]`'s when unset.
    username: str | None = None
    password_file: Path | None = None
    timeout_s: float = Field(default=15.0, gt=0, le=600)
    max_events: int = Field(default=100, ge=1, le=1000)


class HttpConfig(StrictModel):
    """The platform's HTTP API."""

    bind: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)


class RetentionConfig(StrictModel):
    """How long events and status history are kept (whole day partitions are dropped)."""

    events_days: int = Field(default=180, ge=1)
    status_days: int = Field(default=400, ge=1)


class ViidDevice(StrictModel):
    """One gateway as the upper platform sees it: an APE (采集设备) and, optionally, a tollgate (卡口)."""

    ape_id: str = Field(description="20-digit GB/T 28181 code of the gateway as a capture device")
    name: str = Field(default="", max_length=100)
    tollgate_id: str | None = Field(default=None, description="20-digit code of its gate as a tollgate")
    place_code: str = Field(default="", pattern=r"^(\d{6})?$", description="administrative division (6 digits)")
    place: str = Field(default="", max_length=100)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    lanes: int = Field(default=1, ge=1, le=99)

    @model_validator(mode="after")
    def _codes(self) -> ViidDevice:
        from district.viid.ids import DeviceRole, validate_device_code

        validate_device_code(self.ape_id, DeviceRole.APE)
        if self.tollgate_id is not None:
            validate_device_code(self.tollgate_id, DeviceRole.TOLLGATE)
        return self


class ViidConfig(StrictModel):
    """The GA/T 1400 (视图库, /VIID) bridge to an upper platform (docs/district.md, "GA/T 1400 bridge")."""

    server_url: str = Field(default="http://127.0.0.1:8120", pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
                            description="the upper platform's base URL (without /VIID)")
    device_id: str = Field(default="31000000002000000001",
                           description="our 20-digit code as registered with the upper platform")
    server_id: str | None = Field(default=None, description="the upper platform's 20-digit VIID server ID")
    username: str | None = Field(default=None, description="digest user (default: device_id)")
    password_file: Path | None = None
    org_code: str = Field(default="310000000000", pattern=r"^\d{12}$", description="12-digit 机构代码")
    timezone: str = "Asia/Shanghai"
    request_timeout_s: float = Field(default=5.0, gt=0, le=120)
    keepalive_s: float = Field(default=30.0, gt=0)
    # Consecutive keepalive failures before the registration is taken as lost and redone.
    keepalive_misses: int = Field(default=3, ge=1, le=100)
    time_sync_s: float = Field(default=3600.0, gt=0)
    backoff: BackoffConfig = BackoffConfig(initial_s=1.0, max_s=60.0)
    # A refused register (wrong password) is retried this many times, then the bridge stops (exit 1).
    register_refusals: int = Field(default=5, ge=1, le=1000)
    # A notification the server keeps refusing is retried this many times, then parked as dead.
    max_attempts: int = Field(default=50, ge=1, le=100_000)
    batch: int = Field(default=50, ge=1, le=1000)
    tick_s: float = Field(default=0.5, gt=0, le=60)
    # Ingest commits are not in received_at order across workers: each scan looks back this far
    # (the outbox is unique by event id, so a row seen twice is enqueued once).
    lookback_s: float = Field(default=300.0, ge=0)
    max_outbox: int = Field(default=100_000, ge=100)
    # Delivered and dead notifications are kept this long (for `viid status` and audits), then deleted.
    keep_days: int = Field(default=30, ge=1)
    bind: str = "127.0.0.1"
    port: int = Field(default=8121, ge=0, le=65535)
    report_interval_s: float = Field(default=60.0, gt=0)
    # Hosts a subscription's ReceiveAddr may name (default: server_url's host only), so a subscriber
    # cannot make the platform post to an arbitrary address.
    receive_hosts: list[str] = Field(default_factory=list)
    offline_after_s: float = Field(default=180.0, gt=0)
    devices: dict[str, ViidDevice] = Field(default_factory=dict,
                                           description="DISTRICT/COMMUNITY/GATEWAY → its codes")
    dispositions: dict[str, str] = Field(default_factory=dict,
                                         description="watch-list id → the upper platform's 33-digit DispositionID")

    @model_validator(mode="after")
    def _check(self) -> ViidConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from district.viid.ids import DeviceRole, validate_device_code

        validate_device_code(self.device_id, DeviceRole.PLATFORM)
        if self.server_id is not None:
            validate_device_code(self.server_id, DeviceRole.PLATFORM)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        for gw in self.devices:
            if len(gw.split("/")) != 3:
                raise ValueError(f"device key {gw!r} is not DISTRICT/COMMUNITY/GATEWAY")
        for lid, did in self.dispositions.items():
            if len(did) != 33 or not did.isdigit():
                raise ValueError(f"dispositions.{lid}: a DispositionID is 33 digits")
        return self


class DistrictConfig(StrictModel):
    """The whole platform configuration file."""

    database: DatabaseConfig = DatabaseConfig()
    mqtt: MqttConfig = MqttConfig()
    amqp: AmqpConfig = AmqpConfig()
    ingest: IngestConfig = IngestConfig()
    search: SearchConfig = SearchConfig()
    door: DoorConfig = DoorConfig()
    http: HttpConfig = HttpConfig()
    watchlist: WatchlistConfig = WatchlistConfig()
    retention: RetentionConfig = RetentionConfig()
    viid: ViidConfig = ViidConfig()
    transport: Literal["mqtt", "amqp"] = "mqtt"


def load_config(path: Path | None) -> DistrictConfig:
    """Read and validate a TOML file (None: every default); errors name the file and the key."""
    if path is None:
        return DistrictConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return DistrictConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        line = _line_of(path.read_text(encoding="utf-8"), [str(p) for p in first["loc"]])
        at = f" (line {line})" if line else ""
        raise ConfigError(f"{path}: {where}: {first['msg']}{at}") from None


def _line_of(text: str, loc: list[str]) -> int | None:
    """The line where the key at `loc` is written (its table header for a table-level error), if found.

    Why not a TOML parser with positions: tomllib gives none, and this only has to point an operator
    at the right line; an error it cannot place still names the file and the key.
    """
    table: list[str] = []
    best: int | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            table = [p.strip().strip('"') for p in line.strip("[]").split(".")]
            if table == loc:
                best = best or n
            continue
        key = line.split("=", 1)[0].strip().strip('"') if "=" in line else None
        if key is not None and [*table, key] == loc[: len(table) + 1] and len(loc) >= len(table) + 1:
            if [*table, key] == loc:
                return n
            best = best or n
    if best is None and len(loc) > 1:
        return _line_of(text, loc[:-1])
    return best
