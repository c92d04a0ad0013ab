"""The typed bodies of the HTTP query API: what OpenAPI publishes is what the server enforces.

Request models carry the constraints the service checks (patterns, lengths, the 1970..9999 time
range, the threshold's bounds), so a client reading `/openapi.json` knows every rule that earns a
400. Fields the service must see to refuse with its own reason (a missing `case_id` is
`missing_case_id`, audited) stay optional here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from edge.query.wire import MAX_TIME, MIN_TIME

_CASE = r"^[A-Za-z0-9][A-Za-z0-9 _./:#-]{0,63}$"
_OFFICER = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$"
_GATE = r"^[A-Za-z0-9_.-]{1,64}$"

TimeValue = Annotated[
    Annotated[float, Field(ge=MIN_TIME, le=MAX_TIME)] | str,
    Field(description="ISO-8601 (no offset means UTC) or seconds since 1970; between 1970-01-01 and "
                      "9999-12-31T23:59:59Z"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QueryBody(_Strict):
    """Fields every query takes."""

    case_id: str | None = Field(default=None, pattern=_CASE, description="required: the case the query is for")
    officer_id: str | None = Field(default=None, pattern=_OFFICER,
                                   description="the officer asking; a police token's own officer by default")
    from_: TimeValue | None = Field(default=None, alias="from", description="required: start of the range")
    to: TimeValue | None = Field(default=None, description="required: end of the range (from <= to)")
    gate: str | None = Field(default=None, pattern=_GATE)
    limit: int | None = Field(default=None, ge=1, le=100_000)


class IdentifierQuery(QueryBody):
    """A plate, card or MAC query (police only)."""

    value: str | None = Field(default=None, min_length=1, max_length=64,
                              description="required: the plate text, card number or MAC (normalised)")


class PhotoQuery(QueryBody):
    """A photo query (police only; audited as biometric processing)."""

    photo: str | None = Field(default=None, max_length=90_000_000,
                              description="required: base64 JPEG, PNG, WebP or BMP; the size is checked from the "
                                          "header before decoding (query.max_photo_megapixels)")
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0,
                                    description="cosine similarity; never below the gateway's photo_threshold")


class RangeQuery(QueryBody):
    """A time-range query (every role; what it shows depends on the role)."""


class Subject(_Strict):
    """Who or what a member is about, as far as the view allows."""

    type: str | None = None
    pseudonym: str | None = None
    key_id: str | None = None
    ref: str | None = None


class Member(_Strict):
    """One stored event inside a hit."""

    event_id: str
    kind: str
    source: str
    ts: str
    direction: str | None = None
    subject: Subject | None = None
    raw: str | None = Field(default=None, description="decrypted identifier; police role, HTTP/CLI only")
    score: float | None = None


class Hit(_Strict):
    """One passage (or an unfused event) that answers a query."""

    passage_id: str | None
    gate: str | None
    ts: str
    direction: str | None
    matched: list[str]
    members: list[Member]
    score: float | None = None


class QueryResult(_Strict):
    """The answer to one query, reduced to what the caller's role may see."""

    query_id: str
    kind: str
    case_id: str
    officer_id: str
    view: str = Field(description="metadata | pseudonyms | raw")
    audit_seq: int
    truncated: bool
    hits: list[Hit]


class ErrorDetail(_Strict):
    """Why a request was refused."""

    code: str
    message: str
    audit_seq: int | None = None
    retry_after_s: int | None = None


class Error(_Strict):
    """Every non-200 answer."""

    error: ErrorDetail


class AuditHeadValue(_Strict):
    """The audit chain's head."""

    seq: int
    hash: str


class AuditHead(_Strict):
    """The audit chain head, for anchoring."""

    audit_head: AuditHeadValue
