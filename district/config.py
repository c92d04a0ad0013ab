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
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from edge.compat import tomllib
from edge.configbase import BackoffConfig, StrictModel
from edge.errors import ConfigError
from edge.privacy.config import EpochPolicy


class DatabaseConfig(StrictModel):
    """Where PostgreSQL is; the DSN carries no password (use ~/.pgpass or a systemd credential)."""

    dsn: str = "host=127.0.0.1 port=5432 dbname=edgegw"
    connect_timeout_s: float = Field(default=5.0, gt=0)
    backoff: BackoffConfig = BackoffConfig(initial_s=0.2, max_s=5.0)


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


class DistrictConfig(StrictModel):
    """The whole platform configuration file."""

    database: DatabaseConfig = DatabaseConfig()
    mqtt: MqttConfig = MqttConfig()
    amqp: AmqpConfig = AmqpConfig()
    ingest: IngestConfig = IngestConfig()
    search: SearchConfig = SearchConfig()
    door: DoorConfig = DoorConfig()
    http: HttpConfig = HttpConfig()
    retention: RetentionConfig = RetentionConfig()
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
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
