"""Rules between config sections that no one section can check alone (issue 12).

Each rule names the key to fix and says why, so `edgegw config check` (and every daemon, which parses
the same way) refuses a config that would run with a door open:

- the MQTT query door needs MQTT 5 (Response Topic and Correlation Data do not exist in 3.1.1);
- a photo-query threshold at or below zero matches nearly every stored face: remote identification
  of strangers, not a search;
- the HTTP query door bound beyond loopback must have TLS (bearer tokens and decrypted identifiers
  would cross the LAN in clear).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # edge.app.config calls this module while parsing: no import cycle at run time
    from edge.app.config import Config


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def cross_field_problems(cfg: Config) -> list[tuple[tuple[str, ...], str]]:
    """(key path, message) for every cross-section rule the config breaks; [] when it is consistent."""
    problems: list[tuple[tuple[str, ...], str]] = []
    if cfg.query.mqtt.enabled and cfg.mqtt.protocol != "5":
        problems.append((("query", "mqtt", "enabled"),
                         f'the MQTT query door needs MQTT 5 (Response Topic, Correlation Data) but mqtt.protocol is '
                         f'"{cfg.mqtt.protocol}"; set mqtt.protocol = "5" or disable query.mqtt'))
    if cfg.query.photo_threshold <= 0:
        problems.append((("query", "photo_threshold"),
                         f"a photo threshold of {cfg.query.photo_threshold:g} matches nearly every stored face; "
                         f"use the face model's verification threshold (SFace: 0.363)"))
    http = cfg.query.http
    if http.enabled and not _loopback(http.bind) and (http.tls_cert_file is None or http.tls_key_file is None):
        problems.append((("query", "http", "bind"),
                         f"the HTTP query door binds {http.bind} beyond loopback without TLS; set "
                         f"query.http.tls_cert_file and tls_key_file, or bind 127.0.0.1"))
    return problems
