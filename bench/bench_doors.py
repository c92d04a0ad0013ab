"""Issue 12 attacks against the query doors, replayed: how many were tried, how many got through.

    .venv/bin/python bench/bench_doors.py

Builds a throw-away gateway (real SQLite, real audit log, real FastAPI/uvicorn door on loopback,
the real face models for the photo bombs when models/ holds them), then runs the attacks the issue
reproduced and prints one line per attack: tried, refused, and what a refusal looked like. The MQTT
attacks go through the responder's `handle()` (the door's whole logic) without a broker.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import socket
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from edge.app.query import LazyFaceEmbedder  # noqa: E402
from edge.models.config import RuntimeOptions  # noqa: E402
from edge.query.config import HttpConfig, MqttQueryConfig, QueryConfig, RateLimitConfig  # noqa: E402
from edge.query.http import QueryHttpServer  # noqa: E402
from edge.query.mqtt_rr import MqttResponder, door_public_key, recipient, seal_request  # noqa: E402
from edge.query.principals import load_principals  # noqa: E402
from edge.uplink.config import MqttConfig  # noqa: E402
from tests._passages import (  # noqa: E402  (the suite's gateway builder: same stores, same service)
    CARDS,
    INSTALLER,
    MACS,
    ORIGIN,
    PLATFORM,
    POLICE,
    SIGNING_KEYS,
    T0,
    card_obs,
    make_env,
    plate_obs,
    shared_plates,
    write_tokens,
)

DOOR_KEY = os.urandom(32)


def _post(port: int, kind: str, token: str, body: dict[str, Any]) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/query/{kind}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0  # connection dropped: the old door's answer to 1e300


def _png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


def main() -> None:
    rows: list[tuple[str, int, int, str]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        embedder = LazyFaceEmbedder(ROOT / "models", RuntimeOptions(), 0.6, max_megapixels=40)
        env = make_env(tmp, query_cfg=QueryConfig(rate_limit=RateLimitConfig(max_queries=30, per_s=3600)),
                       embedder=embedder)
        plate = shared_plates(1)[0]
        env.commit([plate_obs("cam-plate-n", T0, plate), card_obs("reader-n", T0 + 1, CARDS[0])])
        env.flush()
        tokens = write_tokens(tmp / "tokens.toml")
        principals = load_principals(tmp / "tokens.toml")
        server = QueryHttpServer(env.service, principals, HttpConfig(port=0, request_timeout_s=5))
        server.start()
        port = server.port
        span = {"case_id": "C-1", "from": T0 - 60, "to": T0 + 60}
        try:
            # 1. The platform role identifying people.
            codes = [_post(port, k, tokens[PLATFORM.name], {**span, "officer_id": "D-1", **extra}) for k, extra in (
                ("plate", {"value": plate}), ("card", {"value": CARDS[0]}), ("mac", {"value": MACS[0]}),
                ("photo", {"photo": base64.b64encode(_png(64, 64)).decode()}))]
            rows.append(("platform token: plate/card/MAC/photo queries", 4, codes.count(403), f"HTTP {set(codes)}"))
            # 2. Rotating claimed officer ids behind one unbound token, limit 30/h.
            codes = [_post(port, "range", tokens[INSTALLER.name], {**span, "officer_id": f"o-{i}"}) for i in range(300)]
            rows.append(("300 queries, rotating officer ids (limit 30/h)", 300, codes.count(429),
                         f"{codes.count(200)} granted"))
            # 3. Decompression bombs at the photo door (police token, so they reach the decoder).
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            bomb = _png(100_000, 100_000)
            codes = [_post(port, "photo", tokens[POLICE.name], {**span, "photo": base64.b64encode(bomb).decode()})
                     for _ in range(3)]
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            rows.append((f"{len(bomb)}-byte PNG claiming 100000x100000", 3, codes.count(400),
                         f"peak RSS +{(rss1 - rss0) / 1024:.0f} MB"))
            # 4. Out-of-range times.
            values: list[Any] = [1e300, "1e300", -1e300, "10000-01-01T00:00:00Z", 1e20, "9999-12-31T23:59:59-14:00"]
            codes = [_post(port, "card", tokens[POLICE.name], {**span, "to": v, "value": CARDS[0]}) for v in values]
            rows.append(("times at year >= 10000 / 1e300", len(values), codes.count(400), f"HTTP {set(codes)}"))
            # 5. Slow clients (request_timeout_s = 5 here; 30 by default).
            slow = []
            for _ in range(15):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"POST /v1/query/card HTTP/1.1\r\nHost: x\r\n")
                slow.append(s)
            time.sleep(6.5)
            alive = 0
            for s in slow:
                s.settimeout(0.5)
                try:
                    alive += s.recv(1) != b""
                except TimeoutError:
                    alive += 1
                s.close()
            rows.append(("15 slow clients, still connected after 6.5 s", 15, 15 - alive, f"{alive}/15 connected"))
        finally:
            server.stop()
        # 6. The MQTT door.
        responder = MqttResponder(env.service, principals, MqttConfig(), MqttQueryConfig(enabled=True), ORIGIN,
                                  door_key=DOOR_KEY, nonce_db=tmp / "nonces.db", clock=lambda: T0)
        gateways = {recipient(ORIGIN): door_public_key(DOOR_KEY)}
        reply_to = f"edgegw/{ORIGIN.district}/query/reply/p1"
        own = f"edgegw/{ORIGIN.district}/{ORIGIN.community}/{ORIGIN.gateway}/events/passage"
        query = {"kind": "range", **span}
        published = 0
        for topic in (own, "attacker/inbox", reply_to + "/x"):
            req = seal_request(POLICE.name, SIGNING_KEYS[POLICE.name], query, topic, b"c", gateways=gateways, now=T0)
            published += responder.handle(req.payload, topic, b"c") is not None
        rows.append(("MQTT: reply on own event topic / any topic", 3, 3 - published, "nothing published"))
        answers = []
        for name, key in ((POLICE.name, Ed25519PrivateKey.generate()), ("nobody", Ed25519PrivateKey.generate())):
            req = seal_request(name, key, query, reply_to, b"c", gateways=gateways, now=T0)
            answers.append(json.loads(responder.handle(req.payload, reply_to, b"c") or b"{}"))
        generic = sum(a.get("error", {}).get("message") == "request not accepted" for a in answers)
        rows.append(("MQTT: forged / unknown principal (error text)", 2, generic, "one generic message"))
        req = seal_request(POLICE.name, SIGNING_KEYS[POLICE.name], query, reply_to, b"r", gateways=gateways, now=T0)
        responder.handle(req.payload, reply_to, b"r")
        responder.stop()
        restarted = MqttResponder(env.service, principals, MqttConfig(), MqttQueryConfig(enabled=True), ORIGIN,
                                  door_key=DOOR_KEY, nonce_db=tmp / "nonces.db", clock=lambda: T0)
        again = json.loads(restarted.handle(req.payload, reply_to, b"r") or b"{}")
        restarted.stop()
        rows.append(("MQTT: captured request replayed after a restart", 1,
                     int(again.get("status") == "unauthenticated"), str(again.get("status"))))
        req = seal_request(POLICE.name, SIGNING_KEYS[POLICE.name], {"kind": "plate", **span, "value": plate},
                           reply_to, b"e", gateways=gateways, now=T0)
        restarted = MqttResponder(env.service, principals, MqttConfig(), MqttQueryConfig(enabled=True), ORIGIN,
                                  door_key=DOOR_KEY, nonce_db=tmp / "nonces.db", clock=lambda: T0)
        wire = restarted.handle(req.payload, reply_to, b"e") or b""
        restarted.stop()
        leaked = int(b"C-1" in wire or b"pseudonym" in wire)
        rows.append(("MQTT: subscriber reads case id / pseudonyms in a reply", 1, 1 - leaked, "reply is AES-GCM"))
        env.close()
    width = max(len(r[0]) for r in rows)
    print(f"{'attack':<{width}}  tried  refused  note")
    for name, tried, refused, note in rows:
        print(f"{name:<{width}}  {tried:>5}  {refused:>7}  {note}")
    total_tried = sum(r[1] for r in rows)
    total_refused = sum(r[2] for r in rows)
    print(f"{'total':<{width}}  {total_tried:>5}  {total_refused:>7}")


if __name__ == "__main__":
    main()
