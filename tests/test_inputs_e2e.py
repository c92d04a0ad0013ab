"""End to end: an SOS button on a Modbus RTU module (pymodbus' server on a real pty) to a subscriber.

InputPoller → Committer (privacy boundary, schema) → SQLite outbox → Uplink → mosquitto → the
platform's subscriber, with a backlog of older events in the outbox ahead of the press.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from drivers.inputs.config import ModbusInputsConfig
from drivers.inputs.poller import InputPoller
from edge.configbase import BackoffConfig
from edge.outbox import Outbox
from edge.pipeline.commit import Committer
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.uplink.uplink import Uplink
from tests._events import ORIGIN, events
from tests._modbus_sim import ModuleSim
from tests._mqtt import Collector
from tests._ptypair import PtyPair
from tests.conftest import Broker

FAST = BackoffConfig(initial_s=0.05, max_s=0.2)


def test_sos_press_reaches_the_platform_ahead_of_the_backlog(tmp_path: Path, broker: Broker) -> None:
    pair = PtyPair()
    sim = ModuleSim(pair.b).start()
    ob_capture = Outbox(tmp_path / "outbox.db")  # the capture daemon's connection
    for _ in range(100):
        ob_capture.append(events())  # 800 older events of every kind, waiting for the broker
    committer = Committer(ob_capture, PrivacyBoundary(Pseudonymiser(b"k" * 32), ORIGIN), FAST)
    stop = threading.Event()
    cfg = ModbusInputsConfig.model_validate({
        "id": "io-gate1", "port": pair.a, "baud": 115200, "poll_interval_s": 0.02, "timeout_s": 0.3,
        "backoff": {"initial_s": 0.05, "max_s": 0.1},
        "inputs": [{"id": "sos-east", "channel": 0, "meaning": "alarm_column"},
                   {"id": "door-guardroom", "channel": 1, "meaning": "door_contact", "contact": "nc"}]})
    sim.closed[1] = True  # the guardroom door is shut
    poller = InputPoller(cfg, lambda obs: committer.commit(obs, stop), stop)
    poller.start()
    sub = Collector(broker.host, broker.port, "edgegw/+/+/+/events/#")
    try:
        sim.closed[0] = True  # pressed while the uplink is down: committed behind the backlog
        deadline = time.monotonic() + 15
        while committer.committed < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert committer.committed == 1
        ob_uplink = Outbox(tmp_path / "outbox.db")  # the uplink daemon's own connection
        up = Uplink(ob_uplink, ORIGIN, MqttConfig(host=broker.host, port=broker.port),
                    UplinkConfig(window=8, backoff=FAST))
        up.run(until_empty=True, idle_exit_s=0.3)
        got = sub.wait_for(801)
    finally:
        stop.set()
        poller.join(5)
        sim.stop()
        pair.close()
    alarms = [m.json() for m in got if m.topic.endswith("/events/alarm")]
    sos = [a for a in alarms if a["attrs"].get("code") == "alarm_column"]
    assert len(sos) == 1
    assert sos[0]["source"] == "io-gate1" and "subject" not in sos[0]
    assert sos[0]["attrs"] == {"code": "alarm_column", "state": "raised", "input": "sos-east",
                               "meaning": "alarm_column", "severity": "critical", "message": "alarm column pressed"}
    order = [m.json()["event_id"] for m in got]
    # Alarms go first: the backlog's own alarms (in commit order), then the press, then the rest.
    first_non_alarm = next(i for i, m in enumerate(got) if not m.topic.endswith("/events/alarm"))
    assert order.index(sos[0]["event_id"]) < first_non_alarm
    assert ob_uplink.depth() == 0
    ob_uplink.close()
    ob_capture.close()
    sub.close()
