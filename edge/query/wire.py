"""JSON forms of queries and results, shared by the HTTP and MQTT front doors and `--json` output.

A request body is an object with `case_id`, `officer_id`, `from`, `to` (ISO-8601 or seconds since
1970), optional `gate`, `limit`, and per kind `value` (plate, card, mac) or `photo` (base64 image)
and `threshold`. Missing fields are left for the service to refuse (so the refusal is audited);
fields of the wrong type or unknown fields are a `WireError`.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from datetime import datetime

from edge.compat import UTC
from edge.errors import EdgeError
from edge.events import iso_ms
from edge.query.model import (
    Hit,
    MemberView,
    QueryKind,
    QueryRefusedError,
    QueryRequest,
    QueryResult,
)
from edge.types import IdKind, RawIdentifier

_FIELDS = frozenset({"case_id", "officer_id", "from", "to", "gate", "value", "photo", "threshold", "limit"})
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ID_KIND = {QueryKind.PLATE: IdKind.PLATE, QueryKind.CARD: IdKind.CARD, QueryKind.MAC: IdKind.MAC}


class WireError(EdgeError):
    """A request body is malformed; the message names the field, never its value."""


MIN_TIME = 0.0
MAX_TIME = 253_402_300_799.0  # 9999-12-31T23:59:59Z: the last second ISO-8601 (and iso_ms) can write


def parse_time(value: object, name: str) -> float:
    """Seconds since 1970 from a number or an ISO-8601 string (no offset means UTC), within 1970..9999."""
    seconds = _parse_time(value, name)
    if not MIN_TIME <= seconds <= MAX_TIME:
        raise WireError(f"{name} must lie between 1970-01-01 and 9999-12-31 (UTC)")
    return seconds


def _parse_time(value: object, name: str) -> float:
    if isinstance(value, bool):
        raise WireError(f"{name} must be an ISO-8601 time or seconds since 1970")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise WireError(f"{name} must be finite")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if not math.isfinite(number):
                raise WireError(f"{name} must be finite")
            return number
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise WireError(f"{name} is not an ISO-8601 time (e.g. 2026-01-10T08:00:00Z)") from None
        try:
            return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
        except (OverflowError, ValueError):  # e.g. 9999-12-31T23:59:59-14:00 overflows the UTC conversion
            raise WireError(f"{name} is out of range") from None
    raise WireError(f"{name} must be an ISO-8601 time or seconds since 1970")


def _opt_str(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WireError(f"{key} must be a string")
    return value


def query_kind(text: str) -> QueryKind:
    """The QueryKind named `text`; WireError if there is none."""
    try:
        return QueryKind(text)
    except ValueError:
        raise WireError(f"unknown query kind; expected one of {', '.join(k.value for k in QueryKind)}") from None


def request_from_json(kind: QueryKind, body: object) -> QueryRequest:
    """Parse a request body (a decoded JSON object) for a query of `kind`."""
    if not isinstance(body, Mapping):
        raise WireError("the request body must be a JSON object")
    unknown = sorted(str(k) for k in body if k not in _FIELDS)
    if unknown:
        # Name only field-like keys: the message is audited, and a key could be anything a client sent.
        named = [k for k in unknown if _FIELD_NAME.match(k)][:8]
        rest = len(unknown) - len(named)
        raise WireError(f"unknown field(s): {', '.join(named)}{f' and {rest} other(s)' if rest else ''}")
    t1 = parse_time(body["from"], "from") if body.get("from") is not None else math.nan
    t2 = parse_time(body["to"], "to") if body.get("to") is not None else math.nan
    identifier = None
    value = _opt_str(body, "value")
    if kind in _ID_KIND and value is not None:
        identifier = RawIdentifier(_ID_KIND[kind], value)
    elif value is not None:
        raise WireError(f"a {kind.value} query takes no value")
    photo = None
    photo_text = _opt_str(body, "photo")
    if photo_text is not None:
        if kind is not QueryKind.PHOTO:
            raise WireError(f"a {kind.value} query takes no photo")
        try:
            photo = base64.b64decode(photo_text, validate=True)
        except (binascii.Error, ValueError):
            raise WireError("photo must be base64") from None
    threshold = body.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
        raise WireError("threshold must be a number")
    limit = body.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise WireError("limit must be an integer")
    return QueryRequest(
        kind=kind, case_id=_opt_str(body, "case_id"), officer_id=_opt_str(body, "officer_id"), t1=t1, t2=t2,
        gate=_opt_str(body, "gate"), identifier=identifier, photo=photo,
        threshold=None if threshold is None else float(threshold), limit=limit,
    )


def _member(m: MemberView) -> dict[str, object]:
    out: dict[str, object] = {"event_id": m.event_id, "kind": m.kind.value, "source": m.source_id, "ts": iso_ms(m.ts)}
    if m.direction is not None:
        out["direction"] = m.direction
    subject = {k: v for k, v in (("type", m.subject_type), ("pseudonym", m.pseudonym), ("key_id", m.key_id),
                                 ("ref", m.ref)) if v is not None}
    if subject:
        out["subject"] = subject
    if m.raw is not None:
        out["raw"] = m.raw
    if m.score is not None:
        out["score"] = m.score
    return out


def _hit(h: Hit) -> dict[str, object]:
    out: dict[str, object] = {"passage_id": h.passage_id, "gate": h.gate, "ts": iso_ms(h.ts),
                              "direction": h.direction, "matched": list(h.matched),
                              "members": [_member(m) for m in h.members]}
    if h.score is not None:
        out["score"] = h.score
    return out


def result_to_json(result: QueryResult) -> dict[str, object]:
    """The JSON object of a result (what the view allows, nothing more)."""
    return {
        "query_id": result.query_id, "kind": result.kind.value, "case_id": result.case_id,
        "officer_id": result.officer_id, "view": result.view.name.lower(), "audit_seq": result.audit_seq,
        "truncated": result.truncated, "hits": [_hit(h) for h in result.hits],
    }


def refusal_to_json(err: QueryRefusedError) -> dict[str, object]:
    """The JSON error object of a refusal."""
    out: dict[str, object] = {"code": err.reason.value, "message": str(err)}
    if err.audit_seq is not None:
        out["audit_seq"] = err.audit_seq
    if err.retry_after_s is not None:
        out["retry_after_s"] = math.ceil(err.retry_after_s)
    return {"error": out}
