"""The TOML an installer writes for wired inputs, zones and watch-lists parses into the models (docs/alarms.md)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField

from drivers.inputs.config import GpioInputsConfig, InputModuleConfig, ModbusInputsConfig
from edge.compat import tomllib
from edge.pipeline.zoneconfig import ZonesConfig
from edge.watchlistconfig import WatchlistConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "alarms.md"


class _Sections(BaseModel):
    """How the root config is expected to hold them (the integrator adds these three fields)."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[InputModuleConfig] = PField(default_factory=list)
    zones: ZonesConfig = ZonesConfig()
    watchlist: WatchlistConfig = WatchlistConfig()


def test_the_documented_example_is_valid() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert blocks, "docs/alarms.md has no toml example"
    cfg = _Sections.model_validate(tomllib.loads("\n".join(blocks)))
    assert [type(m) for m in cfg.inputs] == [ModbusInputsConfig, GpioInputsConfig]
    modbus = cfg.inputs[0]
    assert isinstance(modbus, ModbusInputsConfig) and modbus.wire_break_table == "coils"
    assert {p.meaning for m in cfg.inputs for p in m.inputs} == {"alarm_column", "door_contact", "tamper"}
    assert [z.rule for z in cfg.zones.zone] == ["obstruction", "dwell"]
    assert cfg.watchlist.enabled
