"""Plain MQTT sent to a TLS port names TLS as the likely cause, and does not fall back to 3.1.1 (issue 17).

A TLS listener answers a plain CONNECT by closing the connection (after a TLS alert, or nothing),
which looked exactly like a 3.1.1-only broker hanging up on MQTT 5: the uplink said "falling back to
MQTT 3.1.1" and never mentioned TLS. Now a connection closed before CONNACK on plain TCP is checked
with a TLS handshake, and the error says the port speaks TLS and which setting to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.types import Origin
from edge.uplink.config import MqttConfig
from edge.uplink.session import BrokerSession
from edge.uplink.stats import UplinkStats
from tests._chaos import ORIGIN, free_port, make_ca, mosquitto  # noqa: F401  (fixture)


def _session(port: int, **mqtt: Any) -> BrokerSession:
    cfg = MqttConfig(host="127.0.0.1", port=port, **mqtt)
    return BrokerSession(cfg, Origin(*ORIGIN), "edgegw/status", UplinkStats())


def test_plain_mqtt_to_a_tls_port_names_tls_and_keeps_mqtt5(tmp_path: Path, mosquitto: Any) -> None:  # noqa: F811
    ca, cert, key = make_ca(tmp_path, "district")
    port = free_port()
    mosquitto("", port=port, listener=f"listener {port} 127.0.0.1\nallow_anonymous true\n"
              f"certfile {cert}\nkeyfile {key}\n")
    session = _session(port)
    errors = []
    for _ in range(3):  # three attempts: twice closed before CONNACK used to trigger the fallback
        assert session.connect(lambda _m, _r: None, lambda _m: None) is None
        errors.append(str(session.stats.last_error))
    assert session.protocol == "5", errors  # no 3.1.1 guess: the protocol version is not the problem
    assert all("speaks TLS" in e and "mqtt.tls" in e for e in errors), errors
    assert not any("3.1.1" in e for e in errors), errors
    # The probe (`edgegw check`) says the same.
    assert "speaks TLS" in str(_session(port).probe())
    # With TLS configured the same port works, so the hint pointed at the right fix.
    good = _session(port, tls={"ca_file": str(ca)})
    client = good.connect(lambda _m, _r: None, lambda _m: None)
    assert client is not None
    client.disconnect()


def test_a_plain_port_that_hangs_up_still_falls_back_without_a_tls_hint(tmp_path: Path) -> None:
    # A server that accepts and closes at once (no TLS): the old 3.1.1 guess still applies.
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.recv(1024)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        session = _session(port)
        for _ in range(2):
            assert session.connect(lambda _m, _r: None, lambda _m: None) is None
        assert session.protocol == "3.1.1"
        assert "TLS" not in str(session.stats.last_error)
    finally:
        srv.close()
