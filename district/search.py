"""District-wide police search: by plate, card or MAC over a period, across every gateway's events.

The raw value lives only in this call: the key service turns it into one pseudonym per epoch of the
period (`edge.privacy.pseudonym`, the gateways' derivation), the events are searched by pseudonym,
and the audit record holds the case, officer, period, epochs and hit count, never the value. Every
search needs a case id and an officer id, is rate-limited per token and officer, and is audited
whether it runs or is refused. The hits say where and when; an officer then asks the gateways that
hold the sealed records for details over their query door, with the same case id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from district.config import SearchConfig
from district.errors import SearchRefusedError
from district.partitions import day_bound
from district.platform_audit import append
from district.principals import Principal, Role
from district.ratelimit import acquire
from edge.compat import UTC, StrEnum
from edge.errors import PrivacyError
from edge.keys import load_secret
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import IdKind

log = logging.getLogger(__name__)
Conn = psycopg.Connection[tuple[object, ...]]
_CASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./:-]{0,63}$")


class SearchKind(StrEnum):
    """What a police search may look for."""

    PLATE = "plate"
    CARD = "card"
    MAC = "mac"


class Refusal(StrEnum):
    """Why a search did not run."""

    MISSING_CASE_ID = "missing_case_id"
    MISSING_OFFICER_ID = "missing_officer_id"
    FORBIDDEN = "forbidden"
    INVALID = "invalid"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One search; `value` is the raw plate, card number or MAC and is never stored."""

    kind: SearchKind
    value: str
    start: datetime
    end: datetime
    case_id: str
    officer: str

    def __repr__(self) -> str:
        return f"SearchRequest({self.kind.value}, <redacted>, {self.start:%F}..{self.end:%F}, case={self.case_id})"


@dataclass(frozen=True, slots=True)
class Hit:
    """Where and when the subject was seen."""

    event_id: str
    ts: datetime
    district: str
    community: str
    gateway: str
    gate: str
    kind: str


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The hits (oldest first), the epochs searched, and the audit record written."""

    hits: list[Hit]
    epochs: list[str]
    truncated: bool
    audit_seq: int


@dataclass(frozen=True, slots=True)
class Admission:
    """Why a caller may not search (or ask for details) under this case and officer; what to audit."""

    reason: Refusal
    message: str
    case_id: str
    officer: str


def admission(who: Principal, case_id: str, officer: str) -> Admission | None:
    """None if `who` may act for `officer` under `case_id`, else the refusal (shared by search and details)."""
    if who.role not in (Role.POLICE, Role.ADMIN):
        return Admission(Refusal.FORBIDDEN, f"role {who.role.value} may not search", case_id[:64], officer[:64])
    if not case_id.strip():
        return Admission(Refusal.MISSING_CASE_ID, "a case id is required", "", officer[:64])
    if not officer.strip():
        return Admission(Refusal.MISSING_OFFICER_ID, "an officer id is required", case_id[:64], "")
    if not _CASE_RE.match(case_id) or not _CASE_RE.match(officer):
        return Admission(Refusal.INVALID, "case and officer ids are 1-64 letters, digits and _./:-", "invalid",
                         "invalid")
    if who.officer is not None and who.officer != officer:
        return Admission(Refusal.FORBIDDEN, "this token is bound to another officer", case_id, officer)
    return None


class KeyService:
    """Holds the district key and computes pseudonyms per epoch; the key never leaves it."""

    def __init__(self, pseudonymiser: Pseudonymiser) -> None:
        self._p = pseudonymiser

    @classmethod
    def from_config(cls, cfg: SearchConfig) -> KeyService:
        """Load the district key (a 0600 file or a systemd credential)."""
        if not cfg.key_file:
            raise SearchRefusedError(Refusal.INVALID,
                                     "no [search].key_file configured: the search needs the district key")
        return cls(Pseudonymiser(load_secret(cfg.key_file, purpose="district pseudonym"), cfg.epoch))

    def pseudonyms(self, kind: SearchKind, value: str, start: datetime, end: datetime) -> list[tuple[str, str]]:
        """(pseudonym, key_id) for every epoch overlapping [start, end]."""
        return self._p.pseudonyms_between(IdKind(kind.value), value, start.timestamp(), end.timestamp())


class SearchService:
    """Runs searches against PostgreSQL; `connect` gives it a connection per call."""

    def __init__(self, cfg: SearchConfig, keys: KeyService, connect: Callable[[], Conn]) -> None:
        self.cfg = cfg
        self.keys = keys
        self._connect = connect

    def connect(self) -> Conn:
        """A new connection to the platform database."""
        return self._connect()

    def _refuse(self, conn: Conn, who: Principal, req_case: str, officer: str, reason: Refusal,  # noqa: PLR0917
                message: str, retry: float | None = None) -> SearchRefusedError:
        append(conn, who.name, "search_refused", {"case_id": req_case[:64], "officer": officer[:64],
                                                  "reason": reason.value})
        return SearchRefusedError(reason, message, retry)

    def search(self, who: Principal, req: SearchRequest) -> SearchResult:
        """Check, rate-limit, compute the pseudonyms, search, audit; raise SearchRefusedError if refused."""
        with self.connect() as conn:
            return self._search(conn, who, req)

    def _search(self, conn: Conn, who: Principal, req: SearchRequest) -> SearchResult:
        refusal = admission(who, req.case_id, req.officer)
        if refusal is not None:
            raise self._refuse(conn, who, refusal.case_id, refusal.officer, refusal.reason, refusal.message)
        if req.end < req.start or req.end - req.start > timedelta(days=self.cfg.max_period_days):
            raise self._refuse(conn, who, req.case_id, req.officer, Refusal.INVALID,
                               f"the period must be ordered and at most {self.cfg.max_period_days} days")
        try:
            pairs = self.keys.pseudonyms(req.kind, req.value, req.start, req.end)
        except PrivacyError as exc:
            # The normaliser's messages name the rule, never the value.
            raise self._refuse(conn, who, req.case_id, req.officer, Refusal.INVALID, str(exc)) from None
        wait = acquire(conn, who.name, req.officer, self.cfg.max_per_window, self.cfg.window_s)
        if wait is not None:
            raise self._refuse(conn, who, req.case_id, req.officer, Refusal.RATE_LIMITED,
                               f"rate limit reached; retry in {wait:.0f} s", wait)
        pseudonyms = [p for p, _ in pairs]
        # UUIDv7 ids start with their time: bound them too, so only the period's day partitions are read.
        lo = day_bound((req.start - timedelta(days=1)).date())
        hi = day_bound((req.end + timedelta(days=2)).date())
        rows = conn.execute(
            "SELECT event_id, ts, district, community, gateway, source, kind FROM events "
            "WHERE subject_pseudonym = ANY(%s) AND subject_type = %s AND ts >= %s AND ts <= %s "
            "AND event_id >= %s AND event_id < %s ORDER BY ts, event_id LIMIT %s",
            (pseudonyms, req.kind.value, req.start, req.end, lo, hi, self.cfg.max_results + 1)).fetchall()
        conn.rollback()
        truncated = len(rows) > self.cfg.max_results
        hits = [Hit(str(r[0]), r[1] if isinstance(r[1], datetime) else datetime.now(UTC), str(r[2]), str(r[3]),
                    str(r[4]), str(r[5]), str(r[6])) for r in rows[: self.cfg.max_results]]
        rec = append(conn, who.name, "search", {
            "case_id": req.case_id, "officer": req.officer, "kind": req.kind.value,
            "from": req.start.isoformat(), "to": req.end.isoformat(), "key_ids": [k for _, k in pairs],
            "pseudonyms": pseudonyms, "hits": len(hits), "gateways": sorted({f"{h.district}/{h.community}/{h.gateway}"
                                                                               for h in hits})})
        log.info("search for case %s by officer %s (%s): %d hit(s) over %d epoch(s)", req.case_id, req.officer,
                 who.name, len(hits), len(pairs))
        return SearchResult(hits, [k for _, k in pairs], truncated, rec.seq)
