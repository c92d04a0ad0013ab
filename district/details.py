"""District search details: ask the gateways that hold the sealed records, over their MQTT query door
(v2), about events a district search found — under the same case id.

`edgegw district search details --case C --officer O EVENT_ID…` (value on stdin) and
`POST /v1/search/details`. The platform
1. admits the caller like a search (police or admin, case and officer ids, an officer-bound token
   acts only for its officer; the same rate limit);
2. binds the request to the case: every event must be stored here, its subject's pseudonym must be
   the value's pseudonym in that event's epoch, and a search under this case id must have found
   that pseudonym (its audit record lists them) — so details are asked only about what the case's
   own search found, for the value it searched;
3. audits the request (`details_request`: case, officer, kind, event ids, gateways — never the
   value) before anything is sent;
4. sends each gateway holding events one request signed as `{[door].principal}:{officer}`, sealed to that
   gateway's registered door key (`gateway_keys`), with the same case id and officer, the value
   and a period just covering its events (`district.doorclient`);
5. opens the encrypted replies, keeps the hits holding the asked event ids, and audits the outcome
   per gateway (`details_outcome`: status, hits, the gateway's own audit record).
A gateway answers over MQTT with pseudonyms only (`edge.query.model.CHANNEL_VIEW`); raw values come
only from a gateway's HTTP door or console, to an officer on site.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from district.config import DoorConfig, SearchConfig
from district.doorclient import DoorAnswer, DoorAsk
from district.errors import SearchRefusedError
from district.gateways import GatewayName, load_keys
from district.platform_audit import append
from district.principals import Principal
from district.ratelimit import acquire
from district.search import KeyService, Refusal, SearchKind, admission
from edge.errors import PrivacyError

log = logging.getLogger(__name__)
Conn = psycopg.Connection[tuple[object, ...]]
_EVENT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SLACK = timedelta(seconds=1)  # the gateway's period is inclusive; a second each side absorbs rounding


@dataclass(frozen=True, slots=True)
class DetailsRequest:
    """Details about `event_ids` (hits of a search under `case_id`); `value` is the raw value searched."""

    case_id: str
    officer: str
    value: str
    event_ids: tuple[str, ...]

    def __repr__(self) -> str:
        return f"DetailsRequest(case={self.case_id}, <redacted>, {len(self.event_ids)} event(s))"


@dataclass(frozen=True, slots=True)
class GatewayDetails:
    """One gateway's outcome: its status, the hits holding asked events, its own audit record."""

    gateway: str
    status: str
    event_ids: tuple[str, ...]
    hits: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    gateway_audit_seq: int | None = None


@dataclass(frozen=True, slots=True)
class DetailsResult:
    """Per gateway outcomes, the event ids no gateway returned, and the two platform audit records."""

    kind: str
    gateways: list[GatewayDetails]
    missing: list[str]
    request_audit_seq: int
    outcome_audit_seq: int


Asker = Callable[[Sequence[DoorAsk]], dict[str, DoorAnswer]]


@dataclass(frozen=True, slots=True)
class _Stored:
    event_id: str
    ts: datetime
    gateway: GatewayName
    subject_type: str
    pseudonym: str | None


class DetailsService:
    """Runs details requests: checks and binds them to the case, asks the doors, audits both ends."""

    def __init__(self, search_cfg: SearchConfig, door_cfg: DoorConfig, keys: KeyService,
                 connect: Callable[[], Conn], ask: Asker) -> None:
        self._search_cfg = search_cfg
        self._door_cfg = door_cfg
        self._keys = keys
        self._connect = connect
        self._ask = ask

    def details(self, who: Principal, req: DetailsRequest) -> DetailsResult:
        """Check, bind, audit, ask, audit; SearchRefusedError (audited) if refused."""
        with self._connect() as conn:
            return self._details(conn, who, req)

    def _refuse(self, conn: Conn, who: Principal, case_id: str, officer: str, reason: Refusal,  # noqa: PLR0917
                message: str, retry: float | None = None) -> SearchRefusedError:
        append(conn, who.name, "details_refused", {"case_id": case_id[:64], "officer": officer[:64],
                                                   "reason": reason.value})
        return SearchRefusedError(reason, message, retry)

    def _details(self, conn: Conn, who: Principal, req: DetailsRequest) -> DetailsResult:
        refusal = admission(who, req.case_id, req.officer)
        if refusal is not None:
            raise self._refuse(conn, who, refusal.case_id, refusal.officer, refusal.reason, refusal.message)
        ids = tuple(dict.fromkeys(e.strip().lower() for e in req.event_ids))
        if not ids or len(ids) > self._door_cfg.max_events or not all(_EVENT_ID.match(e) for e in ids):
            raise self._refuse(conn, who, req.case_id, req.officer, Refusal.INVALID,
                               f"give 1 to {self._door_cfg.max_events} event ids (UUIDs) from the case's search")
        stored = _stored(conn, ids)
        unknown = [e for e in ids if e not in stored]
        if unknown:
            raise self._refuse(conn, who, req.case_id, req.officer, Refusal.INVALID,
                               f"{len(unknown)} event id(s) are not stored here, e.g. {unknown[0]}")
        kinds = {s.subject_type for s in stored.values()}
        if len(kinds) != 1 or next(iter(kinds)) not in {k.value for k in SearchKind}:
            raise self._refuse(conn, who, req.case_id, req.officer, Refusal.INVALID,
                               "the events must all have a plate, card or MAC subject of one kind")
        kind = SearchKind(next(iter(kinds)))
        found = _case_pseudonyms(conn, req.case_id)
        try:
            first, last = min(s.ts for s in stored.values()), max(s.ts for s in stored.values())
            mine = {p for p, _ in self._keys.pseudonyms(kind, req.value, first, last)}
        except PrivacyError as exc:
            raise self._refuse(conn, who, req.case_id, req.officer, Refusal.INVALID, str(exc)) from None
        unbound = [e for e, s in stored.items() if s.pseudonym not in mine or s.pseudonym not in found]
        if unbound:
            # One message for both causes: which one it is would tell a caller whether a value matches.
            raise self._refuse(conn, who, req.case_id, req.officer, Refusal.FORBIDDEN,
                               f"{len(unbound)} event(s) are not hits of a search under case {req.case_id} for "
                               "this value")
        wait = acquire(conn, who.name, req.officer, self._search_cfg.max_per_window, self._search_cfg.window_s)
        if wait is not None:
            raise self._refuse(conn, who, req.case_id, req.officer, Refusal.RATE_LIMITED,
                               f"rate limit reached; retry in {wait:.0f} s", wait)
        by_gw: dict[str, list[_Stored]] = {}
        for s in stored.values():
            by_gw.setdefault(str(s.gateway), []).append(s)
        registry = load_keys(conn, sorted(by_gw))
        rec = append(conn, who.name, "details_request", {
            "case_id": req.case_id, "officer": req.officer, "kind": kind.value, "event_ids": list(ids),
            "gateways": sorted(by_gw), "principal": f"{self._door_cfg.principal}:{req.officer}"})
        outcomes: list[GatewayDetails] = []
        asks: list[DoorAsk] = []
        for gw, events in sorted(by_gw.items()):
            keys = registry.get(gw)
            door = keys.door_key() if keys is not None else None
            if door is None:
                outcomes.append(GatewayDetails(gw, "no_door_key", tuple(e.event_id for e in events),
                                               error="no query door key registered for this gateway"))
                continue
            asks.append(DoorAsk(events[0].gateway, door, req.officer, {
                "kind": kind.value, "value": req.value, "case_id": req.case_id, "officer_id": req.officer,
                "from": (min(e.ts for e in events) - _SLACK).timestamp(),
                "to": (max(e.ts for e in events) + _SLACK).timestamp()}))
        answers = self._ask(asks)
        for a in asks:
            gw = str(a.gateway)
            wanted = tuple(e.event_id for e in by_gw[gw])
            answer = answers.get(gw, DoorAnswer(gw, "timeout", error="no reply"))
            outcomes.append(_outcome(answer, wanted))
        outcomes.sort(key=lambda o: o.gateway)
        got = {e for o in outcomes for h in o.hits for e in _event_ids(h)}
        missing = [e for e in ids if e not in got]
        out = append(conn, who.name, "details_outcome", {
            "case_id": req.case_id, "officer": req.officer, "request_seq": rec.seq, "missing": len(missing),
            "gateways": [{"gateway": o.gateway, "status": o.status, "hits": len(o.hits),
                          "gateway_audit_seq": o.gateway_audit_seq} for o in outcomes]})
        log.info("details for case %s by officer %s (%s): %d gateway(s), %d of %d event(s) answered", req.case_id,
                 req.officer, who.name, len(outcomes), len(ids) - len(missing), len(ids))
        return DetailsResult(kind.value, outcomes, missing, rec.seq, out.seq)


def _stored(conn: Conn, ids: Sequence[str]) -> dict[str, _Stored]:
    rows = conn.execute("SELECT event_id::text, ts, district, community, gateway, subject_type, subject_pseudonym "
                        "FROM events WHERE event_id = ANY(%s::uuid[])", (list(ids),)).fetchall()
    conn.rollback()
    return {str(r[0]): _Stored(str(r[0]), r[1] if isinstance(r[1], datetime) else datetime.fromisoformat(str(r[1])),
                               GatewayName(str(r[2]), str(r[3]), str(r[4])), str(r[5]),
                               None if r[6] is None else str(r[6])) for r in rows}


def _case_pseudonyms(conn: Conn, case_id: str) -> set[str]:
    """Every pseudonym a search under `case_id` found hits for (from the platform's audit records)."""
    rows = conn.execute("SELECT details::jsonb -> 'pseudonyms' FROM audit_log WHERE action = 'search' "
                        "AND details::jsonb ->> 'case_id' = %s AND (details::jsonb ->> 'hits')::int > 0",
                        (case_id,)).fetchall()
    conn.rollback()
    return {str(p) for (ps,) in rows if isinstance(ps, list) for p in ps}


def _event_ids(hit: dict[str, Any]) -> set[str]:
    members = hit.get("members")
    ids = {str(m.get("event_id")) for m in members if isinstance(m, dict)} if isinstance(members, list) else set()
    matched = hit.get("matched")
    return ids | ({str(m) for m in matched} if isinstance(matched, list) else set())


def _outcome(answer: DoorAnswer, wanted: tuple[str, ...]) -> GatewayDetails:
    reply = answer.reply or {}
    result = reply.get("result") if isinstance(reply.get("result"), dict) else None
    error = reply.get("error") if isinstance(reply.get("error"), dict) else None
    seq = (result or error or {}).get("audit_seq")
    hits = []
    if answer.status == "ok" and result is not None and isinstance(result.get("hits"), list):
        hits = [h for h in result["hits"] if isinstance(h, dict) and _event_ids(h) & set(wanted)]
    return GatewayDetails(answer.gateway, answer.status, wanted, hits, answer.error,
                          seq if isinstance(seq, int) and not isinstance(seq, bool) else None)
