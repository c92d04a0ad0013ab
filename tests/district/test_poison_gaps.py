"""Poison payloads are rejected with a reason and never stall ingest; gaps get replay requests; status
floors close gaps the gateway can no longer fill; a broker ACL keeps each gateway to its own topics."""

from __future__ import annotations

import getpass
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from district.config import load_config
from district.mqtt_worker import MqttIngestWorker
from district.simulate import event, payload
from tests._chaos import wait_until
from tests._mqtt import Collector
from tests.conftest import Broker, free_port
from tests.district.conftest import Database, district_config

D, C = "dl-gjz", "c0007"


@pytest.fixture
def ingest(tmp_path: Path, pg: Database, broker: Broker) -> Iterator[MqttIngestWorker]:
    """An ingest worker running in a thread of the test process."""
    cfg = load_config(district_config(tmp_path, database={"dsn": pg.dsn}, mqtt={"port": broker.port},
                                      ingest={"max_payload_bytes": 8192}))
    w = MqttIngestWorker(cfg, client_id="t-worker")
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    assert w._connected.wait(10)
    time.sleep(0.3)  # SUBACK
    yield w
    w.stop()
    t.join(10)


def _client(port: int, cid: str, user: str | None = None, password: str | None = None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    if user:
        c.username_pw_set(user, password)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _send(c: mqtt.Client, topic: str, body: bytes | str) -> Any:
    info = c.publish(topic, body, qos=1)
    info.wait_for_publish(10)
    return info


def test_poison_payloads_are_rejected_with_reasons_and_never_stall(pg: Database, broker: Broker,
                                                                   ingest: MqttIngestWorker) -> None:
    c = _client(broker.port, "gw-poison")
    base = f"edgegw/{D}/{C}/gw01"
    good1 = event(D, C, "gw01", "reader1", 7, 1)
    bad_schema = event(D, C, "gw01", "reader1", 7, 2)
    bad_schema["attrs"]["plate_text"] = "辽B12345"  # an undeclared attribute: what the schema exists to stop
    forged = event(D, C, "gw02", "reader1", 7, 1)  # names gw02, arrives on gw01's topic
    nul = event(D, C, "gw01", "sniffer1", 7, 1, kind="alarm")
    nul["attrs"] = {"code": "x", "message": "a\u0000b"}
    wrong_kind = event(D, C, "gw01", "reader1", 7, 3)
    try:
        _send(c, f"{base}/events/card_swipe", b"{not json")
        _send(c, f"{base}/events/card_swipe", json.dumps(bad_schema))
        _send(c, f"{base}/events/card_swipe", b"[" * 20_000)  # over the 8 KiB limit
        _send(c, f"{base}/events/card_swipe", json.dumps(forged))
        _send(c, f"{base}/events/alarm", json.dumps(nul))
        _send(c, f"{base}/events/alarm", json.dumps(wrong_kind))
        _send(c, f"{base}/events/card_swipe/extra", payload(good1))
        _send(c, f"{base}/events/card_swipe", payload(good1))
        good2 = event(D, C, "gw01", "reader1", 7, 2)
        _send(c, f"{base}/events/card_swipe", payload(good2))
        assert wait_until(lambda: pg.scalar("SELECT count(*) FROM events") == 2, 20)
        assert wait_until(lambda: pg.scalar("SELECT count(*) FROM rejects") == 7, 20)
    finally:
        c.loop_stop()
        c.disconnect()
    reasons = [str(r[0]) for r in pg.query("SELECT reason FROM rejects ORDER BY id")]
    assert "not valid UTF-8 JSON" in reasons[0]
    assert "fails schema v1 at attrs" in reasons[1] and "辽B" not in reasons[1]
    assert "exceeds the 8192-byte limit" in reasons[2]
    assert "another gateway than its topic" in reasons[3]
    assert "NUL" in reasons[4]
    assert "kind differs" in reasons[5]
    assert "neither" in reasons[6]
    # The raw plate of the bad payload is nowhere in the database: rejects keep a digest, not the body.
    assert pg.scalar("SELECT count(*) FROM rejects WHERE length(payload_sha256) = 64") == 7
    # The valid events after the poison ones were stored and their watermark advanced.
    assert pg.scalar("SELECT seq FROM marks WHERE source = 'reader1' AND boot = 7") == 2
    assert ingest.core.stats.rejected == 7


def test_gap_gets_a_replay_request_then_closes(pg: Database, broker: Broker, ingest: MqttIngestWorker) -> None:
    base = f"edgegw/{D}/{C}/gw03"
    watch = Collector("127.0.0.1", broker.port, f"{base}/#", client_id="gw03-side")
    c = _client(broker.port, "gw03")
    try:
        for seq in (1, 2, 4, 5):
            _send(c, f"{base}/events/card_swipe", payload(event(D, C, "gw03", "reader1", 9, seq)))
        assert wait_until(lambda: any(m.topic == f"{base}/replay" for m in watch.messages), 15)
        replay = next(m.json() for m in watch.messages if m.topic == f"{base}/replay")
        assert {k: replay[k] for k in ("boot", "source", "from", "to")} == {"boot": 9, "source": "reader1",
                                                                          "from": 3, "to": 3}
        acks = [m.json() for m in watch.messages if m.topic == f"{base}/ack"]
        assert acks[-1] == {"boot": 9, "marks": {"reader1": 2}}
        _send(c, f"{base}/events/card_swipe", payload(event(D, C, "gw03", "reader1", 9, 3)))
        assert wait_until(lambda: [m.json() for m in watch.messages if m.topic == f"{base}/ack"][-1]
                          == {"boot": 9, "marks": {"reader1": 5}}, 15)
        assert pg.scalar("SELECT gap_since FROM marks WHERE gateway = 'gw03'") is None
        # A tail gap (nothing after it arrives) shows in the status's seq.last, and is asked for too.
        status = {"online": True, "gateway": "gw03", "boot": 9, "outbox_depth": 3,
                  "seq": {"last": {"reader1": 8}, "floor": {"reader1": 6}},
                  "components": {"capture": {"audit_head": {"seq": 12, "hash": "ab" * 32}}}}
        _send(c, f"{base}/status", json.dumps(status))
        assert wait_until(lambda: sum(m.topic == f"{base}/replay" for m in watch.messages) >= 2, 15)
        tail = [m.json() for m in watch.messages if m.topic == f"{base}/replay"][-1]
        assert (tail["from"], tail["to"]) == (6, 8)
        row = pg.query("SELECT online, outbox_depth, audit_seq, audit_hash FROM gateway_status WHERE gateway = 'gw03'")
        assert row == [(True, 3, 12, "ab" * 32)]
        # The gateway dropped 6..7 (quota): its floor moves to 8; the mark follows and the gap is recorded.
        status["seq"] = {"last": {"reader1": 8}, "floor": {"reader1": 8}}
        _send(c, f"{base}/status", json.dumps(status))
        assert wait_until(lambda: pg.query("SELECT seq_from, seq_to FROM gaps WHERE gateway = 'gw03'") == [(6, 7)], 15)
        assert wait_until(lambda: [m.json() for m in watch.messages if m.topic == f"{base}/ack"][-1]
                          == {"boot": 9, "marks": {"reader1": 7}}, 15)
    finally:
        c.loop_stop()
        c.disconnect()
        watch.close()


def test_broker_acl_keeps_each_gateway_to_its_own_topics(tmp_path: Path, pg: Database) -> None:
    from tests.conftest import Broker as MBroker

    port = free_port()
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "gw01", "pw-gw01"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "ingest", "pw-ingest"], check=True)
    acl = tmp_path / "acl"
    acl.write_text((Path(__file__).resolve().parents[2] / "docs" / "district-mosquitto.acl").read_text())
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
                    f"acl_file {acl}\npersistence false\nuser {getpass.getuser()}\n")
    b = MBroker("127.0.0.1", port, conf)
    b.start()
    cfg = load_config(district_config(tmp_path, database={"dsn": pg.dsn},
                                      mqtt={"port": port, "username": "ingest",
                                            "password_file": str(tmp_path / "ingest.pw")}))
    (tmp_path / "ingest.pw").write_text("pw-ingest\n")
    w = MqttIngestWorker(cfg, client_id="acl-worker")
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    c = _client(port, "gw01", "gw01", "pw-gw01")
    try:
        assert w._connected.wait(10)
        time.sleep(0.3)
        own = _send(c, f"edgegw/{D}/{C}/gw01/events/card_swipe", payload(event(D, C, "gw01", "reader1", 1, 1)))
        other = _send(c, f"edgegw/{D}/{C}/gw02/events/card_swipe", payload(event(D, C, "gw02", "reader1", 1, 1)))
        assert own.rc == mqtt.MQTT_ERR_SUCCESS
        assert wait_until(lambda: pg.scalar("SELECT count(*) FROM events") == 1, 15)
        time.sleep(0.5)
        assert pg.query("SELECT gateway FROM events") == [("gw01",)]
        assert other.is_published()  # QoS 1 to a denied topic: the broker acknowledges and discards it
    finally:
        c.loop_stop()
        c.disconnect()
        w.stop()
        t.join(10)
        b.stop()
