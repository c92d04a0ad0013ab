"""Outbox and uplink benchmark: commit rates, backlog drain rate, frame → PUBACK latency.

    .venv/bin/python bench/bench_outbox.py [--backlog 100000] [--window 256]

Prints a table; `run() -> dict` returns the same figures for a harness. It starts its own
mosquitto on a free loopback port, with a subscriber (mosquitto_sub) on every event so the broker
forwards each message as it would to a platform consumer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge import outbox as outbox_mod  # noqa: E402
from edge.configbase import BackoffConfig  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.privacy.boundary import PrivacyBoundary  # noqa: E402
from edge.privacy.pseudonym import Pseudonymiser  # noqa: E402
from edge.types import Event, EventKind, IdKind, Observation, Origin, OutboxRecord, RawIdentifier  # noqa: E402
from edge.uplink.config import MqttConfig, UplinkConfig  # noqa: E402
from edge.uplink.uplink import Uplink  # noqa: E402

ORIGIN = Origin("bench-district", "c0001", "gw01")


def _events(n: int, start: int = 0, ts: float | None = None) -> list[Event]:
    """Card swipes (a pseudonymised subject: a typical event of ~450 bytes on the wire)."""
    boundary = PrivacyBoundary(Pseudonymiser(b"b" * 32), ORIGIN)
    now = time.time() if ts is None else ts
    return [boundary.to_event(Observation(EventKind.CARD_SWIPE, f"reader{i % 4}", now,
                                          subject=RawIdentifier(IdKind.CARD, f"{0xB0000000 + i:010X}"),
                                          attrs={"format": "rdm6300", "direction": "in"}))
            for i in range(start, start + n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _broker(tmp: Path) -> Iterator[int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 1000000\nmax_inflight_messages 0\n")
    broker = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sub = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.05)
        sub_exe = shutil.which("mosquitto_sub")
        if sub_exe:
            sub = subprocess.Popen([sub_exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", "edgegw/#"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
        yield port
    finally:
        for p in (sub, broker):
            if p is not None:
                p.kill()
                p.wait(5)


def bench_commit(tmp: Path, n_single: int = 300, n_batched: int = 3000, batch: int = 100) -> dict[str, float]:
    """Durable commits (WAL, synchronous=FULL): one event per transaction, and batches."""
    ob = Outbox(tmp / "commit.db")
    evs = _events(n_single)
    t = time.perf_counter()
    for ev in evs:
        ob.append([ev])
    single = n_single / (time.perf_counter() - t)
    evs = _events(n_batched, start=n_single)
    t = time.perf_counter()
    for i in range(0, n_batched, batch):
        ob.append(evs[i:i + batch])
    batched = n_batched / (time.perf_counter() - t)
    # The same batches without schema validation: what the storage layer itself sustains.
    evs = _events(n_batched, start=n_single + n_batched)
    real_validate = outbox_mod.validate
    outbox_mod.validate = lambda obj: None
    try:
        t = time.perf_counter()
        for i in range(0, n_batched, batch):
            ob.append(evs[i:i + batch])
        storage_only = n_batched / (time.perf_counter() - t)
    finally:
        outbox_mod.validate = real_validate
    ob.close()
    return {"commit_single_eps": single, "commit_batch_eps": batched, "commit_batch_no_validation_eps": storage_only,
            "batch": batch}


def _prefill(path: Path, n: int) -> None:
    # Schema validation costs ~1 ms an event (measured above); the backlog's content is what matters
    # here, so the prefill skips it.
    ob = Outbox(path)
    real_validate = outbox_mod.validate
    outbox_mod.validate = lambda obj: None
    try:
        for i in range(0, n, 2000):
            ob.append(_events(min(2000, n - i), start=i))
    finally:
        outbox_mod.validate = real_validate
    ob.close()


def bench_drain(tmp: Path, port: int, backlog: int, window: int) -> dict[str, float]:
    """Drain a backlog of `backlog` events to the broker; events per second until the outbox is empty."""
    path = tmp / f"drain-{window}.db"
    _prefill(path, backlog)
    ob = Outbox(path)  # as the uplink daemon opens it: deletes durable too
    up = Uplink(ob, ORIGIN, MqttConfig(port=port, client_id=f"bench-drain-{window}"),
                UplinkConfig(window=window, backoff=BackoffConfig(initial_s=0.05, max_s=0.5)))
    cpu = time.process_time()
    t = time.perf_counter()
    up.run(until_empty=True, idle_exit_s=0.0)
    dt = time.perf_counter() - t
    cpu = time.process_time() - cpu
    left = ob.depth()
    ob.close()
    # CPU per event tells what one free core would sustain when the wall clock is shared with others.
    return {"drain_eps": backlog / dt, "drain_s": dt, "backlog": backlog, "window": window, "left": left,
            "drain_cpu_us_per_event": cpu / backlog * 1e6}


def _produce(db: str, rate: float, seconds: float) -> None:
    """Child process: commit one event at a time at `rate`, stamped with the 'frame' time."""
    ob = Outbox(Path(db))
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < seconds:
        ob.append(_events(1, start=i, ts=time.time()))
        i += 1
        ahead = t0 + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    ob.close()


def _iso_to_ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def bench_latency(tmp: Path, port: int, rate: float, seconds: float, window: int) -> dict[str, float]:
    """Frame → PUBACK under a nominal load: a separate producer process commits at `rate`."""
    path = tmp / "latency.db"
    ob = Outbox(path)
    lat_frame: list[float] = []
    lat_commit: list[float] = []

    def on_acked(recs: Any, now: float) -> None:
        for r in recs:
            assert isinstance(r, OutboxRecord)
            lat_frame.append(now - _iso_to_ts(json.loads(r.payload)["ts"]))
            lat_commit.append(now - r.created_ts)

    up = Uplink(ob, ORIGIN, MqttConfig(port=port, client_id="bench-latency"),
                UplinkConfig(window=window, backoff=BackoffConfig(initial_s=0.05, max_s=0.5)), on_acked=on_acked)
    th = threading.Thread(target=up.run, daemon=True)
    th.start()
    time.sleep(0.5)
    child = subprocess.run([sys.executable, __file__, "--produce", str(path), str(rate), str(seconds)], check=True)
    assert child.returncode == 0
    time.sleep(0.5)
    up.stop()
    th.join(10)
    ob.close()

    def pct(xs: list[float], q: float) -> float:
        s = sorted(xs)
        return s[min(len(s) - 1, int(len(s) * q))] * 1000 if s else float("nan")

    return {"latency_rate_eps": rate, "latency_n": len(lat_frame),
            "frame_puback_p50_ms": pct(lat_frame, 0.5), "frame_puback_p99_ms": pct(lat_frame, 0.99),
            "commit_puback_p50_ms": pct(lat_commit, 0.5), "commit_puback_p99_ms": pct(lat_commit, 0.99)}


def run(backlog: int = 100_000, window: int = 256, rate: float = 50.0, seconds: float = 10.0) -> dict[str, Any]:
    """Every figure, as a dict."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as d:
        tmp = Path(d)
        out.update(bench_commit(tmp))
        with _broker(tmp) as port:
            out.update(bench_drain(tmp, port, backlog, window))
            out.update(bench_latency(tmp, port, rate, seconds, window))
    out["cpus"] = os.cpu_count()
    return out


def main() -> int:
    """Print the table."""
    if len(sys.argv) == 5 and sys.argv[1] == "--produce":
        _produce(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backlog", type=int, default=100_000)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--rate", type=float, default=50.0, help="nominal load for the latency run (events/s)")
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    r = run(args.backlog, args.window, args.rate, args.seconds)
    rows = [
        ("outbox commit, 1 event/transaction", f"{r['commit_single_eps']:,.0f} events/s"),
        (f"outbox commit, {r['batch']} events/transaction", f"{r['commit_batch_eps']:,.0f} events/s"),
        ("  same, without schema validation", f"{r['commit_batch_no_validation_eps']:,.0f} events/s"),
        (f"drain {r['backlog']:,} backlog → mosquitto (window {r['window']})",
         f"{r['drain_eps']:,.0f} events/s ({r['drain_s']:.1f} s, {r['left']} left)"),
        ("  uplink CPU per event", f"{r['drain_cpu_us_per_event']:.0f} µs (one free core: "
                                  f"{1e6 / r['drain_cpu_us_per_event']:,.0f} events/s)"),
        (f"frame → PUBACK at {r['latency_rate_eps']:.0f} events/s (n={r['latency_n']})",
         f"p50 {r['frame_puback_p50_ms']:.1f} ms, p99 {r['frame_puback_p99_ms']:.1f} ms"),
        ("  of which commit → PUBACK",
         f"p50 {r['commit_puback_p50_ms']:.1f} ms, p99 {r['commit_puback_p99_ms']:.1f} ms"),
    ]
    width = max(len(a) for a, _ in rows)
    print(f"{'measure':<{width}}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    print(f"(aims: drain ≥ 5,000 events/s, p99 ≤ 250 ms; {r['cpus']} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
