"""A reference platform consumer for end-to-end acknowledgement mode (the district side, not the gateway).

It subscribes to every gateway's events, commits them to SQLite (idempotent by event_id), and
publishes, per gateway, a retained watermark on `{base}/ack`: `{"boot": B, "marks": {source: seq}}`
where `seq` is the highest sequence number with nothing missing below it. Only committed events
count, so a crash of this consumer at any moment loses nothing: the gateway keeps every event the
watermark does not cover and sends it again after its `ack_timeout_s`.

Gaps the gateway will never fill (an event dropped by its quota or expired) are closed using the
`seq.floor` in the gateway's retained status: everything below the floor has left the gateway's
outbox for good, so a missing seq below it is recorded in `gaps` and the watermark moves past it.

It is the SQLite test double of the real worker (district/mqtt_worker.py + PostgreSQL) and shares
its message validation (district.messages). Run it with
`python -m district.ack --host H --port P --db consumer.db`; docs/delivery.md describes the protocol
for platforms that write their own.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from district.messages import EventRow, StatusRow, parse
from edge.sqlite import connect, transaction

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, base TEXT NOT NULL, boot INTEGER NOT NULL, source TEXT NOT NULL,
    seq INTEGER NOT NULL, kind TEXT NOT NULL, received_ts REAL NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS events_seq ON events (base, boot, source, seq);
CREATE TABLE IF NOT EXISTS marks (
    base TEXT NOT NULL, boot INTEGER NOT NULL, source TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (base, boot, source));
CREATE TABLE IF NOT EXISTS gaps (
    base TEXT NOT NULL, boot INTEGER NOT NULL, source TEXT NOT NULL, seq_from INTEGER NOT NULL,
    seq_to INTEGER NOT NULL, closed_ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS received (n INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message as the MQTT thread hands it to the committing thread."""

    topic: str
    payload: bytes


class PlatformConsumer:
    """Commits events to SQLite in small batches and publishes the committed watermarks."""

    def __init__(self, db_path: Path, host: str, port: int, *, topic_prefix: str = "edgegw",
                 client_id: str = "edgegw-platform-consumer", commit_interval_s: float = 0.05) -> None:
        self.db = connect(db_path)
        self.db.executescript(_SCHEMA)
        if self.db.execute("SELECT COUNT(*) FROM received").fetchone()[0] == 0:
            self.db.execute("INSERT INTO received(n) VALUES(0)")
        self.prefix = topic_prefix
        self.commit_interval_s = commit_interval_s
        self._queue: list[Incoming] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._dirty: set[str] = set()
        self._republish = threading.Event()
        # A clean session on purpose: what the broker holds for a dead consumer is not relied on;
        # the gateway resends whatever the watermark does not cover.
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.host, self.port = host, port

    # -- MQTT thread ---------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("broker refused the consumer: %s", rc)
            return
        client.subscribe([(f"{self.prefix}/+/+/+/events/#", 1), (f"{self.prefix}/+/+/+/status", 1)])
        # The retained marks may be gone (a broker restarted without persistence): publish them again.
        self._republish.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._queue.append(Incoming(msg.topic, bytes(msg.payload)))

    # -- committing thread ---------------------------------------------------------------------
    def _advance(self, base: str, boot: int, source: str, floor: int | None = None) -> None:
        row = self.db.execute("SELECT seq FROM marks WHERE base=? AND boot=? AND source=?",
                              (base, boot, source)).fetchone()
        mark = 0 if row is None else int(row[0])
        start = mark
        if floor is not None and floor - 1 > mark:
            have = {int(r[0]) for r in self.db.execute(
                "SELECT seq FROM events WHERE base=? AND boot=? AND source=? AND seq > ? AND seq < ?",
                (base, boot, source, mark, floor))}
            # The gateway no longer holds these (dropped by its quota, or expired): record each run.
            run_start: int | None = None
            for s in range(mark + 1, floor + 1):
                if s < floor and s not in have:
                    run_start = s if run_start is None else run_start
                elif run_start is not None:
                    self.db.execute("INSERT INTO gaps VALUES(?,?,?,?,?,?)",
                                    (base, boot, source, run_start, s - 1, time.time()))
                    log.warning("gateway %s source %s: seq %d..%d will never arrive (dropped or expired there)",
                                base, source, run_start, s - 1)
                    run_start = None
            mark = floor - 1
        for (seq,) in self.db.execute("SELECT seq FROM events WHERE base=? AND boot=? AND source=? AND seq > ? "
                                      "ORDER BY seq", (base, boot, source, mark)):
            if int(seq) != mark + 1:
                break
            mark = int(seq)
        if mark != start:
            self.db.execute("INSERT OR REPLACE INTO marks VALUES(?,?,?,?)", (base, boot, source, mark))
            self._dirty.add(base)

    def _store(self, batch: Sequence[Incoming]) -> None:
        touched: set[tuple[str, int, str]] = set()
        floors: list[tuple[str, int, dict[str, int]]] = []
        with transaction(self.db):
            for m in batch:
                # The real worker's validation (district.messages): schema, size, topic/payload match.
                parsed = parse(m.topic, m.payload, prefix=self.prefix)
                if isinstance(parsed, StatusRow):
                    if parsed.boot is not None and parsed.floors:
                        floors.append((parsed.gw.base(self.prefix), parsed.boot, parsed.floors))
                    continue
                if not isinstance(parsed, EventRow):
                    log.warning("rejecting a message on %s: %s", m.topic, parsed.reason)
                    continue
                base = parsed.gw.base(self.prefix)
                row = (str(parsed.event_id), base, parsed.boot, parsed.source, parsed.seq, parsed.kind, time.time(),
                       m.payload)
                self.db.execute("INSERT OR IGNORE INTO events VALUES(?,?,?,?,?,?,?,?)", row)
                touched.add((base, parsed.boot, parsed.source))
            self.db.execute("UPDATE received SET n = n + ?", (len(batch),))
            for base, boot, source in touched:
                self._advance(base, boot, source)
            for base, boot, per_source in floors:
                for source, floor in per_source.items():
                    self._advance(base, boot, source, floor)

    def _publish_marks(self) -> None:
        if self._republish.is_set():
            self._republish.clear()
            bases = {str(r[0]) for r in self.db.execute("SELECT DISTINCT base FROM marks")}
            with self._lock:
                self._dirty |= bases
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for base in dirty:
            # Acknowledge the newest boot only: an older outbox file of that gateway is gone.
            row = self.db.execute("SELECT MAX(boot) FROM marks WHERE base=?", (base,)).fetchone()
            if row[0] is None:
                continue
            boot = int(row[0])
            marks = {str(s): int(q) for s, q in self.db.execute(
                "SELECT source, seq FROM marks WHERE base=? AND boot=?", (base, boot))}
            info = self.client.publish(f"{base}/ack", json.dumps({"boot": boot, "marks": marks}), qos=1, retain=True)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                with self._lock:
                    self._dirty.add(base)

    def run(self) -> None:
        """Connect (retrying) and commit until stop()."""
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        try:
            while not self._stop.wait(self.commit_interval_s):
                with self._lock:
                    batch, self._queue = self._queue, []
                if batch:
                    self._store(batch)
                if self.client.is_connected():
                    self._publish_marks()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self.db.close()

    def stop(self) -> None:
        """Ask run() to return (thread-safe)."""
        self._stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the reference consumer until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m district.ack", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--db", required=True, type=Path)
    p.add_argument("--prefix", default="edgegw")
    p.add_argument("--client-id", default="edgegw-platform-consumer")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    consumer = PlatformConsumer(args.db, args.host, args.port, topic_prefix=args.prefix, client_id=args.client_id)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: consumer.stop())
    consumer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
