"""EDGEGW_TEST_TIME_FACTOR: the tests' time limits stretched on a slower host (qemu-user emulation)."""

from __future__ import annotations

import pytest

from tests._slow import TIME_FACTOR_ENV, scaled, slowed_env, time_factor


def test_unset_means_the_limits_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIME_FACTOR_ENV, raising=False)
    assert time_factor() == 1.0
    assert scaled(180) == 180


def test_a_factor_stretches_every_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TIME_FACTOR_ENV, "12.5")
    assert scaled(180) == 2250
    assert scaled(0.5) == 6.25


@pytest.mark.parametrize("raw", ["fast", "0.5", "-3", "nan"])
def test_a_bad_factor_is_an_error_not_ignored(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(TIME_FACTOR_ENV, raw)
    with pytest.raises(ValueError, match=TIME_FACTOR_ENV):
        time_factor()


def test_slowed_inference_adds_only_what_a_slow_host_does_not_already_take(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIME_FACTOR_ENV, raising=False)
    assert slowed_env(8)["EDGEGW_TEST_SLOWDOWN"] == "8.0"
    monkeypatch.setenv(TIME_FACTOR_ENV, "2")
    assert slowed_env(8)["EDGEGW_TEST_SLOWDOWN"] == "4.0"
    monkeypatch.setenv(TIME_FACTOR_ENV, "10")  # emulation: slower than a Pi already
    assert slowed_env(8)["EDGEGW_TEST_SLOWDOWN"] == "1.0"
