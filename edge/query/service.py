"""The query service behind every front door: validate, rate-limit, search, reduce to the role, audit.

Every call writes exactly one audit record, whatever happens after the caller was authenticated:
`query` (with the outcome, ok or error) or `query_refused` (with the reason). Identifiers never
enter the audit log or the logs, nor do their pseudonyms: an identifier query is recorded by keyed
digests of the pseudonyms it was matched on, a photo query by a keyed digest of the photo, both
under the case's own key (`CaseKeys`), which is shredded with the case.

Identifier queries never decrypt to match: the service computes the keyed pseudonym of the value
for every pseudonym epoch in the range and matches stored pseudonyms. Raw values are decrypted
only for the hits, and only when the caller's view is RAW. Photo queries decrypt the retained face
embeddings of the range in memory to score them; embeddings are never returned.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from edge.audit import AuditAction, AuditLog, JsonValue
from edge.errors import PrivacyError
from edge.events import iso_ms
from edge.ids import uuid7
from edge.passages.store import Expansion, PassageStore, StoredRecord
from edge.principals import Role
from edge.privacy.normalise import normalise
from edge.privacy.pseudonym import Pseudonymiser
from edge.query.casekeys import CaseKeyError, CaseKeys
from edge.query.config import QueryConfig
from edge.query.model import (
    BIOMETRIC_KINDS,
    IDENTIFIER_KINDS,
    ROLE_KINDS,
    Channel,
    Hit,
    MemberView,
    Principal,
    QueryKind,
    QueryRefusedError,
    QueryRequest,
    QueryResult,
    RefusalReason,
    View,
    view_for,
)
from edge.query.ratelimit import RateLimiter
from edge.query.refusals import RefusalFlood
from edge.types import EventKind, IdKind

log = logging.getLogger(__name__)

PhotoEmbedder = Callable[[bytes], NDArray[np.float32] | None]
"""Photo bytes → the embedding of its largest face, or None when it shows no face; PhotoError when the
bytes are not an image it accepts. The service never decodes images itself (the embedder owns the
face models and the decoder, and loads them on first use)."""


class PhotoError(ValueError):
    """A query photo the embedder refuses (not an image, too large); the message says why."""
"""Embeds the largest face of a BGR image (L2-normalised, 128 values); None when there is no face."""

_CASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _./:#-]{0,63}$")
_OFFICER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
_GATE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ID_KIND = {QueryKind.PLATE: IdKind.PLATE, QueryKind.CARD: IdKind.CARD, QueryKind.MAC: IdKind.MAC}
_RAW_SUBJECTS = frozenset({"plate", "card", "mac", "resident"})
_AUDITED_MATCHES = 200  # event ids named in one audit record; the count is always exact


class _Refusal(Exception):  # noqa: N818 - internal control flow, never escapes the service
    def __init__(self, reason: RefusalReason, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s


class QueryService:
    """Runs police queries over the passage store; one instance serves every front door (thread-safe)."""

    def __init__(
        self,
        store: PassageStore,
        pseudonymiser: Pseudonymiser,
        audit: AuditLog,
        config: QueryConfig,
        limiter: RateLimiter,
        *,
        embedder: PhotoEmbedder | None = None,
        clock: Callable[[], float] = time.time,
        case_keys: CaseKeys | None = None,
    ) -> None:
        self._store = store
        # Without a store of case keys, an in-memory one: digests are then unlinkable after a restart.
        self._case_keys = case_keys if case_keys is not None else CaseKeys(None)
        self._pseudonymiser = pseudonymiser
        self._audit = audit
        self._cfg = config
        self._limiter = limiter
        self._embedder = embedder
        self._embed_lock = threading.Lock()
        self._clock = clock
        self._flood = RefusalFlood(audit, clock=clock)

    @property
    def audit(self) -> AuditLog:
        """The audit log every query is recorded in."""
        return self._audit

    def run(self, principal: Principal, request: QueryRequest, channel: Channel) -> QueryResult:
        """Run one query for an authenticated principal; QueryRefusedError (audited) if it may not run."""
        query_id = str(uuid7())
        details: dict[str, JsonValue] = {
            "query_id": query_id, "channel": channel.value, "principal": principal.name,
            "role": principal.role.value, "kind": request.kind.value,
        }
        actor = f"{principal.role.value}:{principal.name}"
        action = AuditAction.BIOMETRIC_QUERY if request.kind in BIOMETRIC_KINDS else AuditAction.QUERY
        if action is AuditAction.BIOMETRIC_QUERY:
            details["processing"] = "biometric"  # faces compared against stored faces: PIPL sensitive data
        try:
            case_id, officer_id = self._check(principal, request, details)
            actor = f"{principal.role.value}:{officer_id}"
            view = view_for(principal.role, channel)
            details["view"] = view.name.lower()
            hits, truncated = self._execute(request, view, details)
        except _Refusal as refusal:
            details.update(reason=refusal.reason.value, message=refusal.message)
            seq = self._flood.refused(actor, principal.name, refusal.reason.value, details)
            log.info("query %s refused (%s) for %s", query_id, refusal.reason.value, actor)
            raise QueryRefusedError(refusal.reason, refusal.message, audit_seq=seq,
                                    retry_after_s=refusal.retry_after_s) from None
        except Exception as exc:
            details.update(outcome="error", error=type(exc).__name__)
            self._audit.append(actor, action, details)
            raise
        matched = [m for h in hits for m in h.matched]
        details.update(outcome="ok", hits=len(hits), matched=len(matched),
                       matched_event_ids=matched[:_AUDITED_MATCHES], truncated=truncated)
        record = self._audit.append(actor, action, details)
        log.info("query %s (%s) by %s: %d hit(s)", query_id, request.kind.value, actor, len(hits))
        return QueryResult(query_id, request.kind, case_id, officer_id, view, record.seq, tuple(hits), truncated)

    def refuse(self, principal: Principal, kind: str, channel: Channel, message: str) -> QueryRefusedError:
        """Audit a request a front door could not even parse, and return the error to raise."""
        details: dict[str, JsonValue] = {"query_id": str(uuid7()), "channel": channel.value,
                                         "principal": principal.name, "role": principal.role.value,
                                         "kind": kind if kind in set(QueryKind) else "unknown",
                                         "reason": RefusalReason.INVALID.value,
                                         "message": message}
        seq = self._flood.refused(f"{principal.role.value}:{principal.name}", principal.name,
                                  RefusalReason.INVALID.value, details)
        return QueryRefusedError(RefusalReason.INVALID, message, audit_seq=seq)

    def flush_refusals(self) -> None:
        """Write the aggregate record of refusals counted but not yet audited (call periodically and on close)."""
        self._flood.flush()

    # -- validation -------------------------------------------------------------------------------

    def _check(self, principal: Principal, req: QueryRequest, details: dict[str, JsonValue]) -> tuple[str, str]:
        case_id = (req.case_id or "").strip()
        if not case_id:
            raise _Refusal(RefusalReason.MISSING_CASE_ID, "every query must carry a case ID (case_id / --case); "
                           "refused")
        if not _CASE_RE.match(case_id):
            raise _Refusal(RefusalReason.INVALID, "the case ID must be 1-64 letters, digits or ' _./:#-'")
        details["case_id"] = case_id
        if principal.role is Role.POLICE and principal.officer is None:
            # Every police token names its officer, so the audit's "who" and the limit are never claimed.
            raise _Refusal(RefusalReason.FORBIDDEN, "this police token names no officer; refused")
        officer_id = (req.officer_id or principal.officer or "").strip()
        if not officer_id:
            raise _Refusal(RefusalReason.MISSING_OFFICER_ID, "every query must carry an officer ID "
                           "(officer_id / --officer); refused")
        if not _OFFICER_RE.match(officer_id):
            raise _Refusal(RefusalReason.INVALID, "the officer ID must be 1-64 letters, digits or '_.@:-'")
        details["officer_id"] = officer_id
        if principal.officer is not None and officer_id != principal.officer:
            raise _Refusal(RefusalReason.FORBIDDEN, f"this token belongs to officer {principal.officer}; "
                           f"it cannot query as officer {officer_id}")
        if req.kind not in ROLE_KINDS[principal.role]:
            raise _Refusal(RefusalReason.FORBIDDEN, f"role {principal.role.value} may not run {req.kind.value} "
                           f"queries (allowed: {', '.join(sorted(k.value for k in ROLE_KINDS[principal.role]))})")
        self._check_range(req, details)
        self._check_subject(req, details)
        # One budget per token and one per officer: rotating claimed officer ids behind one token, or
        # one officer's queries spread over several tokens, both stop at the limit.
        wait = self._limiter.acquire_all((f"token:{principal.name}", f"officer:{officer_id}"), self._clock())
        if wait is not None:
            raise _Refusal(RefusalReason.RATE_LIMITED, f"officer {officer_id} (or this token) reached the limit of "
                           f"{self._cfg.rate_limit.max_queries} queries per {self._cfg.rate_limit.per_s:g} s; "
                           f"retry in {wait:.0f} s", retry_after_s=wait)
        return case_id, officer_id

    def _check_range(self, req: QueryRequest, details: dict[str, JsonValue]) -> None:
        if not (np.isfinite(req.t1) and np.isfinite(req.t2)) or req.t2 < req.t1:
            raise _Refusal(RefusalReason.INVALID, "the time range needs finite times with from <= to")
        if req.t2 - req.t1 > self._cfg.max_range_days * 86400.0:
            raise _Refusal(RefusalReason.INVALID, f"the time range may span at most {self._cfg.max_range_days:g} days")
        details.update({"from": iso_ms(req.t1), "to": iso_ms(req.t2)})
        if req.gate is not None:
            if not _GATE_RE.match(req.gate):
                raise _Refusal(RefusalReason.INVALID, "a gate id is 1-64 letters, digits or '_.-'")
            details["gate"] = req.gate
        if req.limit is not None and req.limit < 1:
            raise _Refusal(RefusalReason.INVALID, "limit must be at least 1")

    def _check_subject(self, req: QueryRequest, details: dict[str, JsonValue]) -> None:
        if req.kind in IDENTIFIER_KINDS:
            ident = req.identifier
            if ident is None or not ident.value.strip():
                raise _Refusal(RefusalReason.INVALID, f"a {req.kind.value} query needs the {req.kind.value} value")
            if ident.kind is not _ID_KIND[req.kind]:
                raise _Refusal(RefusalReason.INVALID, f"a {req.kind.value} query was given a {ident.kind.value}")
            try:
                normalise(ident.kind, ident.value)
            except PrivacyError as exc:  # its message never repeats the value
                raise _Refusal(RefusalReason.INVALID, str(exc)) from None
        elif req.kind is QueryKind.PHOTO:
            if not req.photo:
                raise _Refusal(RefusalReason.INVALID, "a photo query needs a photo")
            if len(req.photo) > self._cfg.max_photo_mb * 1024 * 1024:
                raise _Refusal(RefusalReason.INVALID, f"the photo is larger than {self._cfg.max_photo_mb:g} MB")
            details["photo_digest"] = self._digest(str(details["case_id"]), "photo",
                                                   hashlib.sha256(req.photo).hexdigest())
            if req.threshold is not None and not -1.0 <= req.threshold <= 1.0:
                raise _Refusal(RefusalReason.INVALID, "threshold must be between -1 and 1")

    def _digest(self, case_id: str, domain: str, value: str) -> str:
        try:
            return self._case_keys.digest(case_id, domain, value)
        except CaseKeyError as exc:
            raise _Refusal(RefusalReason.INVALID, str(exc)) from None

    # -- execution --------------------------------------------------------------------------------

    def _execute(self, req: QueryRequest, view: View, details: dict[str, JsonValue]) -> tuple[list[Hit], bool]:
        limit = min(req.limit or self._cfg.max_results, self._cfg.max_results)
        if req.kind in IDENTIFIER_KINDS:
            assert req.identifier is not None  # checked in _check_subject
            pairs = self._pseudonymiser.pseudonyms_between(req.identifier.kind, req.identifier.value, req.t1, req.t2)
            case_id = str(details["case_id"])
            details["pseudonyms"] = [{"digest": self._digest(case_id, "pseudonym", p), "key_id": k} for p, k in pairs]
            records = self._store.by_pseudonyms(req.identifier.kind.value, [p for p, _ in pairs], req.t1, req.t2,
                                                gate=req.gate, limit=limit + 1)
            return self._hits([(r, None) for r in records], view, limit)
        if req.kind is QueryKind.PHOTO:
            threshold = max(req.threshold if req.threshold is not None else -1.0, self._cfg.photo_threshold)
            details["threshold"] = threshold
            return self._photo(req, threshold, view, limit)
        fetch = limit * 8 + 1  # a passage and its members are several rows
        records = self._store.in_range(req.t1, req.t2, gate=req.gate, limit=fetch)
        hits, truncated = self._range(records, view, limit)
        return hits, truncated or len(records) >= fetch

    def _photo(self, req: QueryRequest, threshold: float, view: View, limit: int) -> tuple[list[Hit], bool]:
        assert req.photo is not None
        if self._embedder is None:
            raise _Refusal(RefusalReason.INVALID, "photo queries are not available on this gateway (no face models)")
        try:
            with self._embed_lock:  # one inference at a time: the gateway's cores belong to capture first
                probe = self._embedder(req.photo)
        except PhotoError as exc:
            raise _Refusal(RefusalReason.INVALID, str(exc)) from None
        if probe is None:
            raise _Refusal(RefusalReason.INVALID, "no face found in the photo")
        probe = np.asarray(probe, np.float32).reshape(-1)
        probe = probe / max(float(np.linalg.norm(probe)), 1e-12)
        records, matrix = self._store.face_embeddings(req.t1, req.t2, gate=req.gate)
        if not records:
            return [], False
        scores = matrix @ probe
        order = np.argsort(-scores)
        matched = [(records[i], float(scores[i])) for i in order if scores[i] >= threshold]
        return self._hits(matched, view, limit)

    def _hits(self, matched: Sequence[tuple[StoredRecord, float | None]], view: View,
              limit: int) -> tuple[list[Hit], bool]:
        """Group matched records by the passages that link them; order is the matched order."""
        passages = self._store.passages_of([r.event_id for r, _ in matched])
        order: list[str] = []
        groups: dict[str, list[tuple[StoredRecord, float | None]]] = {}
        for record, score in matched:
            for key in passages.get(record.event_id) or [f"event:{record.event_id}"]:
                if key not in groups:
                    order.append(key)
                    groups[key] = []
                groups[key].append((record, score))
        truncated = len(order) > limit
        shown = order[:limit]
        # One pass over the store for every hit shown: passages, their members, raw identifiers.
        exp = self._store.expand([k.removeprefix("event:") for k in shown], raw=view is View.RAW)
        return [self._hit(key, groups[key], view, exp) for key in shown], truncated

    def _hit(self, key: str, matched: list[tuple[StoredRecord, float | None]], view: View, exp: Expansion) -> Hit:
        scores = {r.event_id: s for r, s in matched}
        best = max((s for s in scores.values() if s is not None), default=None)
        if key.startswith("event:"):
            record = matched[0][0]
            return Hit(None, record.gate, record.ts, record.direction, (record.event_id,),
                       (self._member(record, view, scores.get(record.event_id), exp),), best)
        passage = exp.records.get(key, matched[0][0])  # the passage itself may be purged meanwhile
        members = exp.members.get(key, [])
        return Hit(key, passage.gate, passage.ts, passage.direction, tuple(scores),
                   tuple(self._member(m, view, scores.get(m.event_id), exp) for m in members), best)

    def _range(self, records: list[StoredRecord], view: View, limit: int) -> tuple[list[Hit], bool]:
        # Members of a passage in the range are shown inside it; others (unfused, or whose passage
        # started before the range) stand alone.
        linked = {m for r in records if r.kind is EventKind.PASSAGE for m in r.links}
        shown: list[StoredRecord] = []
        truncated = False
        for record in records:
            if record.kind is not EventKind.PASSAGE and record.event_id in linked:
                continue  # shown inside its passage
            if len(shown) == limit:
                truncated = True
                break
            shown.append(record)
        exp = self._store.expand([r.event_id for r in shown], raw=view is View.RAW)
        hits: list[Hit] = []
        for record in shown:
            if record.kind is EventKind.PASSAGE:
                members = exp.members.get(record.event_id, [])
                hits.append(Hit(record.event_id, record.gate, record.ts, record.direction, (),
                                tuple(self._member(m, view, None, exp) for m in members)))
            else:
                hits.append(Hit(None, record.gate, record.ts, record.direction, (),
                                (self._member(record, view, None, exp),)))
        return hits, truncated

    def _member(self, record: StoredRecord, view: View, score: float | None, exp: Expansion) -> MemberView:
        if view is View.METADATA:
            return MemberView(record.event_id, record.kind, record.source_id, record.ts, record.direction,
                              record.subject_type, score=score)
        raw = exp.raw.get(record.event_id) if view is View.RAW and record.subject_type in _RAW_SUBJECTS else None
        return MemberView(record.event_id, record.kind, record.source_id, record.ts, record.direction,
                          record.subject_type, record.pseudonym, record.key_id, record.ref, raw,
                          None if score is None else round(score, 4))
