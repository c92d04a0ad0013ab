"""Config: shipped files validate; a wrong key or type names the file, line and key; exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.app.config import load_config, parse_config
from edge.cli import main
from edge.errors import ConfigError
from tests.conftest import ROOT

MINIMAL = '[gateway]\ndistrict = "d1"\ncommunity = "c1"\ngateway = "g1"\n'


@pytest.mark.parametrize("name", ["demo.toml", "gateway.example.toml"])
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(ROOT / "config" / name)
    assert cfg.gateway.gateway
    assert cfg.cameras


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text(MINIMAL.replace('"g1"\n', '"g1"\ndata_dir = "state"\n'))
    cfg = load_config(tmp_path / "gw.toml")
    assert cfg.gateway.data_dir == (tmp_path / "state").resolve()
    assert cfg.path(cfg.outbox.path) == (tmp_path / "state" / "outbox.db").resolve()


def test_unknown_key_names_file_line_and_key() -> None:
    text = MINIMAL + '\n[[cameras]]\nid = "cam1"\nkind = "file"\npath = "clip"\nfsp = 10\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text, "gw.toml")
    assert "gw.toml:10" in str(err.value)
    assert "cameras.0.fsp" in str(err.value)
    assert "Extra inputs are not permitted" in str(err.value)


def test_wrong_type_names_line() -> None:
    text = MINIMAL + '\n[face]\nmatch_threshold = "high"\n'
    with pytest.raises(ConfigError, match=r"gw.toml:7: key 'face.match_threshold'"):
        parse_config(text, "gw.toml")


def test_invalid_toml_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"gw.toml: invalid TOML: .*line 2"):
        parse_config('[gateway]\ndistrict = \n', "gw.toml")


def test_missing_section_and_duplicate_camera_ids() -> None:
    with pytest.raises(ConfigError, match="key 'gateway'"):
        parse_config("", "gw.toml")
    cams = '\n[[cameras]]\nid = "a"\nkind = "fake"\n'
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_config(MINIMAL + cams + cams, "gw.toml")


def test_config_check_exits_2_on_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "\n[mqtt]\nport = 70000\n")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:7" in err and "mqtt.port" in err
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL)
    assert main(["config", "check", str(good)]) == 0


def test_camera_routing_between_face_and_plate_paths() -> None:
    text = MINIMAL + ('\n[plates]\ncameras = ["lpr"]\n\n[[cameras]]\nid = "face"\nkind = "fake"\n'
                      '\n[[cameras]]\nid = "lpr"\nkind = "fake"\n')
    cfg = parse_config(text)
    assert cfg.face_cameras() == ["face"]
    assert cfg.plate_cameras() == ["lpr"]
