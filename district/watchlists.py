"""Watch-lists (布控) built, signed, pushed and revoked by the platform.

`build` turns raw plates, cards or MACs into their pseudonyms for the current and the next epoch(s)
with the district key (`district.keyservice.KeyService.watch_entries`), signs the list with the
platform's Ed25519 key in the gateways' own format (`edge.watchlist.build_watchlist`, which a gateway
verifies unchanged), and stores it as the list's next version: pseudonyms, counts and the signed
payload, never a raw value (those exist only in memory during the call). `push` publishes the
newest version retained on `watchlist_topic`, so a gateway that connects later still gets it; a
list already pushed is re-signed as the next version first (a gateway refuses a version it has
seen). `revoke` publishes a newer, empty version — how a list is withdrawn — and forgets the
pseudonyms. Each step is one transaction with its audit record (case, approver, counts, never a
pseudonym); a failed publish rolls the step back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from district.config import MqttConfig
from district.errors import DistrictError
from district.keyservice import KeyService
from district.platform_audit import append
from edge.errors import PrivacyError
from edge.types import IdKind
from edge.watchlist import (
    WATCH_KINDS,
    WatchEntry,
    WatchlistRefusedError,
    build_watchlist,
    watchlist_topic,
)

log = logging.getLogger(__name__)
Conn = psycopg.Connection[tuple[object, ...]]
DAY_S = 86400


class WatchlistError(DistrictError):
    """A watch-list request was refused (unknown list, bad value, expired, revoked, publish failed)."""


class Publisher(Protocol):
    """Where signed lists go: retained, at least once, acknowledged before `publish` returns."""

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish retained with QoS 1; raise WatchlistError if the broker did not acknowledge."""
        ...


def signing_key(seed: bytes) -> Ed25519PrivateKey:
    """The platform's watch-list signing key, derived from a secret seed (a key file)."""
    return Ed25519PrivateKey.from_private_bytes(HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"edgegw/watchlist-signing/v1", info=b"watch-list signing",
    ).derive(seed))


def public_hex(key: Ed25519PrivateKey) -> str:
    """The public key as 64 hex digits: what gateways keep as `[watchlist].public_key`."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


@dataclass(frozen=True, slots=True)
class ListSummary:
    """A list as the platform keeps it, without its pseudonyms."""

    list_id: str
    version: int
    district: str
    police_case: str
    approver: str
    issued_at: int
    expires_at: int
    counts: dict[str, int]
    epochs: list[str]
    state: str
    topic: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"list_id": self.list_id, "version": self.version, "district": self.district,
                "case_id": self.police_case, "approver": self.approver, "issued_at": self.issued_at,
                "expires_at": self.expires_at, "counts": self.counts, "epochs": self.epochs, "state": self.state,
                "topic": self.topic}


class MqttPublisher:
    """Publishes to the district broker with paho (one short connection per list)."""

    def __init__(self, cfg: MqttConfig, *, client_id: str = "edgegw-district-watchlists",
                 timeout_s: float = 15.0) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.timeout_s = timeout_s

    def publish(self, topic: str, payload: bytes) -> None:
        """Connect, publish retained QoS 1, wait for the PUBACK, disconnect."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if self.cfg.username:
            password = self.cfg.password_file.read_text().strip() if self.cfg.password_file else None
            client.username_pw_set(self.cfg.username, password)
        connected = threading.Event()
        client.on_connect = lambda *_a: connected.set()
        try:
            client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except OSError as exc:
            raise WatchlistError(f"cannot reach the broker {self.cfg.host}:{self.cfg.port}: {exc}") from None
        client.loop_start()
        try:
            if not connected.wait(self.timeout_s):
                raise WatchlistError(f"the broker {self.cfg.host}:{self.cfg.port} did not accept the connection")
            info = client.publish(topic, payload, qos=1, retain=True)
            info.wait_for_publish(self.timeout_s)
            if not info.is_published():
                raise WatchlistError(f"the broker did not acknowledge the list on {topic}")
        finally:
            client.disconnect()
            client.loop_stop()


class WatchlistDesk:
    """Builds, pushes, revokes and lists watch-lists; raw values never reach the database."""

    def __init__(self, connect: Callable[[], Conn], keys: KeyService, signer: Ed25519PrivateKey, district: str,
                 publisher: Publisher, *, prefix: str = "edgegw", epochs_ahead: int = 1, max_days: int = 90,
                 clock: Callable[[], float] = time.time) -> None:
        self._connect = connect
        self._keys = keys
        self._signer = signer
        self.district = district
        self._publisher = publisher
        self.prefix = prefix
        self.epochs_ahead = epochs_ahead
        self.max_days = max_days
        self._clock = clock

    # -- steps -------------------------------------------------------------------------------------
    def build(self, list_id: str, values: Mapping[IdKind, Sequence[str]], *, case_id: str, approver: str,
              expires_at: int, actor: str) -> ListSummary:
        """Compute the pseudonyms, sign the list as its next version and store it (not yet pushed)."""
        now = int(self._clock())
        if not now < expires_at <= now + self.max_days * DAY_S:
            raise WatchlistError(f"the expiry must be in the future and at most {self.max_days} days ahead")
        entries: list[WatchEntry] = []
        counts: Counter[str] = Counter()
        for kind, vals in values.items():
            if kind not in WATCH_KINDS:
                raise WatchlistError(f"identifiers of kind {kind.value} cannot be watched")
            distinct = sorted(set(vals))
            try:
                entries += self._keys.watch_entries(kind, distinct, now, epochs_ahead=self.epochs_ahead)
            except PrivacyError as exc:  # the normaliser names the rule, never the value
                raise WatchlistError(f"a {kind.value} value was refused: {exc}") from None
            counts[kind.value] += len(distinct)
        if not entries:
            raise WatchlistError("a list needs at least one plate, card or MAC")
        with self._connect() as conn, conn.transaction():
            prev = self._lock(conn, list_id)
            if prev is not None and prev[1] == "revoked":
                raise WatchlistError(f"watch-list {list_id} was revoked; give a new list id")
            version = (prev[0] + 1) if prev is not None else 1
            payload = self._sign(list_id, version, case_id, approver, now, expires_at, entries)
            epochs = sorted({e.key_id.split(".", 1)[1] for e in entries})
            conn.execute(
                "INSERT INTO watchlists (list_id, version, district, police_case, approver, issued_at, expires_at, "
                "entries, counts, epochs, payload, state, created_by) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'built', %s) "
                "ON CONFLICT (list_id) DO UPDATE SET version = EXCLUDED.version, police_case = EXCLUDED.police_case, "
                "approver = EXCLUDED.approver, issued_at = EXCLUDED.issued_at, expires_at = EXCLUDED.expires_at, "
                "entries = EXCLUDED.entries, counts = EXCLUDED.counts, epochs = EXCLUDED.epochs, "
                "payload = EXCLUDED.payload, state = 'built', updated_at = now()",
                (list_id, version, self.district, case_id, approver, now, expires_at, _entries_json(entries),
                 json.dumps(dict(counts)), epochs, payload.decode(), actor))
            append(conn, actor, "watchlist_build", {"list_id": list_id, "version": version, "case_id": case_id,
                                                    "approver": approver, "counts": dict(counts),
                                                    "epochs": epochs, "expires_at": expires_at})
            return self._summary(conn, list_id)

    def push(self, list_id: str, *, actor: str) -> ListSummary:
        """Publish the newest version retained; a version already pushed is re-signed as the next one."""
        now = int(self._clock())
        with self._connect() as conn, conn.transaction():
            row = conn.execute("SELECT version, state, police_case, approver, expires_at, entries, payload "
                               "FROM watchlists WHERE list_id = %s FOR UPDATE", (list_id,)).fetchone()
            if row is None:
                raise WatchlistError(f"no watch-list {list_id}; build it first")
            version, state, case_id, approver, expires_at, entries, payload = row
            if state == "revoked":
                raise WatchlistError(f"watch-list {list_id} was revoked; build a new list")
            if int(str(expires_at)) <= now:
                raise WatchlistError(f"watch-list {list_id} has expired; build it again")
            version = int(str(version))
            text = str(payload)
            if state == "pushed":
                version += 1
                text = self._sign(list_id, version, str(case_id), str(approver), now, int(str(expires_at)),
                                  _entries_from(entries)).decode()
            conn.execute("UPDATE watchlists SET version = %s, payload = %s, issued_at = %s, state = 'pushed', "
                         "pushed_at = now(), updated_at = now() WHERE list_id = %s",
                         (version, text, json.loads(text)["issued_at"], list_id))
            append(conn, actor, "watchlist_push", {"list_id": list_id, "version": version, "case_id": str(case_id),
                                                   "topic": self.topic(list_id)})
            self._publisher.publish(self.topic(list_id), text.encode())  # before the commit: a failure undoes it
            log.info("watch-list %s v%d for case %s pushed to %s", list_id, version, case_id, self.topic(list_id))
            return self._summary(conn, list_id)

    def revoke(self, list_id: str, *, actor: str, note: str = "") -> ListSummary:
        """Publish a newer, empty version (the gateways stop matching) and forget the pseudonyms."""
        now = int(self._clock())
        with self._connect() as conn, conn.transaction():
            row = conn.execute("SELECT version, state, police_case, approver FROM watchlists "
                               "WHERE list_id = %s FOR UPDATE", (list_id,)).fetchone()
            if row is None:
                raise WatchlistError(f"no watch-list {list_id}")
            version, state, case_id, approver = row
            if state == "revoked":
                raise WatchlistError(f"watch-list {list_id} is already revoked")
            version = int(str(version)) + 1
            # The empty version must outlive nothing: a day is enough for every gateway to take it,
            # and an expired empty list is as good as none.
            text = self._sign(list_id, version, str(case_id), str(approver), now, now + DAY_S, []).decode()
            conn.execute("UPDATE watchlists SET version = %s, payload = %s, issued_at = %s, entries = '[]', "
                         "state = 'revoked', pushed_at = now(), updated_at = now() WHERE list_id = %s",
                         (version, text, now, list_id))
            append(conn, actor, "watchlist_revoke", {"list_id": list_id, "version": version,
                                                     "case_id": str(case_id), "note": note[:200]})
            self._publisher.publish(self.topic(list_id), text.encode())
            return self._summary(conn, list_id)

    def lists(self) -> list[ListSummary]:
        """Every list the platform holds (counts, never pseudonyms), newest first."""
        with self._connect() as conn:
            ids = [str(r[0]) for r in conn.execute("SELECT list_id FROM watchlists ORDER BY updated_at DESC, list_id")]
            return [self._summary(conn, i) for i in ids]

    # -- helpers -----------------------------------------------------------------------------------
    def topic(self, list_id: str) -> str:
        """The retained topic of a list."""
        return watchlist_topic(self.district, list_id, self.prefix)

    def _sign(self, list_id: str, version: int, case_id: str, approver: str, issued_at: int,  # noqa: PLR0917
              expires_at: int, entries: Sequence[WatchEntry]) -> bytes:
        try:
            return build_watchlist(signing_key=self._signer, district=self.district, list_id=list_id,
                                   version=version, case_id=case_id, approver=approver, issued_at=issued_at,
                                   expires_at=expires_at, entries=entries)
        except WatchlistRefusedError as exc:  # what a gateway would refuse to read is not signed
            raise WatchlistError(str(exc).replace("watch-list refused", "watch-list not built")) from None

    @staticmethod
    def _lock(conn: Conn, list_id: str) -> tuple[int, str] | None:
        row = conn.execute("SELECT version, state FROM watchlists WHERE list_id = %s FOR UPDATE", (list_id,)).fetchone()
        return None if row is None else (int(str(row[0])), str(row[1]))

    def _summary(self, conn: Conn, list_id: str) -> ListSummary:
        row = conn.execute("SELECT list_id, version, district, police_case, approver, issued_at, expires_at, counts, "
                           "epochs, state FROM watchlists WHERE list_id = %s", (list_id,)).fetchone()
        if row is None:
            raise WatchlistError(f"no watch-list {list_id}")
        lid, version, district, case_id, approver, issued, expires, counts, epochs, state = row
        return ListSummary(str(lid), int(str(version)), str(district), str(case_id), str(approver), int(str(issued)),
                           int(str(expires)), {str(k): int(v) for k, v in dict(counts).items()}
                           if isinstance(counts, dict) else {},
                           [str(e) for e in epochs] if isinstance(epochs, list) else [], str(state),
                           self.topic(str(lid)))


def _entries_json(entries: Iterable[WatchEntry]) -> str:
    return json.dumps([{"kind": e.kind.value, "key_id": e.key_id, "pseudonym": e.pseudonym} for e in entries])


def _entries_from(value: object) -> list[WatchEntry]:
    items = value if isinstance(value, list) else []
    return [WatchEntry(IdKind(str(d["kind"])), str(d["key_id"]), str(d["pseudonym"])) for d in items
            if isinstance(d, dict)]


