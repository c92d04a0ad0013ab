"""The uplink daemon's loop: drains the outbox to the district broker over MQTT (paho-mqtt 2).

At-least-once with stable event ids: up to `window` QoS 1 publishes are in flight; a row leaves the
outbox only after its PUBACK (or, in end-to-end mode, after the platform's committed watermark
covers it). Every connection is a fresh client, so nothing lives only in paho's memory: after a
disconnect, whatever was not acknowledged is simply read from the outbox again (duplicates ≤ window,
same event_id). Reconnects use jittered exponential backoff.

The concerns live apart: `session` (connecting, protocol fallback, error text), `window` (which rows
go out, what is in flight, storing acknowledgements), `status` (the retained status body). This
module only drives them: connect, pump, settle, housekeeping, shutdown.
See docs/delivery.md for the semantics the platform can rely on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt

from edge.backoff import Backoff
from edge.errors import OutboxError
from edge.events import base_topic, status_topic
from edge.outbox import Outbox
from edge.types import Origin
from edge.uplink.config import RESEND_MAX_FACTOR, MqttConfig, UplinkConfig
from edge.uplink.session import BrokerSession, pump
from edge.uplink.stats import UplinkStats
from edge.uplink.status import DiskWatch, alarm_signature, status_body, uplink_state
from edge.uplink.window import AckListener, InflightWindow

log = logging.getLogger(__name__)

_IDLE_POLL_S = 0.02  # how soon a commit by the capture process is noticed when the outbox was empty
_ACK_WAIT_S = 0.05  # select() returns as soon as a PUBACK arrives; this only bounds a silent wait
_STATUS_CHECK_S = 1.0  # how often a change of alarm state is looked for (then status goes out at once)
_MAX_REPLAY = 100_000  # seqs per replay request
_PURGE_INTERVAL_S = 10.0


class Uplink:
    """Publishes outbox rows to MQTT; `run()` blocks until `stop()` (or until drained, for tests and `run`)."""

    def __init__(
        self,
        outbox: Outbox,
        origin: Origin,
        mqtt_cfg: MqttConfig,
        uplink_cfg: UplinkConfig,
        *,
        password: str | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
        heartbeat: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        on_acked: AckListener | None = None,
        subscriptions: Mapping[str, Callable[[str, bytes], None]] | None = None,
    ) -> None:
        self.outbox = outbox
        # Topic filters the platform sends the gateway things on (watch-lists), and who takes them.
        self._subscriptions = dict(subscriptions or {})
        self.origin = origin
        self.mqtt_cfg = mqtt_cfg
        self.cfg = uplink_cfg
        self._status_extra = status_extra
        self._heartbeat = heartbeat or (lambda: None)
        self._clock = clock
        self._stop = threading.Event()
        self._drain_exit = threading.Event()
        self._backoff = Backoff(uplink_cfg.backoff)
        self.stats = UplinkStats(protocol=mqtt_cfg.protocol)
        self.status_topic = status_topic(origin, mqtt_cfg.topic_prefix)
        self.ack_topic = f"{base_topic(origin, mqtt_cfg.topic_prefix)}/ack"
        self.replay_topic = f"{base_topic(origin, mqtt_cfg.topic_prefix)}/replay"
        self.session = BrokerSession(mqtt_cfg, origin, self.status_topic, self.stats, password=password, clock=clock)
        self.window = InflightWindow(outbox, uplink_cfg, self.stats, clock=clock, on_acked=on_acked)
        self._client: mqtt.Client | None = None
        self._next_status = 0.0
        self._next_status_check = 0.0
        self._alarm_sig: tuple[object, ...] | None = None
        self._next_purge = 0.0
        self._next_resend = 0.0
        # End-to-end mode: when the latest-sent row a watermark covered had been sent. The platform
        # has stored what was sent then, so an older row still uncovered was lost, not delayed.
        self._passed_ts: float | None = None
        self._store_error: str | None = None
        self._disk = DiskWatch()

    @property
    def protocol(self) -> str:
        """The MQTT protocol in use ("5", or "3.1.1" after a fallback)."""
        return self.session.protocol

    # -- connection ----------------------------------------------------------------------------
    def _connect(self) -> bool:
        self.window.reset()
        subscribe = (((self.ack_topic, self.replay_topic) if self.cfg.ack_mode == "end_to_end" else ())
                     + tuple(self._subscriptions))
        client = self.session.connect(self.window.on_publish, self._on_message, subscribe=subscribe,
                                      stop=self._stop.is_set)
        if client is None:
            return False
        self._client = client
        self._backoff.reset()
        self.window.start_connection(self.session.v5())
        self._next_status = 0.0
        log.info("connected to broker %s (MQTT %s)", self.session.where, self.protocol)
        return True

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        for topic_filter, handler in self._subscriptions.items():
            if mqtt.topic_matches_sub(topic_filter, msg.topic):
                handler(msg.topic, bytes(msg.payload))
                self._next_status = 0.0  # what it changed (a list accepted or refused) goes out now
                return
        # The platform's committed watermark (end-to-end mode): rows it covers leave the outbox.
        if msg.topic == self.replay_topic:
            self._on_replay(bytes(msg.payload))
            return
        if msg.topic != self.ack_topic:
            return
        try:
            body = json.loads(msg.payload)
            boot = int(body["boot"])
            marks = {str(k): int(v) for k, v in body["marks"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed acknowledgement message on %s", msg.topic)
            return
        try:
            for source, seq in marks.items():
                newest = self.outbox.ack_watermark(source, boot, seq).newest_sent_ts
                # Only a mark that moved counts: a republished one (every platform reconnect, every
                # batch with duplicates) covers nothing new and says nothing about what was lost.
                if newest is not None and (self._passed_ts is None or newest > self._passed_ts):
                    self._passed_ts = newest
        except OutboxError as exc:
            # The mark is retained and sent again on the next connection; rows stay until then.
            log.warning("cannot apply the platform's watermark now: %s", exc)

    def _on_replay(self, payload: bytes) -> None:
        # The platform saw a gap in a source's seqs (docs/district.md): send that range again now
        # rather than after ack_timeout_s. Rows already deleted cannot be resent; the status's
        # seq.floor tells the platform that.
        try:
            body = json.loads(payload)
            source, boot, first, last = str(body["source"]), int(body["boot"]), int(body["from"]), int(body["to"])
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed replay request on %s", self.replay_topic)
            return
        last = min(last, first + _MAX_REPLAY - 1)  # one request cannot make the whole outbox go out again
        try:
            n = self.outbox.unsend_range(source, boot, first, last)
        except OutboxError as exc:
            log.warning("cannot apply the platform's replay request now: %s", exc)
            return
        if n:
            log.info("platform asked for %s seq %d..%d again: %d event(s) to resend", source, first, last, n)
            self.window.rewind()

    def rewind(self) -> None:
        """Read the outbox from its start again (after a rejected publish or an end-to-end resend)."""
        self.window.rewind()

    # -- status --------------------------------------------------------------------------------
    def status(self, online: bool) -> dict[str, Any]:
        """The retained status body: online, backlog, drops, disk, camera and port states."""
        body = status_body(self.outbox, self.origin, self.cfg, self.stats, online=online, protocol=self.protocol,
                           now=self._clock(), disk=self._disk)
        if self._status_extra is not None:
            body.update(self._status_extra())
        # The uplink's own figures live in memory: the copy in the outbox's status table is written
        # only on (re)connect and stop, so the body would carry a stale "published 0".
        body.setdefault("components", {})["uplink"] = uplink_state(self.stats, self.protocol)
        return body

    def publish_status(self, online: bool) -> None:
        """Publish the retained status message."""
        if self._client is None:
            return
        body = self.status(online)
        self._alarm_sig = alarm_signature(self.outbox)
        self._client.publish(self.status_topic, json.dumps(body, sort_keys=True), qos=1, retain=True)

    def _record_state(self) -> None:
        try:
            self.outbox.put_status("uplink", uplink_state(self.stats, self.protocol))
        except OutboxError as exc:
            log.debug("cannot record uplink state: %s", exc)

    # -- draining ------------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        self._heartbeat()  # systemd watchdog: the loop is alive even while disconnected
        now = self._clock()
        if now >= self._next_purge:
            self._next_purge = now + _PURGE_INTERVAL_S
            self.outbox.purge_expired(now)
        if self.cfg.ack_mode == "end_to_end" and now >= self._next_resend:
            self._resend_overdue(now)
            self._next_resend = now + min(_PURGE_INTERVAL_S, self.cfg.ack_timeout_s / 4)
        self._status_if_due(now)

    def _resend_overdue(self, now: float) -> None:
        """End-to-end mode: send again what the watermark has not covered in time, unless the platform is away.

        A watermark that covers a row sent at T says the platform is up and storing what was sent
        by T; an older row it still lacks was lost on the way and goes out again at its timeout.
        While no mark moves past an overdue row, the platform is away (its database, its workers)
        and the broker still queues the row: sending it again would only queue it twice. The hold
        ends `resend_hold_s` after the row's send, for a platform that is up but lost everything.
        Replay requests (`_on_replay`) are not held: the platform asks for what it knows it lacks.
        """
        timeout, hold = self.cfg.ack_timeout_s, self.cfg.resend_hold_s
        if self.outbox.unsend_overdue(now, timeout, RESEND_MAX_FACTOR, hold_s=hold, passed_ts=self._passed_ts):
            self.window.rewind()
        held = self.outbox.count_overdue(now, timeout, RESEND_MAX_FACTOR) if hold > 0 else 0
        stats = self.stats
        if held and stats.resend_hold_since is None:
            stats.resend_hold_since = now
            log.warning("uplink: holding the resend of %d overdue event(s): no watermark has moved past them "
                        "(the platform is away?); resending at the latest %.0f s after each send", held, hold)
            self._next_status = 0.0  # the platform's operators see the hold at once
        elif not held and stats.resend_hold_since is not None:
            log.info("uplink: resends no longer held (after %.0f s)", now - stats.resend_hold_since)
            stats.resend_hold_since = None
            self._next_status = 0.0
        stats.resends_held = held

    def _status_if_due(self, now: float) -> None:
        """Publish the status when it is due or an alarm changed: reads only, so it works on a full disk."""
        if self._client is None:
            return
        if now >= self._next_status_check:
            self._next_status_check = now + _STATUS_CHECK_S
            if alarm_signature(self.outbox) != self._alarm_sig:
                self._next_status = 0.0  # an alarm appeared or cleared: tell the platform now
        if now >= self._next_status:
            self.publish_status(online=True)
            self._next_status = now + self.cfg.status_interval_s

    def _step(self) -> int:
        """One turn of the drain loop: fill the window, move packets, store acknowledgements."""
        client = self._client
        assert client is not None
        window = self.window
        changed = self.outbox.changed()
        paused = time.monotonic() < window.pause_until
        if not paused and (window.more or changed) and not window.full():
            window.fill(client)
        if window.more and not paused and not window.full():
            timeout = 0.0  # more to send and room for it: do not wait
        else:
            timeout = _ACK_WAIT_S if window.inflight else _IDLE_POLL_S
        rc = pump(client, timeout)
        window.settle()
        return int(rc)

    def _reconnect(self, last_error: str | None) -> tuple[bool, str | None]:
        """Try to connect; on failure wait out the backoff. Returns (connected, last logged error)."""
        self._client = None
        if self._connect():
            self._record_state()
            return True, None
        if self.session.retry_now:
            return False, last_error  # protocol fallback: try 3.1.1 at once
        delay = self._backoff.next_delay()
        self.stats.retry_in_s = round(delay, 2)
        if self.stats.last_error != last_error:
            log.warning("uplink: %s; retrying with backoff", self.stats.last_error)
            last_error = self.stats.last_error
        self._record_state()
        self._heartbeat()
        self._stop.wait(delay)
        return False, last_error

    def run(self, *, until_empty: bool = False, idle_exit_s: float | None = None) -> None:
        """Drain until stop() (or, with `until_empty`, until the outbox stays empty for `idle_exit_s`)."""
        empty_since: float | None = None
        last_error: str | None = None
        while not self._stop.is_set():
            if self._client is None or not self.stats.connected:
                connected, last_error = self._reconnect(last_error)
                if not connected:
                    continue
            try:
                rc = self._step()
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    self.stats.connected = False
                    self.stats.disconnects += 1
                    self.stats.last_error = f"connection lost ({mqtt.error_string(rc)})"
                    log.warning("uplink: %s", self.stats.last_error)
                    self._record_state()
                    continue
                self._housekeeping()
                if self._store_error is not None:
                    log.warning("uplink: the outbox is usable again")
                    self._store_error = None
            except OutboxError as exc:
                # A locked or full disk: what was acknowledged stays queued in memory and is stored
                # (or, after a crash, simply sent again) later. Keep the connection.
                if str(exc) != self._store_error:
                    log.warning("uplink: outbox error, retrying: %s", exc)
                    self._store_error = str(exc)
                # A full disk refuses the deletes too; the status is built from reads and held in
                # memory here, so the platform still hears that the disk is full.
                try:
                    self._heartbeat()
                    self._status_if_due(self._clock())
                    if self._client is not None:
                        pump(self._client, 0.0)
                except (OutboxError, OSError) as status_exc:
                    log.debug("uplink: cannot publish the status now: %s", status_exc)
                self._stop.wait(min(1.0, self.cfg.backoff.max_s))
                continue
            if until_empty or self._drain_exit.is_set():
                if self.window.idle() and self.outbox.depth() == 0:
                    empty_since = empty_since or time.monotonic()
                    if time.monotonic() - empty_since >= (idle_exit_s or 0.0):
                        break
                else:
                    empty_since = None
        self._shutdown()

    def _shutdown(self) -> None:
        client = self._client
        if client is None:
            return
        self.stats.connected = False  # our own DISCONNECT is not a connection loss to report
        try:
            deadline = time.monotonic() + 2.0
            while self.window.inflight and time.monotonic() < deadline:
                pump(client, 0.05)
                self.window.settle()
            # After the last acknowledgements: the final retained status carries the final counts.
            self.publish_status(online=False)
            pump(client, 0.1)
            client.disconnect()  # a clean DISCONNECT: the broker discards the will
            pump(client, 0.1)
        except (OSError, OutboxError):
            pass
        self._client = None
        self.stats.connected = False
        self._record_state()

    def probe(self) -> str | None:
        """Connect once with this configuration (TLS, credentials, protocol) and disconnect.

        Returns None when the broker accepted the connection, else the error an installer should
        read. Uses its own client id and no will, so it is safe while the uplink daemon runs.
        """
        return self.session.probe()

    def stop(self) -> None:
        """Ask `run()` to return (thread-safe)."""
        self._stop.set()

    def drain_and_stop(self) -> None:
        """Ask `run()` to return once the outbox is empty and nothing is in flight (thread-safe)."""
        self._drain_exit.set()
