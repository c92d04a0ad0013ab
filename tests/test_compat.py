"""Python 3.10 support: the 3.10 fallbacks in edge.compat behave like the 3.11 names they stand in for.

These run on 3.11+, where the fallbacks are not what edge.compat exports, so they test the fallback
classes directly against the standard library ones; `make typecheck-py310` checks the 3.10 branch.
"""

from __future__ import annotations

import enum
import json
import sys
from datetime import datetime

import pytest
import tomli

from edge import compat
from edge.compat import UTC, StrEnum, tomllib


class _Colour(compat._StrEnum):
    BLUE = "blue"
    GREEN_NEW = "green_new"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="compares the fallback with the 3.11 StrEnum")
def test_strenum_fallback_behaves_like_the_311_strenum() -> None:
    class Std(enum.StrEnum):
        BLUE = "blue"
        GREEN_NEW = "green_new"

    for ours, std in zip(_Colour, Std, strict=True):
        assert str(ours) == str(std) == std.value
        assert f"{ours}" == f"{std}" and f"{ours:>10}" == f"{std:>10}"
        assert ours == std.value and isinstance(ours, str)
        assert json.dumps({"c": ours}) == json.dumps({"c": std})
        assert _Colour(std.value) is ours
        assert hash(ours) == hash(std.value)  # usable as a dict key interchangeably with its value

    class Auto(compat._StrEnum):
        FIRST_ONE = enum.auto()

    assert Auto.FIRST_ONE == "first_one"  # auto() gives the lower-cased name, as StrEnum does


def test_exports_are_the_standard_ones_on_this_interpreter() -> None:
    if sys.version_info >= (3, 11):
        import tomllib as std_tomllib

        assert StrEnum is enum.StrEnum and tomllib is std_tomllib
        from datetime import UTC as std_utc

        assert UTC is std_utc
    assert datetime(2026, 1, 10, tzinfo=UTC).timestamp() == 1_768_003_200.0


def test_tomli_fallback_parses_like_tomllib() -> None:
    text = 'a = 1\n[b]\nc = ["x", 2.5]\nd = 2026-01-10T12:00:00Z\n'
    assert tomli.loads(text) == tomllib.loads(text)
    with pytest.raises(tomli.TOMLDecodeError):
        tomli.loads("a = ")


def test_outbox_tells_corruption_from_other_errors_without_error_codes() -> None:
    # Python 3.10's sqlite3 exceptions carry no `sqlite_errorcode`: a busy or full outbox must still
    # not be mistaken for a corrupt one (which would move it aside, hiding its events from the uplink).
    import sqlite3

    from edge import outbox

    def bare(text: str) -> sqlite3.DatabaseError:
        exc = sqlite3.DatabaseError(text)
        assert getattr(exc, "sqlite_errorcode", None) is None  # as every sqlite3 error on 3.10
        return exc

    assert outbox._is_corrupt(bare("file is not a database"))
    assert outbox._is_corrupt(bare("database disk image is malformed"))
    assert outbox._is_corrupt(outbox._QuickCheckError("quick_check: ('*** in database main ***',)"))
    assert not outbox._is_corrupt(bare("database is locked"))
    assert not outbox._is_corrupt(bare("unable to open database file"))
    assert outbox._is_full(bare("database or disk is full"))
