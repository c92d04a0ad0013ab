"""Does a broker port speak TLS? Asked when plain MQTT was hung up on before CONNACK.

A TLS listener answers a plain CONNECT by closing the connection, which looks exactly like a
3.1.1-only broker hanging up on MQTT 5. One TLS handshake tells them apart: a TLS server answers it
(or refuses it with a TLS alert, e.g. when it wants a client certificate); an MQTT port does not.
No certificate is verified and nothing is sent after the handshake: this only names the likely cause.
"""

from __future__ import annotations

import socket
import ssl

_TIMEOUT_S = 3.0


def speaks_tls(host: str, port: int, timeout_s: float = _TIMEOUT_S) -> bool:
    """True when `host:port` completes (or refuses with a TLS alert) a TLS handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only "is this TLS?", never trust: nothing is sent over it
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw, \
                ctx.wrap_socket(raw, server_hostname=host):
            return True
    except ssl.SSLError as exc:
        # An alert is a TLS server refusing this client; anything else (a plain-text reply read
        # as a record, an EOF mid-handshake) means the port does not speak TLS.
        return "ALERT" in str(exc.reason or exc).upper()
    except OSError:
        return False
