"""The event schema, compiled once per kind for the platform's hot path.

The schema's `allOf` holds one `if kind == K then …` branch per kind. fastjsonschema evaluates a
failed `if` by raising and catching an exception, so checking one event walks six failing branches:
about 250 µs an event under cProfile, the worker's largest cost. For an event of kind K the other
branches impose nothing, so the validator for K is the same schema with only K's branch, applied
unconditionally: the same accept/reject decision for every payload of that kind, four to five times
faster. Errors name the path and the rule only, never the value (like edge.events.validate).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import fastjsonschema

from edge.errors import PrivacyError
from edge.events import SCHEMA_VERSION, schema

# The subject's `oneOf` (pseudonym and key_id without ref, or ref without either) costs two more
# raised-and-caught exceptions an event: 8-14 µs of a subject event's 17-27 µs. With at most the four
# properties type, pseudonym, key_id, ref (additionalProperties is false, type is required) the two
# branches accept exactly {type, pseudonym, key_id} and {type, ref}: the same sets as "one more
# property than type, pseudonym and key_id only together, and nothing beside ref". Checked subset by
# subset against the full schema in tests/district/test_validation.py.
_SUBJECT_ONE_OF = {"minProperties": 2,
                   "dependencies": {"pseudonym": ["key_id"], "key_id": ["pseudonym"], "ref": {"maxProperties": 2}}}


@lru_cache(maxsize=16)
def _compiled(kind: str) -> Any:
    full = schema()
    kinds = full["properties"]["kind"]["enum"]
    if kind not in kinds:
        return None
    s = copy.deepcopy(full)
    subject = s["$defs"]["subject"]
    if set(subject["properties"]) == {"type", "pseudonym", "key_id", "ref"} and not subject["additionalProperties"] \
            and subject["required"] == ["type"]:  # the premises of the rewrite, or the schema's own oneOf
        subject.pop("oneOf")
        subject.update(_SUBJECT_ONE_OF)
    branches = [b["then"] for b in s.pop("allOf") if b["if"]["properties"]["kind"]["const"] == kind]
    s["properties"]["kind"] = {"const": kind}
    if branches:
        s["allOf"] = branches
    return fastjsonschema.compile(s)


def validate_event(obj: dict[str, Any]) -> None:
    """Raise PrivacyError if `obj` does not match schema v1 (the kind's branch picked first)."""
    kind = obj.get("kind")
    validator = _compiled(kind) if isinstance(kind, str) else None
    if validator is None:
        raise PrivacyError(f"event fails schema v{SCHEMA_VERSION} at kind: enum check failed")
    try:
        validator(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        where = "/".join(str(p) for p in exc.path[1:]) or "(root)"
        raise PrivacyError(f"event of kind {kind!r} fails schema v{SCHEMA_VERSION} at {where}: "
                           f"{exc.rule} check failed") from None
