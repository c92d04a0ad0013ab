"""SOS latency under a backlog: an alarm-column press to the broker while 10,000 events wait.

    .venv/bin/python bench/bench_sos.py [--backlog 10000] [--trials 3]

Real parts throughout: a mosquitto on a free loopback port with a subscriber on the alarm topic,
a SQLite outbox holding the backlog, the uplink daemon's `Uplink` draining it, and an `InputPoller`
(the fake input source, polled every 50 ms with a 50 ms debounce) committing the press through the
privacy boundary. Measured from the moment the contact closes to the PUBACK of the alarm and to the
subscriber's receipt, for three cases:

- the press after the reconnect, with two lanes (`backlog_rate`) or strict order;
- the press during the outage, committed behind the backlog (timed from the reconnect);
- a burst of 10,000 live events committed just before the press;
each with `uplink.alarms_first` on (the default) and off.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_outbox import ORIGIN, _broker, _events, _prefill  # noqa: E402
from drivers.inputs.config import ModbusInputsConfig  # noqa: E402
from drivers.inputs.fake import FakeInputSource  # noqa: E402
from drivers.inputs.poller import InputPoller  # noqa: E402
from edge.configbase import BackoffConfig  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.privacy.boundary import PrivacyBoundary  # noqa: E402
from edge.privacy.pseudonym import Pseudonymiser  # noqa: E402
from edge.uplink.config import MqttConfig, UplinkConfig  # noqa: E402
from edge.uplink.uplink import Uplink  # noqa: E402


class _AlarmSubscriber:
    def __init__(self, port: int) -> None:
        self.received: dict[str, float] = {}
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sos-sub", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe("edgegw/+/+/+/events/alarm", qos=1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("subscriber could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.received.setdefault(json.loads(msg.payload)["event_id"], time.time())

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _trial(tmp: Path, port: int, backlog: int, rate: float | None, alarms_first: bool, mode: str,
           n: int) -> dict[str, Any]:
    """One press. `mode`: "after_connect" (backlog from before the connect, press once connected),
    "during_outage" (press committed before the uplink connects, behind the backlog), or
    "live_burst" (the backlog committed just after the connect, then the press)."""
    path = tmp / f"sos-{n}.db"
    if mode != "live_burst":
        _prefill(path, backlog)
    reader = Outbox(path)  # the uplink's connection; capture commits through its own, as the daemons do
    writer = Outbox(path)
    acked: dict[str, float] = {}

    def on_acked(recs: Any, now: float) -> None:
        for r in recs:
            if r.kind.value == "alarm":
                acked[r.event_id] = now

    boundary = PrivacyBoundary(Pseudonymiser(b"b" * 32), ORIGIN)
    committed: list[tuple[str, float, int]] = []

    def sink(obs: Any) -> None:
        evs = [boundary.to_event(o) for o in obs]
        writer.append(evs)
        committed.extend((e.event_id, time.time(), writer.depth()) for e in evs)

    cfg = ModbusInputsConfig(id="io1", port="/dev/null", poll_interval_s=0.05,
                             inputs=[{"id": "sos1", "channel": 0, "meaning": "alarm_column"}])  # type: ignore[list-item]
    fake = FakeInputSource()
    stop = threading.Event()
    poller = InputPoller(cfg, sink, stop, source=fake)
    poller.start()
    up = Uplink(reader, ORIGIN, MqttConfig(port=port, client_id=f"sos-up-{n}"),
                UplinkConfig(window=256, backlog_rate=rate, alarms_first=alarms_first,
                             backoff=BackoffConfig(initial_s=0.05, max_s=0.5)), on_acked=on_acked)
    th = threading.Thread(target=up.run, daemon=True)
    t_press = 0.0

    def press() -> None:
        nonlocal t_press
        t_press = time.time()
        fake.set(0, True)

    if mode == "during_outage":
        press()
        deadline = time.monotonic() + 10
        while not committed and time.monotonic() < deadline:
            time.sleep(0.005)
    th.start()
    deadline = time.monotonic() + 10
    while not up.stats.connected and time.monotonic() < deadline:
        time.sleep(0.002)
    t_connect = time.time()
    if mode == "live_burst":
        for i in range(0, backlog, 2000):
            writer.append(_events(min(2000, backlog - i), start=i))
    if mode != "during_outage":
        press()
    deadline = time.monotonic() + 90
    sub_t: float | None = None
    while time.monotonic() < deadline:
        if committed and committed[0][0] in acked and committed[0][0] in SUB.received:
            sub_t = SUB.received[committed[0][0]]
            break
        time.sleep(0.002)
    stop.set()
    poller.join(5)
    up.stop()
    th.join(10)
    reader.close()
    writer.close()
    if not committed or sub_t is None:
        return {"error": "alarm not delivered within 90 s"}
    event_id, t_commit, depth = committed[0]
    start = t_connect if mode == "during_outage" else t_press
    return {"depth_at_commit": depth, "from": "connect" if mode == "during_outage" else "press",
            "to_puback_ms": round((acked[event_id] - start) * 1000, 1),
            "to_subscriber_ms": round((sub_t - start) * 1000, 1),
            "press_to_commit_ms": round((t_commit - t_press) * 1000, 1)}


SUB: _AlarmSubscriber

CASES: tuple[tuple[str, float | None, bool, str], ...] = (
    ("two lanes, press after the reconnect", 500.0, True, "after_connect"),
    ("strict order, press at the reconnect", None, True, "after_connect"),
    ("strict order, press at the reconnect, alarms_first=false", None, False, "after_connect"),
    ("two lanes, press during the outage", 500.0, True, "during_outage"),
    ("two lanes, press during the outage, alarms_first=false", 500.0, False, "during_outage"),
    ("two lanes, live burst then press", 500.0, True, "live_burst"),
    ("two lanes, live burst then press, alarms_first=false", 500.0, False, "live_burst"),
)


def run(backlog: int = 10_000, trials: int = 3) -> dict[str, Any]:
    """Every case, `trials` times each; returns the measured figures."""
    global SUB
    out: dict[str, Any] = {"backlog": backlog, "poll_interval_ms": 50, "debounce_ms": 50, "cases": {}}
    with tempfile.TemporaryDirectory() as d, _broker(Path(d)) as port:
        SUB = _AlarmSubscriber(port)
        n = 0
        for name, rate, first, mode in CASES:
            rows = []
            for _ in range(trials):
                n += 1
                rows.append(_trial(Path(d), port, backlog, rate, first, mode, n))
            out["cases"][name] = rows
        SUB.close()
    return out


def main() -> None:
    """Print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backlog", type=int, default=10_000)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    res = run(args.backlog, args.trials)
    print(f"backlog {res['backlog']} events; press = contact closes (50 ms poll, 50 ms debounce)")
    for name, rows in res["cases"].items():
        cells = [r["error"] if "error" in r else
                 f"{r['from']}->PUBACK {r['to_puback_ms']:.0f} ms (depth {r['depth_at_commit']})" for r in rows]
        print(f"{name:58s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
