"""`edgegw check`: commissioning checks an installer runs at the gate before leaving.

Each check touches the real thing the daemons will use — key files, verified models, each camera
(one frame), each serial port (opened), the broker (a real CONNACK with the configured TLS and
credentials), the outbox file and the free disk — and says what is wrong in words an installer can
act on. Nothing here prints a key, a credential or an identifier.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import serial

from drivers.camera.config import FileCameraConfig
from drivers.camera.registry import create_driver
from edge.app.config import Config
from edge.app.uplink import probe_broker
from edge.app.wiring import data_key, make_outbox, pseudonymiser
from edge.diskbudget import describe_outage
from edge.errors import EdgeError
from edge.models.fetch import verify
from edge.models.manifest import load_manifest
from edge.privacy.pseudonym import epoch_label
from edge.types import IdKind


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the checklist."""

    name: str
    ok: bool
    detail: str


def _run(name: str, check: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, True, check())
    except (EdgeError, OSError, ValueError, serial.SerialException) as exc:
        return CheckResult(name, False, str(exc))


def _keys(cfg: Config) -> str:

    if cfg.privacy.district_key_file is not None:
        raise EdgeError("privacy.district_key_file is set: a gateway must not hold the district root key (a stolen "
                        "gateway would expose the whole district); import epoch keys instead (docs/keys.md)")
    data_key(cfg)
    # The pseudonym key of the current epoch must be here, or every identifier is refused at the boundary.
    now = time.time()
    pseudonymiser(cfg).pseudonym_at(IdKind.PLATE, "京A12345", now)
    label = epoch_label(cfg.privacy.epoch, now)
    return (f"gateway identity, data key and this epoch's ({label}) pseudonym keys load (mode 0600 or "
            f"systemd credentials)")


def _models(cfg: Config) -> str:

    statuses = verify(load_manifest(), cfg.models.dir)
    bad = [s.name for s in statuses if not s.ok]
    if bad:
        raise EdgeError(f"not present or not verified: {', '.join(bad)} (run `edgegw models fetch`)")
    return f"{len(statuses)} models present, sha256 verified, in {cfg.models.dir}"


def _camera(cfg: Config, config_dir: Path, index: int, timeout_s: float) -> str:
    cam = cfg.cameras[index]
    if isinstance(cam, FileCameraConfig) and not Path(cam.path).is_absolute():
        cam = cam.model_copy(update={"path": str(config_dir / cam.path)})
    driver = create_driver(cam)
    driver.open()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            frame = driver.read()
            if frame is not None:
                h, w = frame.shape
                return f"{cam.kind}: first frame {w}x{h}"
        raise EdgeError(f"no frame within {timeout_s:.0f} s")
    finally:
        driver.close()


def _serial(cfg: Config, config_dir: Path, index: int) -> str:
    sensor = cfg.serial[index]
    port = sensor.port
    if "://" not in port and not Path(port).is_absolute():
        port = str(config_dir / port)
    opener = serial.serial_for_url if "://" in port else serial.Serial
    handle = opener(port, baudrate=sensor.effective_baud, timeout=0.1)
    handle.close()
    return f"{sensor.format} on {sensor.port} opens at {sensor.effective_baud} baud"


def _broker(cfg: Config) -> str:
    error = probe_broker(cfg)
    if error:
        raise EdgeError(error)
    tls = "TLS" if cfg.mqtt.tls else "plain TCP"
    return f"{cfg.mqtt.host}:{cfg.mqtt.port} accepted the connection (MQTT {cfg.mqtt.protocol}, {tls})"


def _outbox(cfg: Config) -> str:
    outbox = make_outbox(cfg)
    try:
        if not outbox.integrity_ok():
            raise EdgeError(f"{outbox.path} fails PRAGMA integrity_check")
        depth, age = outbox.depth(), outbox.oldest_age_s()
    finally:
        outbox.close()
    backlog = f", oldest {age:.0f} s old" if age is not None else ""
    return f"{depth} event(s) pending{backlog}"


def _disk(cfg: Config) -> str:
    free = shutil.disk_usage(cfg.gateway.data_dir).free
    need = int(cfg.outbox.max_mb * 1024 * 1024)
    outbox = make_outbox(cfg)
    try:
        st = outbox.storage()
    finally:
        outbox.close()
    # What the free space buys: the outbox's room under the quota in force (reserve and WAL headroom
    # set aside) at the recent event rate. Not a failure on its own: a short disk sheds by policy.
    buffer = describe_outage(st.outage_s, st.rate_eps)
    if st.disk_full:
        raise EdgeError(f"the disk holding {cfg.gateway.data_dir} is full ({free / 2**10:.0f} KiB free): "
                        "commits are refused until space is freed")
    if free < need:
        raise EdgeError(f"{free / 2**20:.0f} MiB free in {cfg.gateway.data_dir}, less than the outbox quota "
                        f"({cfg.outbox.max_mb:.0f} MiB): lower outbox.max_mb or free space ({buffer})")
    return (f"{free / 2**30:.1f} GiB free in {cfg.gateway.data_dir}; state files {st.state_bytes / 2**20:.1f} MiB, "
            f"outbox quota {st.quota_bytes / 2**20:.0f} MiB; {buffer}")


def run_checks(cfg: Config, config_dir: Path, *, camera_timeout_s: float = 10.0,
               broker: bool = True) -> Iterator[CheckResult]:
    """Run every check in order, yielding results as they finish."""
    cfg.gateway.data_dir.mkdir(parents=True, exist_ok=True)
    yield _run("keys", lambda: _keys(cfg))
    yield _run("models", lambda: _models(cfg))
    for i, cam in enumerate(cfg.cameras):
        yield _run(f"camera {cam.id}", functools.partial(_camera, cfg, config_dir, i, camera_timeout_s))
    for i, sensor in enumerate(cfg.serial):
        yield _run(f"serial {sensor.id}", functools.partial(_serial, cfg, config_dir, i))
    yield _run("disk", lambda: _disk(cfg))
    yield _run("outbox", lambda: _outbox(cfg))
    if broker:
        yield _run("broker", lambda: _broker(cfg))
