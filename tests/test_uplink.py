"""The uplink against a real mosquitto: delivery, PUBACK deletion, outage buffering, 3.1.1, status."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from edge.configbase import BackoffConfig
from edge.outbox import Outbox
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.uplink.uplink import Uplink
from tests._events import ORIGIN, assert_no_raw_identifiers, events
from tests._mqtt import Collector
from tests.conftest import Broker

FAST = UplinkConfig(window=16, backoff=BackoffConfig(initial_s=0.05, max_s=0.3), status_interval_s=0.5)


def _uplink(ob: Outbox, broker: Broker, protocol: str = "5", cfg: UplinkConfig = FAST) -> Uplink:
    return Uplink(ob, ORIGIN, MqttConfig(host=broker.host, port=broker.port, protocol=protocol),  # type: ignore[arg-type]
                  cfg)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_delivers_everything_and_deletes_after_puback(tmp_path: Path, broker: Broker, protocol: str) -> None:
    ob = Outbox(tmp_path / "o.db")
    sent = [r for _ in range(25) for r in ob.append(events()).records]
    col = Collector(broker.host, broker.port)
    up = _uplink(ob, broker, protocol)
    up.run(until_empty=True, idle_exit_s=0.2)
    got = col.wait_for(len(sent))
    col.close()
    assert ob.depth() == 0
    assert sorted(m.json()["event_id"] for m in got) == sorted(r.event_id for r in sent)
    assert all(m.topic.startswith("edgegw/dl-district/c0001/gw01/events/") for m in got)
    seqs = [m.json()["seq"] for m in got if m.json()["source"] == "reader1"]
    assert seqs == sorted(seqs) == list(range(1, 26))  # per-source order kept, no gaps
    assert_no_raw_identifiers([m.payload for m in col.messages])
    if protocol == "5":
        assert all(0 < m.properties["MessageExpiryInterval"] <= 30 * 86400 for m in got)


def test_buffers_while_broker_down_then_drains(tmp_path: Path, broker: Broker) -> None:
    ob = Outbox(tmp_path / "o.db")
    broker.stop()
    up = _uplink(ob, broker)
    t = threading.Thread(target=up.run, daemon=True)
    t.start()
    sent = [r for _ in range(10) for r in ob.append(events()).records]
    time.sleep(1.0)
    assert ob.depth() == len(sent)  # nothing dropped while unreachable
    assert up.stats.last_error and "cannot reach broker" in up.stats.last_error
    broker.start()
    col = Collector(broker.host, broker.port)
    deadline = time.monotonic() + 20
    while ob.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
    up.stop()
    t.join(10)
    got = {m.json()["event_id"] for m in col.wait_for(len(sent))}
    col.close()
    # Messages published before the collector subscribed are lost to it, not to the broker; so check
    # the outbox drained and that whatever the collector saw is a subset of what was committed.
    assert ob.depth() == 0
    assert got <= {r.event_id for r in sent}


def test_status_is_retained_with_depth_and_offline_on_clean_stop(tmp_path: Path, broker: Broker) -> None:
    ob = Outbox(tmp_path / "o.db")
    ob.put_status("capture", {"cameras": {"cam1": {"state": "connected"}}})
    up = _uplink(ob, broker)
    t = threading.Thread(target=up.run, daemon=True)
    t.start()
    col = Collector(broker.host, broker.port, topic=up.status_topic, client_id="status-watch")
    deadline = time.monotonic() + 10
    while not any(json.loads(m.payload).get("online") for m in col.messages) and time.monotonic() < deadline:
        time.sleep(0.05)
    up.stop()
    t.join(10)
    time.sleep(0.3)
    bodies = [json.loads(m.payload) for m in col.messages]
    col.close()
    assert bodies[0]["online"] is True and "outbox_depth" in bodies[0]
    assert bodies[0]["components"]["capture"]["cameras"]["cam1"]["state"] == "connected"
    assert bodies[-1]["online"] is False
    late = Collector(broker.host, broker.port, topic=up.status_topic, client_id="late")
    time.sleep(0.3)
    assert late.messages and late.messages[-1].retain and json.loads(late.messages[-1].payload)["online"] is False
    late.close()


def test_final_retained_status_counts_what_was_delivered(tmp_path: Path, broker: Broker) -> None:
    ob = Outbox(tmp_path / "o.db")
    sent = [r for _ in range(4) for r in ob.append(events()).records]
    up = _uplink(ob, broker)
    up.run(until_empty=True, idle_exit_s=0.2)
    late = Collector(broker.host, broker.port, topic=up.status_topic, client_id="final-status")
    deadline = time.monotonic() + 5
    while not late.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    late.close()
    body = json.loads(late.messages[-1].payload)
    assert body["online"] is False and body["delivered"] == len(sent) > 0
    # Not the snapshot taken when the uplink connected (published 0): the final counts.
    assert body["components"]["uplink"]["published"] == len(sent)
    assert body["components"]["uplink"]["acked"] == len(sent)


def test_refused_credentials_are_reported_and_retried(tmp_path: Path, broker: Broker) -> None:
    broker.stop()
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    ob = Outbox(tmp_path / "o.db")
    ob.append(events())
    up = _uplink(ob, broker)
    t = threading.Thread(target=up.run, daemon=True)
    t.start()
    time.sleep(1.0)
    up.stop()
    t.join(10)
    assert up.stats.connects == 0
    assert up.stats.last_error and "refused" in up.stats.last_error
    assert ob.depth() == 8
    assert ob.get_status()["uplink"]["last_error"] == up.stats.last_error
