"""The simulated gateways' fast event encoder makes exactly what a gateway would publish."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from district.loadgen import SimGateway, _Pending
from district.messages import EventRow, parse
from district.simulate import event, event_maker, payload, sources
from edge.events import encode, iso_ms, validate


@pytest.mark.parametrize("source", [*sources(4), "src9"])
def test_event_maker_bytes_are_the_canonical_encoding_of_a_valid_event(source: str) -> None:
    make = event_maker("dl-gjz", "c0001", "gw00001", source, 1764000000000)
    kind = event("dl-gjz", "c0001", "gw00001", source, 1, 1)["kind"]
    seen = set()
    now = time.time()
    # Across second and millisecond boundaries, and seqs whose aggregate count wraps (seq % 50).
    for i, seq in enumerate((1, 2, 49, 50, 51, 999, 1000, 123456789)):
        t = now + i * 0.4999
        event_id, body = make(seq, t)
        obj = json.loads(body)
        validate(obj)
        assert encode(obj) == body  # key-sorted compact JSON, as edge.events.encode makes it
        assert obj["event_id"] == event_id and event_id not in seen
        seen.add(event_id)
        # The id's time is the event's (or, edge.ids keeping a process's ids increasing, a little later).
        assert uuid.UUID(event_id).version == 7 and 0 <= (uuid.UUID(event_id).int >> 80) - int(t * 1000) < 5000
        assert obj["seq"] == seq and obj["ts"] == iso_ms(int(t * 1000) / 1000) and obj["kind"] == kind
        assert (obj["source"], obj["boot"], obj["gateway"]) == (source, 1764000000000, "gw00001")
        # Everything else is what event() makes for this source (the subject's ref is random).
        ref = event("dl-gjz", "c0001", "gw00001", source, 1764000000000, seq, ts=t)
        for key in ("event_id", "ts"):
            ref.pop(key), obj.pop(key)
        if "subject" in ref:
            assert set(obj["subject"]) == set(ref["subject"]) and obj["subject"]["ref"] != ref["subject"]["ref"]
            ref.pop("subject"), obj.pop("subject")
        assert obj == ref
        parsed = parse(f"edgegw/dl-gjz/c0001/gw00001/events/{kind}", payload(json.loads(body)))
        assert isinstance(parsed, EventRow)


def test_a_simulated_gateway_publishes_its_events_on_their_kind_topics() -> None:
    gw = SimGateway("127.0.0.1", (1,), "dl-gjz", "c0002", "gw00002")
    for _ in range(8):
        (source, seq), p = gw.make_event()
        obj = json.loads(p.body)
        assert p.topic == f"edgegw/dl-gjz/c0002/gw00002/events/{obj['kind']}"
        assert (obj["source"], obj["seq"]) == (source, seq)
        assert isinstance(parse(p.topic, p.body), EventRow)
    assert gw.seq == dict.fromkeys(sources(4), 2)
    assert len(set(gw.event_ids)) == 8


def _recording_send(gw: SimGateway, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    sent: list[tuple[str, int]] = []

    async def send(key: tuple[str, int], p: _Pending) -> None:
        sent.append(key)
        p.sent, p.attempts = time.monotonic(), p.attempts + 1

    monkeypatch.setattr(gw, "_send", send)
    return sent


def test_a_simulated_gateway_holds_its_resends_until_a_watermark_moves_past_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gw = SimGateway("127.0.0.1", (1,), "dl-gjz", "c0003", "gw00003", ack_timeout_s=3.0)
    assert gw.resend_hold_s == 24.0  # the uplink's default: 8 x the timeout
    sent = _recording_send(gw, monkeypatch)
    now = time.monotonic()
    (k1, p1), (k2, p2), (k3, _p3) = gw.make_event(), gw.make_event(), gw.make_event()
    # k1 went out 5 s ago, k2 6 s ago (both overdue), k3 was never sent on this connection.
    p1.sent, p1.attempts = now - 5, 1
    p2.sent, p2.attempts = now - 6, 1
    asyncio.run(gw.resend_due())
    assert sent == [k3] and gw.stats.resent == 0  # no mark has moved: the platform is away, k1 and k2 wait
    # A mark covers k1 (sent at now - 5): k2, sent before it and still uncovered, was lost on the way.
    gw._on_message(f"{gw.base}/ack", json.dumps({"boot": gw.boot, "marks": {k1[0]: k1[1]}}).encode())
    assert k1 not in gw.pending
    asyncio.run(gw.resend_due())
    assert sent == [k3, k2] and gw.stats.resent == 1


def test_a_simulated_gateways_hold_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = SimGateway("127.0.0.1", (1,), "dl-gjz", "c0004", "gw00004", ack_timeout_s=3.0, resend_hold_s=10.0)
    sent = _recording_send(gw, monkeypatch)
    now = time.monotonic()
    (k1, p1), (k2, p2) = gw.make_event(), gw.make_event()
    p1.sent, p1.attempts = now - 11, 1  # past the 10 s bound: out again though no mark moved
    p2.sent, p2.attempts = now - 9, 1  # overdue, still inside the bound
    asyncio.run(gw.resend_due())
    assert sent == [k1] and gw.stats.resent == 1
    # No hold at all: every overdue event goes out at its timeout, as before the hold.
    gw.resend_hold_s = 0.0
    asyncio.run(gw.resend_due())
    assert sent == [k1, k2] and gw.stats.resent == 2
