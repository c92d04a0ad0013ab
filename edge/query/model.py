"""Values of the query service: roles and what each may see, requests, results and refusals."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from edge.compat import StrEnum
from edge.errors import EdgeError
from edge.principals import Role  # the gateway's one role model; the door accepts DOOR_ROLES
from edge.types import EventKind, RawIdentifier


class View(IntEnum):
    """How much of a record a result shows; higher shows more."""

    METADATA = 0
    """Kinds, gates, times and directions only: no pseudonyms, references or raw values."""
    PSEUDONYMS = 1
    """Plus pseudonyms, key ids and random references (what published events carry)."""
    RAW = 2
    """Plus the decrypted raw identifiers (plate text, card number, MAC, resident id)."""


class Channel(StrEnum):
    """The front door a query came through."""

    CLI = "cli"
    HTTP = "http"
    MQTT = "mqtt"


class QueryKind(StrEnum):
    """What a query searches by."""

    PLATE = "plate"
    CARD = "card"
    MAC = "mac"
    PHOTO = "photo"
    RANGE = "range"


IDENTIFIER_KINDS = frozenset({QueryKind.PLATE, QueryKind.CARD, QueryKind.MAC})

ROLE_VIEW: dict[Role, View] = {Role.INSTALLER: View.METADATA, Role.PLATFORM: View.METADATA, Role.POLICE: View.RAW}
"""The most each role may see: the platform gets status and aggregates (kinds, gates, times), never
pseudonyms it could follow from passage to passage (issue 12)."""

ROLE_KINDS: dict[Role, frozenset[QueryKind]] = {
    Role.INSTALLER: frozenset({QueryKind.RANGE}),  # commissioning: "does the gate record passages?"
    Role.PLATFORM: frozenset({QueryKind.RANGE}),  # aggregates only: identifying queries are police work
    Role.POLICE: frozenset(QueryKind),
}
"""Which query kinds each role may run: identifying (plate, card, MAC) and photo queries are police-only."""

BIOMETRIC_KINDS = frozenset({QueryKind.PHOTO})
"""Query kinds that process biometric data (a face compared against stored faces): audited as such."""

CHANNEL_VIEW: dict[Channel, View] = {Channel.CLI: View.RAW, Channel.HTTP: View.RAW, Channel.MQTT: View.PSEUDONYMS}
"""The most a front door may carry: MQTT replies are published, so never raw identifiers."""


def view_for(role: Role, channel: Channel) -> View:
    """What a result shows to `role` through `channel`."""
    return View(min(ROLE_VIEW[role], CHANNEL_VIEW[channel]))


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a name, a role, and the officer a personal token is bound to."""

    name: str
    role: Role
    officer: str | None = None


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """One query as a front door parsed it; the service validates it (and refuses, audited)."""

    kind: QueryKind
    case_id: str | None
    officer_id: str | None
    t1: float
    t2: float
    gate: str | None = None
    identifier: RawIdentifier | None = None
    photo: bytes | None = field(default=None, repr=False)
    """An encoded image (JPEG, PNG, ...) for photo queries."""
    threshold: float | None = None
    limit: int | None = None


class RefusalReason(StrEnum):
    """Why a query was refused."""

    MISSING_CASE_ID = "missing_case_id"
    MISSING_OFFICER_ID = "missing_officer_id"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"


class QueryRefusedError(EdgeError):
    """A query was refused (and the refusal audited); the message says why, never with a raw value."""

    def __init__(self, reason: RefusalReason, message: str, *, audit_seq: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.audit_seq = audit_seq
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class MemberView:
    """One stored event inside a hit, showing only what the view allows."""

    event_id: str
    kind: EventKind
    source_id: str
    ts: float
    direction: str | None = None
    subject_type: str | None = None
    pseudonym: str | None = None
    key_id: str | None = None
    ref: str | None = None
    raw: str | None = field(default=None, repr=False)
    score: float | None = None
    """Cosine similarity to the query photo, for face members of a photo query."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One passage (or an unfused event) that answers a query."""

    passage_id: str | None
    gate: str | None
    ts: float
    direction: str | None
    matched: tuple[str, ...]
    """event_ids of the members that matched the query."""
    members: tuple[MemberView, ...]
    score: float | None = None


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The answer to one query, already reduced to what the caller may see."""

    query_id: str
    kind: QueryKind
    case_id: str
    officer_id: str
    view: View
    audit_seq: int
    hits: tuple[Hit, ...]
    truncated: bool = False
