"""The documented example configuration loads, and mistakes name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from district.config import load_config
from edge.errors import ConfigError
from tests.conftest import ROOT


def test_the_example_config_loads() -> None:
    cfg = load_config(ROOT / "config" / "district.example.toml")
    assert cfg.ingest.batch_max == 1000 and cfg.search.epoch.value == "month"
    assert len(cfg.amqp.url.split(",")) == 2
    assert cfg.viid.devices["dl-gjz/c0001/gw01"].tollgate_id == "21021100011210000001"


def test_an_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "d.toml"
    p.write_text("[ingest]\nbatch_maxx = 5\n")
    with pytest.raises(ConfigError, match=r"d\.toml: ingest\.batch_maxx"):
        load_config(p)
