"""Chaos 5: the broker refuses the gateway's credentials, or presents a certificate it cannot trust.

Each time: a clear error in the recorded status and in the daemon's log, retries with growing
(jittered) delays rather than a hot loop, nothing lost; once the broker side is fixed, the same
running daemon connects by itself and delivers everything.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from edge.outbox import Outbox
from tests._chaos import (
    Subscriber,
    free_port,
    gateway_config,
    make_ca,
    mosquitto,  # noqa: F401  (fixture)
    outbox_depth,
    producer,
    uplink_daemon,
    uplink_state,
    wait_until,
)


def _commit(db: Path, tmp_path: Path, n: int) -> set[str]:
    prod = producer(db, tmp_path, "--count", str(n), "--batch", "10")
    assert prod.wait(60) == 0
    prod.stop()
    return set(prod.ids())


def _assert_backs_off(db: Path, seconds: float) -> None:
    """Attempts grow far slower than a hot loop would: backoff 0.05 s doubling up to 0.5 s."""
    a0 = int(uplink_state(db).get("attempts", 0))
    time.sleep(seconds)
    a1 = int(uplink_state(db).get("attempts", 0))
    assert 1 <= a1 - a0 <= seconds / 0.25 + 1, (a0, a1)


def test_refused_credentials_clear_error_backoff_nothing_lost_then_recovers(tmp_path: Path,
                                                                            mosquitto: Any) -> None:  # noqa: F811
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "gw01", "the-old-password"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "platform", "platform-secret"], check=True)
    port = free_port()
    broker = mosquitto(f"password_file {passwd}\n", port=port,
                       listener=f"listener {port} 127.0.0.1\nallow_anonymous false\n")
    sub = Subscriber(port, client_id="platform", username="platform", password="platform-secret")
    (tmp_path / "mqtt.pass").write_text("the-new-password\n")
    (tmp_path / "mqtt.pass").chmod(0o600)  # a secret: a 0644 password file is refused (issue 12)
    db = tmp_path / "outbox.db"
    acked = _commit(db, tmp_path, 200)
    up = uplink_daemon(gateway_config(tmp_path, broker.port, mqtt={"username": "gw01",
                                                                   "password_file": str(tmp_path / "mqtt.pass")}),
                       tmp_path)
    try:
        assert wait_until(lambda: "refused the credentials" in str(uplink_state(db).get("last_error")), 20), \
            up.log_path.read_text()[-2000:]
        state = uplink_state(db)
        assert state["connected"] is False and "mqtt.password_file" in state["last_error"]
        _assert_backs_off(db, 1.5)
        log = up.log_path.read_text()
        assert "uplink: broker refused the credentials (" in log
        assert log.count("refused the credentials") == 1  # logged once, not once per retry
        assert "the-new-password" not in log and "the-old-password" not in log
        ob = Outbox(db)
        assert ob.depth() == len(acked)  # nothing lost, nothing dropped
        ob.close()
        # The district rotates the password on its side: the running uplink gets in and drains.
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), "gw01", "the-new-password"], check=True)
        broker.reload()
        assert wait_until(lambda: uplink_state(db).get("connected") is True, 20)
        assert not sub.wait_for(acked, 30)
        assert wait_until(lambda: outbox_depth(db) == 0, 20)
    finally:
        up.stop()
        sub.close()
    ob = Outbox(db)
    assert ob.counters()["delivered"] == len(acked)
    ob.close()


def test_untrusted_broker_certificate_clear_error_then_recovers_when_fixed(tmp_path: Path,
                                                                           mosquitto: Any) -> None:  # noqa: F811
    good_ca, good_cert, good_key = make_ca(tmp_path, "district")
    _, rogue_cert, rogue_key = make_ca(tmp_path, "rogue")
    tls_port, plain_port = free_port(), free_port()

    store = tmp_path / "broker-store"
    store.mkdir()
    listeners = (f"per_listener_settings true\nlistener {tls_port} 127.0.0.1\nallow_anonymous true\n"
                 f"certfile {rogue_cert}\nkeyfile {rogue_key}\n"
                 f"listener {plain_port} 127.0.0.1\nallow_anonymous true\n")
    broker = mosquitto(f"persistence true\npersistence_location {store}/\n", port=tls_port, listener=listeners)
    # The platform reads on a plain listener, on a persistent session that survives the broker's restart.
    sub = Subscriber(plain_port, client_id="platform", persistent=True)
    db = tmp_path / "outbox.db"
    acked = _commit(db, tmp_path, 200)
    cfg = gateway_config(tmp_path, tls_port, mqtt={"tls": {"ca_file": str(good_ca)}})
    up = uplink_daemon(cfg, tmp_path)
    try:
        assert wait_until(lambda: "TLS" in str(uplink_state(db).get("last_error")), 20), \
            up.log_path.read_text()[-2000:]
        err = str(uplink_state(db)["last_error"])
        assert f"certificate of broker 127.0.0.1:{tls_port} failed verification" in err
        assert "unable to get local issuer certificate" in err and "mqtt.tls.ca_file" in err
        _assert_backs_off(db, 1.5)
        assert "TLS: the certificate of broker" in up.log_path.read_text()
        assert outbox_depth(db) == len(acked)
        assert not sub.ids()
        # The broker gets its proper certificate: the running uplink connects and delivers everything.
        broker.terminate()
        broker.conf.write_text(broker.conf.read_text().replace(str(rogue_cert), str(good_cert))
                               .replace(str(rogue_key), str(good_key)))
        broker.start()
        assert not sub.wait_for(acked, 30)
        assert outbox_depth(db) == 0 or wait_until(lambda: outbox_depth(db) == 0, 10)
    finally:
        up.stop()
        sub.close()
