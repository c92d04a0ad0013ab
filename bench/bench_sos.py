"""SOS latency under a backlog: an alarm-column press to the broker while 10,000 events wait.

    .venv/bin/python bench/bench_sos.py [--backlog 10000] [--trials 3]

Real parts throughout: a mosquitto on a free loopback port with a subscriber on the alarm topic,
a SQLite outbox holding the backlog, the uplink daemon's `Uplink` draining it, and an `InputPoller`
(the fake input source, polled every 50 ms with a 50 ms debounce) committing the press through the
privacy boundary. Measured from the moment the contact closes to the PUBACK of the alarm and to the
subscriber's receipt, for three cases:

- `backlog_rate` set (two lanes), backlog from before the reconnect: the press is on the live lane;
- no `backlog_rate` (strict order), the same backlog: the press waits for the drain;
- two lanes, but the 10,000 events are themselves live (a burst committed after the connect).
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


def _trial(tmp: Path, port: int, backlog: int, rate: float | None, live_backlog: bool, n: int) -> dict[str, Any]:
    path = tmp / f"sos-{n}.db"
    if not live_backlog:
        _prefill(path, backlog)
    ob = Outbox(path)
    acked: dict[str, float] = {}

    def on_acked(recs: Any, now: float) -> None:
        for r in recs:
            if r.kind.value == "alarm":
                acked[r.event_id] = now

    up = Uplink(ob, ORIGIN, MqttConfig(port=port, client_id=f"sos-up-{n}"),
                UplinkConfig(window=256, backlog_rate=rate, backoff=BackoffConfig(initial_s=0.05, max_s=0.5)),
                on_acked=on_acked)
    th = threading.Thread(target=up.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 10
    while not up.stats.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    if live_backlog:  # a burst committed after the connect: every row of it is "live"
        for i in range(0, backlog, 2000):
            ob.append(_events(min(2000, backlog - i), start=i))
    boundary = PrivacyBoundary(Pseudonymiser(b"b" * 32), ORIGIN)
    committed: list[str] = []

    def sink(obs: Any) -> None:
        evs = [boundary.to_event(o) for o in obs]
        ob.append(evs)
        committed.extend(e.event_id for e in evs)

    cfg = ModbusInputsConfig(id="io1", port="/dev/null", poll_interval_s=0.05,
                             inputs=[{"id": "sos1", "channel": 0, "meaning": "alarm_column"}])  # type: ignore[list-item]
    fake = FakeInputSource()
    stop = threading.Event()
    poller = InputPoller(cfg, sink, stop, source=fake)
    poller.start()
    time.sleep(0.2)
    depth_at_press = ob.depth()
    t_press = time.time()
    fake.set(0, True)
    deadline = time.monotonic() + 60
    sub_t: float | None = None
    while time.monotonic() < deadline:
        if committed and committed[0] in acked and committed[0] in SUB.received:
            sub_t = SUB.received[committed[0]]
            break
        time.sleep(0.002)
    stop.set()
    poller.join(5)
    up.stop()
    th.join(10)
    ob.close()
    if not committed or sub_t is None:
        return {"error": "alarm not delivered within 60 s"}
    return {"depth_at_press": depth_at_press, "press_to_puback_ms": round((acked[committed[0]] - t_press) * 1000, 1),
            "press_to_subscriber_ms": round((sub_t - t_press) * 1000, 1)}


SUB: _AlarmSubscriber


def run(backlog: int = 10_000, trials: int = 3) -> dict[str, Any]:
    """Every case, `trials` times each; returns the measured figures."""
    global SUB
    out: dict[str, Any] = {"backlog": backlog, "poll_interval_ms": 50, "debounce_ms": 50, "cases": {}}
    with tempfile.TemporaryDirectory() as d, _broker(Path(d)) as port:
        SUB = _AlarmSubscriber(port)
        n = 0
        for name, rate, live in (("two lanes, backlog from before the connect", 500.0, False),
                                 ("strict order (no backlog_rate)", None, False),
                                 ("two lanes, backlog itself live (burst)", 500.0, True)):
            rows = []
            for _ in range(trials):
                n += 1
                rows.append(_trial(Path(d), port, backlog, rate, live, n))
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
    for name, rows in res["cases"].items():
        print(f"{name:45s} " + "  ".join(
            f"depth {r.get('depth_at_press')}: puback {r.get('press_to_puback_ms')} ms, sub {r.get('press_to_subscriber_ms')} ms"
            if "error" not in r else r["error"] for r in rows))


if __name__ == "__main__":
    main()
