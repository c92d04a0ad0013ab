"""Simulated gateways multiplexed on asyncio: hundreds of MQTT clients in one process.

A thread per paho client stops scaling at about 200 clients on a small machine; here each gateway is
a coroutine on one event loop with a minimal MQTT 3.1.1 client (CONNECT, PUBLISH QoS 1, PUBACK,
SUBSCRIBE, PINGREQ), which both mosquitto and RabbitMQ's MQTT plugin speak. Each simulated gateway
behaves like the real uplink in end-to-end mode: it keeps every event until the platform's
watermark covers it, resends what the watermark has not covered after `ack_timeout_s` (held, like
the uplink's, while no watermark has moved past it: the platform is away, not the messages), answers
replay requests, and publishes a retained status with `seq.last` and `seq.floor`. What it measures:
event → committed latency (creation until the watermark covering it arrives) and what never got
covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from district.simulate import EventMaker, event, event_maker, sources

log = logging.getLogger(__name__)


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _remaining_length(len(body)) + body


def _seen(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


class MqttLite:
    """A minimal asyncio MQTT 3.1.1 client: enough for a simulated gateway, nothing more."""

    def __init__(self, host: str, port: int, client_id: str, *, keepalive: int = 30,
                 on_message: Callable[[str, bytes], None] | None = None) -> None:
        self.host, self.port, self.client_id, self.keepalive = host, port, client_id, keepalive
        self.on_message = on_message or (lambda _t, _p: None)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pid = 0
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ping: asyncio.Task[None] | None = None
        self.connected = False

    async def connect(self, *, will: tuple[str, bytes] | None = None, username: str | None = None,
                      password: str | None = None) -> None:
        """Open the connection and wait for CONNACK (raises ConnectionError if refused)."""
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        flags = 0x02  # clean session: the outbox, not the broker session, is what is relied on
        body_tail = _string(self.client_id)
        if will:
            flags |= 0x04 | 0x08 | 0x20  # will, will QoS 1, will retain
            body_tail += _string(will[0]) + struct.pack("!H", len(will[1])) + will[1]
        if username:
            flags |= 0x80
            body_tail += _string(username)
        if password:
            flags |= 0x40
            body_tail += _string(password)
        self._writer.write(_packet(0x10, _string("MQTT") + bytes([4, flags]) + struct.pack("!H", self.keepalive)
                                   + body_tail))
        await self._writer.drain()
        head = await self._reader.readexactly(4)
        if head[0] != 0x20 or head[3] != 0:
            raise ConnectionError(f"broker refused {self.client_id}: CONNACK code {head[3]}")
        self.connected = True
        self._task = asyncio.create_task(self._read_loop())
        self._ping = asyncio.create_task(self._ping_loop())

    def _next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def subscribe(self, topic: str) -> None:
        """SUBSCRIBE at QoS 1 and wait for SUBACK."""
        pid = self._next_pid()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[pid] = fut
        self._send(_packet(0x82, struct.pack("!H", pid) + _string(topic) + b"\x01"))
        await fut

    def publish(self, topic: str, body: bytes, *, retain: bool = False) -> asyncio.Future[None]:
        """PUBLISH at QoS 1; the future completes on PUBACK."""
        pid = self._next_pid()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[pid] = fut
        # Status publishes are fire-and-forget: mark a lost connection's error as seen, so asyncio
        # does not report "Future exception was never retrieved" for them.
        fut.add_done_callback(_seen)
        self._send(_packet(0x32 | (0x01 if retain else 0), _string(topic) + struct.pack("!H", pid) + body))
        return fut

    def _send(self, data: bytes) -> None:
        if self._writer is None or not self.connected:
            raise ConnectionError("not connected")
        self._writer.write(data)

    async def drain(self) -> None:
        """Wait until the socket buffer has room (backpressure)."""
        if self._writer is not None:
            await self._writer.drain()

    async def _ping_loop(self) -> None:
        while self.connected:
            await asyncio.sleep(self.keepalive / 2)
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._send(b"\xc0\x00")

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                first = (await self._reader.readexactly(1))[0]
                mult, length = 1, 0
                while True:
                    b = (await self._reader.readexactly(1))[0]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    if not b & 0x80:
                        break
                data = await self._reader.readexactly(length) if length else b""
                kind = first & 0xF0
                if kind in (0x40, 0x90):  # PUBACK, SUBACK
                    fut = self._waiting.pop(struct.unpack("!H", data[:2])[0], None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                elif kind == 0x30:
                    qos = (first >> 1) & 0x03
                    tlen = struct.unpack("!H", data[:2])[0]
                    topic = data[2:2 + tlen].decode()
                    pos = 2 + tlen
                    if qos:
                        self._send(_packet(0x40, data[pos:pos + 2]))
                        pos += 2
                    self.on_message(topic, data[pos:])
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.connected = False
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection lost"))
            self._waiting.clear()

    async def close(self) -> None:
        """DISCONNECT and close."""
        if self._writer is not None:
            with contextlib.suppress(ConnectionError, RuntimeError, OSError):
                self._send(b"\xe0\x00")
                await self._writer.drain()
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
        self.connected = False
        for t in (self._task, self._ping):
            if t is not None:
                t.cancel()


@dataclass
class _Pending:
    body: bytes
    topic: str
    created: float
    sent: float = 0.0
    attempts: int = 0


@dataclass
class GatewayStats:
    """What one simulated gateway saw."""

    generated: int = 0
    pubacked: int = 0
    committed: int = 0
    resent: int = 0
    replayed: int = 0
    reconnects: int = 0
    latencies: list[float] = field(default_factory=list)


class SimGateway:
    """One simulated gateway: its own event ids, seqs, in-memory outbox and MQTT connection."""

    def __init__(self, host: str, ports: tuple[int, ...], district: str, community: str, gateway: str, *,
                 prefix: str = "edgegw", n_sources: int = 4, ack_timeout_s: float = 30.0, window: int = 64,
                 boot: int | None = None, resend_hold_s: float | None = None) -> None:
        self.host, self.ports = host, ports
        self._port_i = 0
        self.d, self.c, self.g = district, community, gateway
        self.base = f"{prefix}/{district}/{community}/{gateway}"
        self.sources = sources(n_sources)
        self.boot = boot if boot is not None else int(time.time() * 1000)
        self.seq = dict.fromkeys(self.sources, 0)
        self.pending: dict[tuple[str, int], _Pending] = {}
        # Per source, the pending seqs in ascending order: a watermark pops from the front instead
        # of scanning every pending event (which went quadratic once a backlog built up).
        self._order: dict[str, deque[int]] = {s: deque() for s in self.sources}
        # Per source, its events pre-encoded (district.simulate.event_maker): building each one as a
        # dict and encoding it was ~30 µs of the generator's ~110 µs per event.
        self._makers: dict[str, EventMaker] = {s: event_maker(district, community, gateway, s, self.boot)
                                               for s in self.sources}
        self._topics = {s: f"{self.base}/events/{event(district, community, gateway, s, 1, 1)['kind']}"
                        for s in self.sources}
        self.ack_timeout_s = ack_timeout_s
        # As the real uplink (edge/uplink/uplink.py, `resend_hold_max_s`): None = 8 x the timeout, 0 = no hold.
        self.resend_hold_s = 8 * ack_timeout_s if resend_hold_s is None else resend_hold_s
        # When the latest event a watermark covered (of those sent once) had been sent.
        self._passed = float("-inf")
        self.window = asyncio.Semaphore(window)
        self.stats = GatewayStats()
        self.event_ids: list[str] = []
        self.mqtt: MqttLite | None = None
        self._i = 0

    # -- broker side ----------------------------------------------------------------------------
    def _on_message(self, topic: str, body: bytes) -> None:
        try:
            msg = json.loads(body)
        except ValueError:
            return
        now = time.monotonic()
        if topic == f"{self.base}/ack" and msg.get("boot") == self.boot:
            for source, mark in msg.get("marks", {}).items():
                order = self._order.get(source)
                while order and order[0] <= mark:
                    p = self.pending.pop((source, order.popleft()))
                    if p.attempts == 1 and p.sent > self._passed:
                        self._passed = p.sent
                    self.stats.committed += 1
                    self.stats.latencies.append(now - p.created)
        elif topic == f"{self.base}/replay" and msg.get("boot") == self.boot:
            for seq in range(int(msg["from"]), int(msg["to"]) + 1):
                held = self.pending.get((str(msg["source"]), seq))
                if held is not None:
                    held.sent = 0.0  # the resend loop sends it next
                    self.stats.replayed += 1

    async def connect(self) -> None:
        """Connect (retrying) and subscribe to the watermark and replay topics."""
        while True:
            port = self.ports[self._port_i % len(self.ports)]
            m = MqttLite(self.host, port, f"sim-{self.g}", on_message=self._on_message)
            try:
                await asyncio.wait_for(m.connect(will=(f"{self.base}/status",
                                                       b'{"online": false, "reason": "connection lost"}')), 10)
                await asyncio.wait_for(m.subscribe(f"{self.base}/ack"), 10)
                await asyncio.wait_for(m.subscribe(f"{self.base}/replay"), 10)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                await m.close()
                self._port_i += 1  # a cluster: try the next node
                await asyncio.sleep(0.5)
                continue
            self.mqtt = m
            for p in self.pending.values():
                p.sent = 0.0  # whatever was in flight goes out again on the new connection
            return

    async def _send(self, key: tuple[str, int], p: _Pending) -> None:
        await self.window.acquire()
        p.sent = time.monotonic()
        p.attempts += 1
        try:
            assert self.mqtt is not None
            fut = self.mqtt.publish(p.topic, p.body)
        except ConnectionError:
            self.window.release()
            p.sent = 0.0
            return

        def done(f: asyncio.Future[None]) -> None:
            self.window.release()
            if f.exception() is None:
                self.stats.pubacked += 1
            else:
                p.sent = 0.0
        fut.add_done_callback(done)

    # -- producing ------------------------------------------------------------------------------
    def make_event(self) -> tuple[tuple[str, int], _Pending]:
        """Commit one event to the in-memory outbox (round-robin over the sources)."""
        source = self.sources[self._i % len(self.sources)]
        self._i += 1
        self.seq[source] += 1
        event_id, body = self._makers[source](self.seq[source], time.time())
        self.event_ids.append(event_id)
        self.stats.generated += 1
        key = (source, self.seq[source])
        p = _Pending(body, self._topics[source], time.monotonic())
        self.pending[key] = p
        self._order[source].append(key[1])
        return key, p

    def status_body(self) -> bytes:
        """The retained status: depth, seq.last and seq.floor like a real gateway's."""
        floor = {s: min((k[1] for k in self.pending if k[0] == s), default=self.seq[s] + 1) for s in self.sources}
        return json.dumps({"online": True, "gateway": self.g, "ts": time.time(), "boot": self.boot,
                           "outbox_depth": len(self.pending), "alarms": [], "alarm": False,
                           "seq": {"last": dict(self.seq), "floor": floor}}).encode()

    async def resend_due(self) -> None:
        """Send what was never sent on this connection, or not covered within ack_timeout_s.

        An overdue event is held while no watermark has covered anything sent as late as it, for at
        most `resend_hold_s` after its send (the real uplink's rule)."""
        now = time.monotonic()
        timeout, hold, passed = self.ack_timeout_s, self.resend_hold_s, self._passed
        for key, p in list(self.pending.items()):
            if p.sent == 0.0:
                await self._send(key, p)
            elif now - p.sent > timeout and (hold <= 0 or p.sent <= passed or now - p.sent > hold):
                self.stats.resent += 1
                await self._send(key, p)

    async def run(self, rate: float, duration_s: float, *, status_every_s: float = 5.0) -> None:
        """Produce `rate` events/s for `duration_s`, keeping the connection up."""
        await self.connect()
        start = time.monotonic()
        next_status = 0.0
        next_resend = start + 1.0
        produced = 0
        while True:
            now = time.monotonic()
            if now - start >= duration_s:
                break
            if self.mqtt is None or not self.mqtt.connected:
                self.stats.reconnects += 1
                await self.connect()
            due = int((now - start) * rate) - produced
            for _ in range(max(0, due)):
                key, p = self.make_event()
                produced += 1
                await self._send(key, p)
            if now >= next_status and self.mqtt is not None:
                with contextlib.suppress(ConnectionError):
                    self.mqtt.publish(f"{self.base}/status", self.status_body(), retain=True)
                next_status = now + status_every_s
            if now >= next_resend:
                await self.resend_due()
                next_resend = now + 1.0
            await asyncio.sleep(0.05)

    async def settle(self, timeout_s: float) -> None:
        """After producing: keep resending until the watermark covers everything, or timeout."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            if self.mqtt is None or not self.mqtt.connected:
                await self.connect()
            await self.resend_due()
            with contextlib.suppress(ConnectionError):
                assert self.mqtt is not None
                self.mqtt.publish(f"{self.base}/status", self.status_body(), retain=True)
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        """Disconnect."""
        if self.mqtt is not None:
            await self.mqtt.close()


@dataclass
class FleetResult:
    """What a fleet run measured."""

    gateways: int
    duration_s: float
    generated: int
    pubacked: int
    committed: int
    uncovered: int
    resent: int
    replayed: int
    p50_s: float
    p99_s: float
    event_ids: list[str]

    @property
    def rate(self) -> float:
        """Events generated per second."""
        return self.generated / self.duration_s if self.duration_s else 0.0


async def run_fleet(host: str, port: int | tuple[int, ...], *, gateways: int, rate_per_gateway: float,
                    duration_s: float, district: str = "dl-gjz", settle_s: float = 60.0, ack_timeout_s: float = 30.0,
                    during: Callable[[float], None] | None = None) -> FleetResult:
    """Run `gateways` simulated gateways concurrently; `during(elapsed)` is called every second (faults)."""
    ports = port if isinstance(port, tuple) else (port,)
    # Gateway i starts on node i mod n (and moves on to the next node when its node is down).
    fleet = [SimGateway(host, ports[i % len(ports):] + ports[:i % len(ports)], district, f"c{i // 10:04d}",
                        f"gw{i:05d}", ack_timeout_s=ack_timeout_s) for i in range(gateways)]
    start = time.monotonic()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(1.0)
            if during is not None:
                await asyncio.to_thread(during, time.monotonic() - start)

    tick = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(g.run(rate_per_gateway, duration_s) for g in fleet))
        elapsed = time.monotonic() - start
        await asyncio.gather(*(g.settle(settle_s) for g in fleet))
    finally:
        tick.cancel()
        await asyncio.gather(*(g.close() for g in fleet), return_exceptions=True)
    lat = sorted(x for g in fleet for x in g.stats.latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    return FleetResult(gateways, elapsed, sum(g.stats.generated for g in fleet),
                       sum(g.stats.pubacked for g in fleet),
                       sum(g.stats.committed for g in fleet), sum(len(g.pending) for g in fleet),
                       sum(g.stats.resent for g in fleet), sum(g.stats.replayed for g in fleet), pct(0.5), pct(0.99),
                       [e for g in fleet for e in g.event_ids])
