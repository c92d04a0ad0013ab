"""Chaos-test helpers: a producer process, real daemons as subprocesses, brokers, subscribers, TLS.

`python -m tests._chaos produce --db PATH ...` is the stand-in for the capture daemon: it commits
events through the real `Committer` (retry with backoff, quota alarm) and prints each event_id only
after its commit returned, so its stdout is the list of acknowledged events.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import getpass
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
ORIGIN = ("dl-district", "c0001", "gw01")
BASE = "edgegw/" + "/".join(ORIGIN)
SOURCES = ("cam1", "cam2", "reader1", "sniffer1")


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- events ------------------------------------------------------------------------------------
def observations(n: int, start: int = 0, kinds: str = "mixed") -> list[Any]:
    """`n` observations spread over SOURCES (or only card swipes with kinds="cards")."""
    from edge.types import EventKind, IdKind, Observation, RawIdentifier

    out = []
    now = time.time()
    for i in range(start, start + n):
        k = i % 4 if kinds == "mixed" else 2
        if k == 0:
            out.append(Observation(EventKind.FACE_PASSAGE, "cam1", now, subject_ref=os.urandom(12).hex(),
                                   attrs={"matched": False, "quality": 0.5, "frames": 4, "duration_s": 0.5}))
        elif k == 1:
            out.append(Observation(EventKind.PLATE_PASSAGE, "cam2", now,
                                   subject=RawIdentifier(IdKind.PLATE, f"辽B·{i % 100000:05d}"),
                                   attrs={"confidence": 0.97, "colour": "blue", "plate_type": "blue_single",
                                          "local": True, "frames": 6, "reads": 5, "duration_s": 2.0,
                                          "direction": "out"}))
        elif k == 2:
            out.append(Observation(EventKind.CARD_SWIPE, "reader1", now,
                                   subject=RawIdentifier(IdKind.CARD, f"{0xA1000000 + i:010X}"),
                                   attrs={"format": "rdm6300", "direction": "in"}))
        else:
            out.append(Observation(EventKind.DEVICE_AGGREGATE, "sniffer1", now,
                                   attrs={"window_s": 60, "randomised": i % 50, "distinct": 3}))
    return out


class _PrintIds:
    """Commit observer: prints each event_id after its commit returned (= acknowledged)."""

    def committed(self, pairs: Sequence[tuple[Any, Any]]) -> list[Any]:
        sys.stdout.write("".join(f"{ev.event_id}\n" for _, ev in pairs))
        sys.stdout.flush()
        return []

    def tick(self, now: float) -> list[Any]:
        return []


def produce_main(argv: Sequence[str]) -> int:
    """The producer process: commit events in batches at a rate, print acknowledged ids."""
    from edge.configbase import BackoffConfig
    from edge.outbox import Outbox, OutboxLimits
    from edge.pipeline.commit import Committer
    from edge.privacy.boundary import PrivacyBoundary
    from edge.privacy.pseudonym import Pseudonymiser
    from edge.types import Origin

    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True, type=Path)
    p.add_argument("--count", type=int, default=0, help="0: until killed")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--rate", type=float, default=0.0, help="events/s; 0: as fast as possible")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--kinds", default="mixed")
    p.add_argument("--max-events", type=int, default=1_000_000)
    args = p.parse_args(argv)
    outbox = Outbox(args.db, limits=OutboxLimits(max_events=args.max_events))
    boundary = PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin(*ORIGIN))
    committer = Committer(outbox, boundary, BackoffConfig(initial_s=0.05, max_s=0.5), observers=[_PrintIds()])
    sys.stderr.write("ready\n")
    sys.stderr.flush()
    t0 = time.monotonic()
    done = 0
    i = args.start
    while args.count == 0 or done < args.count:
        n = args.batch if args.count == 0 else min(args.batch, args.count - done)
        committer.commit(observations(n, i, args.kinds))
        done += n
        i += n
        if args.rate > 0:
            ahead = t0 + done / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    outbox.close()
    return 0


# -- processes ---------------------------------------------------------------------------------
def _is_id(line: str) -> bool:
    return len(line) == 36 and line.count("-") == 4


class Proc:
    """A child process whose stdout lines are collected by a thread (kill -9 safe)."""

    def __init__(self, cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log,
                                     env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def ids(self) -> list[str]:
        """Event ids printed so far (complete lines only)."""
        return [x for x in list(self.lines) if _is_id(x)]

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the child wrote 'ready' to its log (its stderr)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"ready" in self.log_path.read_bytes():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"child exited early: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.01)
        raise RuntimeError("child not ready")

    def kill9(self) -> None:
        """SIGKILL: no cleanup, no flush, like a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(5)

    def wait(self, timeout: float) -> int:
        """Wait for a normal exit."""
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        self._log.close()


def producer(db: Path, log_dir: Path, *args: str) -> Proc:
    """Start the producer process (see produce_main for its options)."""
    return Proc([sys.executable, "-m", "tests._chaos", "produce", "--db", str(db), *args],
                log_dir / f"producer-{time.monotonic_ns()}.log")


def gateway_config(tmp: Path, port: int, *, mqtt: dict[str, Any] | None = None,
                   uplink: dict[str, Any] | None = None, outbox: dict[str, Any] | None = None) -> Path:
    """Write a gateway TOML for the real `edgegw uplink` daemon; returns its path."""
    def table(name: str, values: dict[str, Any]) -> str:
        lines = [f"[{name}]"]
        for k, v in values.items():
            if isinstance(v, dict):
                continue
            lines.append(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}")
        out = "\n".join(lines) + "\n"
        for k, v in values.items():
            if isinstance(v, dict):
                out += table(f"{name}.{k}", v)
        return out

    up = {"window": 16, "status_interval_s": 1.0, "backoff": {"initial_s": 0.05, "max_s": 0.5}, **(uplink or {})}
    text = table("gateway", {"district": ORIGIN[0], "community": ORIGIN[1], "gateway": ORIGIN[2],
                             "data_dir": str(tmp)})
    text += table("outbox", {"path": "outbox.db", **(outbox or {})})
    text += table("mqtt", {"host": "127.0.0.1", "port": port, "will_delay_s": 2, **(mqtt or {})})
    text += table("uplink", up)
    path = tmp / f"gateway-{time.monotonic_ns()}.toml"
    path.write_text(text)
    return path


def uplink_daemon(config: Path, log_dir: Path) -> Proc:
    """Start the real `edgegw uplink` daemon."""
    return Proc([sys.executable, "-m", "edge.cli", "-v", "uplink", "--config", str(config)],
                log_dir / f"uplink-{time.monotonic_ns()}.log")


def platform_worker(config: Path, dsn: str, port: int, log_dir: Path, client_id: str) -> Proc:
    """Start the real district ingest worker (`python -m district ingest`, MQTT) into PostgreSQL `dsn`."""
    return Proc([sys.executable, "-m", "district", "-v", "ingest", "--config", str(config), "--dsn", dsn,
                 "--mqtt-port", str(port), "--client-id", client_id], log_dir / f"worker-{client_id}.log")


def platform_worker_config(tmp: Path, port: int, *, replay_after_s: float = 5.0) -> Path:
    """A district TOML for chaos tests: a clean session per worker start (`session_expiry_s = 0`), so what
    the broker routes while a worker is dead is gone, the worst case for the gateway's resend."""
    # Replay requests only after `replay_after_s`: the gateway's own resend after its ack_timeout_s
    # (1-2 s) comes first, so the tests show that path; sweeps are fast, so a restarted worker
    # republishes marks at once.
    path = tmp / "district.toml"
    path.write_text(f"[mqtt]\nport = {port}\nsession_expiry_s = 0\n"
                    f"[ingest]\nsweep_s = 0.2\ngap_grace_s = {replay_after_s}\nreplay_interval_s = {replay_after_s}\n"
                    "[database]\nconnect_timeout_s = 2\n")
    return path


@pytest.fixture
def platform_dsn() -> Iterator[str]:
    """A PostgreSQL database of the test's own (the machine's server), migrated, dropped afterwards."""
    from district.testing import scratch_database

    with scratch_database("chaos") as dsn:
        yield dsn


def pg_rows(dsn: str, query: str, params: tuple[object, ...] = ()) -> list[Any]:
    """The rows of one statement, in a connection of its own."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query.encode(), params).fetchall()


# -- brokers -----------------------------------------------------------------------------------
@dataclass
class Mosquitto:
    """A mosquitto with a test-specific configuration; start()/kill9()/terminate() for outages."""

    conf: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def start(self) -> None:
        """Start and wait until it accepts connections on `port` and on every other listener of its conf.

        Mosquitto opens its listeners one after another: a test that talks to a second listener
        right after the first accepts could be refused (seen once in CI, on a plain listener after a TLS one)."""
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.log = self.conf.with_suffix(".log")
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=f, stderr=f)
        waiting = {self.port} | {int(line.split()[1]) for line in self.conf.read_text().splitlines()
                                 if line.startswith("listener ") and line.split()[1] != "0"}  # 0: a unix socket
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for port in sorted(waiting):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    waiting.discard(port)
                except OSError:
                    pass
            if not waiting:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start listening on {sorted(waiting)}")

    def kill9(self) -> None:
        """A crash: whatever the broker held only in memory is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def terminate(self) -> None:
        """An orderly stop (SIGTERM): with persistence on, sessions and queued messages are saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its password file and ACLs."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Any]:
    """Factory: `mosquitto(extra_conf_lines, port=None)` → started Mosquitto; all stopped at teardown."""
    started: list[Mosquitto] = []

    def make(extra: str = "", port: int | None = None, listener: str | None = None) -> Mosquitto:
        port = port or free_port()
        conf = tmp_path / f"mosquitto-{port}.conf"
        head = listener if listener is not None else f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        # `user`: started as root, mosquitto drops to the "mosquitto" user, who cannot write its
        # persistence file into the test's directory.
        conf.write_text(head + f"user {getpass.getuser()}\nmax_queued_messages 1000000\nmax_inflight_messages 0\n"
                        + extra)
        m = Mosquitto(conf, port)
        m.start()
        started.append(m)
        return m

    yield make
    for m in started:
        m.kill9()


# -- subscribers -------------------------------------------------------------------------------
@dataclass
class Got:
    """One event message as a subscriber saw it."""

    event_id: str
    source: str
    seq: int
    payload: bytes


@dataclass
class Subscriber:
    """An MQTT 5 subscriber to every event; persistent session optional; reconnects by itself."""

    port: int
    client_id: str = "chaos-subscriber"
    persistent: bool = False
    username: str | None = None
    password: str | None = None
    got: list[Got] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from tests._mqtt import ALL_PAYLOADS

        self._all = ALL_PAYLOADS
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe([(f"{BASE}/events/#", 1), (f"{BASE}/status", 1)])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self.persistent:
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, keepalive=5, clean_start=not self.persistent, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        with self._lock:
            self._all.append(payload)
            if msg.topic.endswith("/status"):
                self.statuses.append(json.loads(payload))
                return
            body = json.loads(payload)
            self.got.append(Got(body["event_id"], body["source"], int(body["seq"]), payload))

    def ids(self) -> set[str]:
        """Distinct event ids received."""
        with self._lock:
            return {g.event_id for g in self.got}

    def wait_for(self, ids: set[str], timeout: float) -> set[str]:
        """Wait until every id in `ids` was received; return the ones still missing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            missing = ids - self.ids()
            if not missing:
                return missing
            time.sleep(0.05)
        return ids - self.ids()

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def first_receipt_order_ok(got: Sequence[Got]) -> dict[str, bool]:
    """Per source: were first receipts in increasing seq order (duplicates later are fine)?"""
    seen: set[str] = set()
    last: dict[str, int] = {}
    ok: dict[str, bool] = {}
    for g in got:
        if g.event_id in seen:
            continue
        seen.add(g.event_id)
        ok[g.source] = ok.get(g.source, True) and g.seq > last.get(g.source, 0)
        last[g.source] = g.seq
    return ok


# -- a broker that only speaks MQTT 3.1.1 ---------------------------------------------------------
class V311OnlyProxy:
    """A TCP front for mosquitto that refuses MQTT 5 like a 3.1.1-only broker (RabbitMQ 3.x, NATS).

    mode "connack": answers an MQTT 5 CONNECT with a 3.1.1 CONNACK "unacceptable protocol version";
    mode "close": hangs up on it. MQTT 3.1.1 connections are relayed to the real broker.
    mode "close-all" hangs up on everything (a flaky path, not a protocol problem); "relay-all"
    relays everything (the broker speaks MQTT 5 after all). `mode` may change while it runs.
    """

    def __init__(self, upstream_port: int, mode: str = "connack") -> None:
        self.upstream = upstream_port
        self.mode = mode
        self.refused = 0
        self.relayed = 0
        self.levels: list[int] = []
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(16)
        self.port = int(self._srv.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        first = b""
        try:
            while len(first) < 9:  # fixed header (2+) + "\x00\x04MQTT" + protocol level
                chunk = conn.recv(9 - len(first))
                if not chunk:
                    conn.close()
                    return
                first += chunk
            level = first[8] if first[1] < 0x80 else first[9] if len(first) > 9 else None
            if level is None:
                first += conn.recv(1)
                level = first[9]
            self.levels.append(level)
            if self.mode == "close-all":
                conn.close()
                return
            if level == 5 and self.mode != "relay-all":
                self.refused += 1
                if self.mode == "connack":
                    conn.sendall(b"\x20\x02\x00\x01")
                conn.close()
                return
            self.relayed += 1
            up = socket.create_connection(("127.0.0.1", self.upstream))
            up.sendall(first)
        except OSError:
            conn.close()
            return

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(conn, up), daemon=True).start()
        threading.Thread(target=pump, args=(up, conn), daemon=True).start()

    def close(self) -> None:
        """Stop accepting."""
        self._closed = True
        self._srv.close()


# -- TLS ---------------------------------------------------------------------------------------
def make_ca(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (tmp / f"{name}-ca.pem", tmp / f"{name}-server.pem", tmp / f"{name}-server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def outbox_depth(db: Path) -> int:
    """Rows still in the gateway's outbox at `db`, read through a connection of its own (the daemons
    under test hold theirs)."""
    from edge.outbox import Outbox

    ob = Outbox(db)
    try:
        return ob.depth()
    finally:
        ob.close()


def uplink_state(db: Path) -> dict[str, Any]:
    """The uplink daemon's last status row in the outbox at `db` (connected, attempts, last_error ...)."""
    from edge.outbox import Outbox

    ob = Outbox(db)
    try:
        return dict(ob.get_status().get("uplink", {}))
    finally:
        ob.close()


def wait_until(pred: Any, timeout: float, step: float = 0.05) -> bool:
    """Poll `pred()` until true or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def jitter(a: float, b: float, rng: random.Random) -> float:
    """A random delay in [a, b]."""
    return a + rng.random() * (b - a)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "produce":
        sys.exit(produce_main(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} produce --db PATH [...]")
