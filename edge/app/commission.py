"""`edgegw check`: commissioning checks an installer runs at the gate before leaving.

Every check has a stable id (`keys`, `camera.reach:gate1`, ...), ends ok / warn / fail / skip with
a detail line, a one-line fix and an anchor in docs/commissioning.md, and touches the real thing
the daemons will use: key files, verified models, each camera (reach, frames, rate, pixel density),
each serial port, the broker (a real CONNACK), its TLS chain, the clock, the disk, the outbox and
the systemd units. Nothing here prints a key, a credential or an identifier: every detail passes
through the credential redactor, and the swipe test shows only a card's last four characters.
"""

from __future__ import annotations

import fnmatch
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import serial

from drivers.camera.config import FileCameraConfig
from drivers.camera.redact import redact_text
from edge.app.commission_camera import CameraSession
from edge.app.commission_system import check_storage, check_time, check_tls, check_units
from edge.app.config import Config
from edge.app.uplink import probe_broker
from edge.app.wiring import data_key, make_outbox, mqtt_password, pseudonymiser
from edge.diskbudget import describe_outage
from edge.errors import EdgeError
from edge.models.fetch import verify
from edge.models.manifest import load_manifest
from edge.privacy.pseudonym import epoch_label
from edge.types import IdKind

Status = Literal["ok", "warn", "fail", "skip"]
DOCS = "docs/commissioning.md"
CODES: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2, "skip": -1}


class CheckFailedError(EdgeError):
    """A check found a fault; carries the fix."""

    def __init__(self, detail: str, hint: str = "") -> None:
        super().__init__(detail)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the checklist."""

    id: str
    status: Status
    detail: str
    hint: str = ""
    docs: str = ""
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        """Not a failure (ok, warn or skip)."""
        return self.status != "fail"

    @property
    def name(self) -> str:
        """The id (kept for callers of the first checklist)."""
        return self.id

    def as_dict(self) -> dict[str, object]:
        """The JSON form: {id, status, detail, hint, docs, duration_ms}."""
        return {"id": self.id, "status": self.status, "detail": self.detail, "hint": self.hint,
                "docs": self.docs, "duration_ms": round(self.duration_ms, 1)}


Outcome = tuple[Status, str, str]
CheckFn = Callable[[], Outcome | str]


@dataclass(frozen=True, slots=True)
class Check:
    """A check to run: its id, what it does, its docs anchor and the function."""

    id: str
    title: str
    anchor: str
    fn: CheckFn = field(repr=False)
    interactive_only: bool = False


@dataclass
class CheckOptions:
    """How the checks run."""

    camera_timeout_s: float = 10.0
    sample_s: float = 4.0
    broker: bool = True
    interactive: bool = False
    prompt: Callable[[str], None] = print
    swipe_wait_s: float = 30.0


FAMILIES: tuple[tuple[str, str], ...] = (
    ("config", "the config file validates (errors exit 2 before any check runs)"),
    ("keys", "gateway identity, data key and this epoch's pseudonym keys load with safe permissions"),
    ("models", "every model file present and sha256-verified"),
    ("camera.reach", "the camera answers: distinct fixes for refused / 401 / 404 / timeout"),
    ("camera.frame", "a non-black, non-frozen frame within the camera timeout"),
    ("camera.fps", "measured frame rate within ±20 % of the configured one"),
    ("camera.density", "face width (fail < 40 px, warn < 80) or plate character height (fail < 15, warn < 20)"),
    ("serial", "the serial port opens at its baud rate (--interactive: swipe a card)"),
    ("broker", "the district broker accepts the connection (a real CONNACK)"),
    ("tls", "the broker's TLS chain verifies; certificates valid for 30+ days"),
    ("time", "clock offset under 1 s"),
    ("storage", "free space in the data directory: warn < 20 %, fail < 5 %"),
    ("outbox", "the outbox passes its integrity check; backlog and its age"),
    ("units", "the systemd units are active with a watchdog"),
)


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
        raise CheckFailedError(f"not present or not verified: {', '.join(bad)}",
                               "run `edgegw models fetch` (or `edgegw models fetch --from USB-STICK`)")
    return f"{len(statuses)} models present, sha256 verified, in {cfg.models.dir}"


def _serial(cfg: Config, config_dir: Path, index: int, opts: CheckOptions) -> Outcome | str:
    sensor = cfg.serial[index]
    port = sensor.port
    if "://" not in port and not Path(port).is_absolute():
        port = str(config_dir / port)
    opener = serial.serial_for_url if "://" in port else serial.Serial
    try:
        handle = opener(port, baudrate=sensor.effective_baud, timeout=0.1)
    except (serial.SerialException, OSError) as exc:
        raise CheckFailedError(str(exc), "check the adapter is plugged in, the port path (prefer "
                               "/dev/serial/by-id/...) and that the edgegw user is in the dialout group") from None
    handle.close()
    opened = f"{sensor.format} on {sensor.port} opens at {sensor.effective_baud} baud"
    if not opts.interactive:
        return opened
    return _swipe(sensor.model_copy(update={"port": port}), opts, opened)


def _swipe(sensor: object, opts: CheckOptions, opened: str) -> Outcome:
    from drivers.serial.config import SerialSensorConfig
    from drivers.serial.transport import SerialSensor
    from edge.preview import mask
    from edge.types import Reading

    assert isinstance(sensor, SerialSensorConfig)
    seen: list[str] = []

    def on_reading(reading: Reading) -> None:
        seen.append(mask(reading.identifier.value))

    reader = SerialSensor(sensor, on_reading)
    reader.start()
    try:
        # Ask only once the port is open: opening flushes what arrived before.
        ready_by = time.monotonic() + 5.0
        while not reader.status().connected and time.monotonic() < ready_by:
            time.sleep(0.05)
        opts.prompt(f"swipe a card at {sensor.id} now ({opts.swipe_wait_s:.0f} s)...")
        deadline = time.monotonic() + opts.swipe_wait_s
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        reader.stop()
    st = reader.status()
    if seen:
        return "ok", f"{opened}; card {seen[0]} read", ""
    rejected = sum(st.frames_rejected.values())
    if rejected:
        return "fail", f"{opened}; {rejected} frame(s) arrived but none decoded as {sensor.format}", \
            "check serial.format and the baud rate (`edgegw serial formats`)"
    return "fail", f"{opened}; no card read in {opts.swipe_wait_s:.0f} s ({st.bytes_read} bytes)", \
        "check the reader's wiring (TX → RX, common ground) and power"


def _broker(cfg: Config) -> str:
    error = probe_broker(cfg)
    if error:
        hint = "check mqtt.host/port and that the broker runs" if "refused" in error or "timed out" in error \
            else "check mqtt.username and the password file" if "auth" in error.lower() or "not authori" in error \
            else "check the [mqtt] section"
        raise CheckFailedError(error, hint)
    tls = "TLS" if cfg.mqtt.tls else "plain TCP"
    return f"{cfg.mqtt.host}:{cfg.mqtt.port} accepted the connection (MQTT {cfg.mqtt.protocol}, {tls})"


def _tls(cfg: Config) -> Outcome:
    tls = cfg.mqtt.tls
    if tls is None:
        return "skip", "the broker connection is plain TCP (no [mqtt.tls])", \
            "use TLS to the district broker outside a closed network"
    return check_tls(cfg.mqtt.host, cfg.mqtt.port, ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file)


def _outbox(cfg: Config) -> str:
    outbox = make_outbox(cfg)
    try:
        if not outbox.integrity_ok():
            raise CheckFailedError(f"{outbox.path} fails PRAGMA integrity_check",
                                   "stop capture and uplink, move the file aside, start them again")
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


def _storage(cfg: Config) -> Outcome:
    # The free-space thresholds, then what the space buys the outbox (docs/delivery.md).
    status, detail, hint = check_storage(cfg.gateway.data_dir, int(cfg.outbox.max_mb * 2**20))
    try:
        buffer = _disk(cfg).split("; ", 1)[-1]
    except EdgeError as exc:
        return "fail", str(exc), hint or "free space or lower outbox.max_mb"
    return status, f"{detail}; {buffer}", hint


def build_checks(cfg: Config, config_dir: Path, opts: CheckOptions) -> list[Check]:
    """Every check for this gateway, in run order, with stable ids."""
    checks = [
        Check("keys", "keys", "keys", lambda: _keys(cfg)),
        Check("models", "models", "models", lambda: _models(cfg)),
    ]
    for cam in cfg.cameras:
        camcfg = cam
        if isinstance(cam, FileCameraConfig) and not Path(cam.path).is_absolute():
            camcfg = cam.model_copy(update={"path": str(config_dir / cam.path)})
        kind = "plate" if cam.id in cfg.plate_cameras() else "face" if cam.id in cfg.face_cameras() else None
        session = CameraSession(camcfg, cfg, kind, timeout_s=opts.camera_timeout_s, sample_s=opts.sample_s,
                                interactive=opts.interactive, prompt=opts.prompt)
        checks += [
            Check(f"camera.reach:{cam.id}", "camera reach", "camera-reach", session.reach),
            Check(f"camera.frame:{cam.id}", "camera frame", "camera-frame", session.frame),
            Check(f"camera.fps:{cam.id}", "camera fps", "camera-fps", session.fps),
            Check(f"camera.density:{cam.id}", "pixel density", "camera-density", session.density),
        ]
    for i, sensor in enumerate(cfg.serial):
        checks.append(Check(f"serial:{sensor.id}", "serial port", "serial",
                            lambda i=i: _serial(cfg, config_dir, i, opts)))  # type: ignore[misc]
    checks += [
        Check("storage", "storage", "storage", lambda: _storage(cfg)),
        Check("outbox", "outbox", "outbox", lambda: _outbox(cfg)),
        Check("time", "time sync", "time", lambda: check_time(cfg.commission.ntp_servers)),
        Check("units", "systemd units", "units", lambda: check_units(cfg.commission.units)),
    ]
    if opts.broker:
        checks += [Check("broker", "broker", "broker", lambda: _broker(cfg)),
                   Check("tls", "broker TLS", "tls", lambda: _tls(cfg))]
    return checks


def selected(check_id: str, only: Sequence[str], skip: Sequence[str]) -> bool:
    """Whether `--only`/`--skip` patterns let this id run (a family name matches all its ids)."""

    def match(pattern: str) -> bool:
        return fnmatch.fnmatchcase(check_id, pattern) or check_id.split(":", 1)[0] == pattern

    if only and not any(match(p) for p in only):
        return False
    return not any(match(p) for p in skip)


def _run_one(check: Check, secrets: Sequence[str]) -> CheckResult:
    t0 = time.perf_counter()
    hint = ""
    status: Status
    try:
        out = check.fn()
        if isinstance(out, str):
            status, detail = "ok", out
        else:
            status, detail, hint = out
    except CheckFailedError as exc:
        status, detail, hint = "fail", str(exc), exc.hint
    except (EdgeError, OSError, ValueError, serial.SerialException) as exc:
        status, detail = "fail", str(exc)
    ms = (time.perf_counter() - t0) * 1000
    return CheckResult(check.id, status, redact_text(detail, secrets), redact_text(hint, secrets),
                       f"{DOCS}#{check.anchor}", ms)


def _secrets(cfg: Config) -> list[str]:
    out = []
    try:
        pw = mqtt_password(cfg)
        if pw:
            out.append(pw)
    except EdgeError:
        pass
    return out


def run_checks(cfg: Config, config_dir: Path, *, camera_timeout_s: float = 10.0, broker: bool = True,
               options: CheckOptions | None = None, only: Sequence[str] = (),
               skip: Sequence[str] = ()) -> Iterator[CheckResult]:
    """Run the selected checks in order, yielding results as they finish."""
    opts = options or CheckOptions(camera_timeout_s=camera_timeout_s, broker=broker)
    cfg.gateway.data_dir.mkdir(parents=True, exist_ok=True)
    secrets = _secrets(cfg)
    for check in build_checks(cfg, config_dir, opts):
        if selected(check.id, only, skip):
            yield _run_one(check, secrets)


def summarise(results: Sequence[CheckResult], strict: bool = False) -> dict[str, object]:
    """{ok, warn, fail, skip counts, status, exit}: exit 1 on a failure (or a warning with `strict`)."""
    counts = {s: sum(1 for r in results if r.status == s) for s in ("ok", "warn", "fail", "skip")}
    status = "fail" if counts["fail"] else "warn" if counts["warn"] else "ok"
    exit_code = 1 if counts["fail"] or (strict and counts["warn"]) else 0
    return {**counts, "status": status, "exit": exit_code,
            "duration_ms": round(sum(r.duration_ms for r in results), 1)}
