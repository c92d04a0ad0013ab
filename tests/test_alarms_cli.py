"""`edgegw inputs watch` against pymodbus' server on a real pty; `edgegw watchlist verify` on real files."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.cli import main
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import IdKind
from edge.watchlist import build_watchlist, pseudonym_entries
from tests._modbus_sim import ModuleSim
from tests._ptypair import PtyPair


def test_inputs_watch_prints_each_press(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = PtyPair()
    sim = ModuleSim(pair.b).start()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'''
[[inputs]]
kind = "modbus_rtu"
id = "io1"
port = "{pair.a}"
baud = 115200
poll_interval_s = 0.02
inputs = [{{ id = "sos1", channel = 0, meaning = "alarm_column" }}]
''')

    def press() -> None:
        time.sleep(0.5)
        sim.closed[0] = True
        time.sleep(0.5)
        sim.closed[0] = False

    presser = threading.Thread(target=press)
    presser.start()
    try:
        assert main(["inputs", "watch", "--config", str(cfg), "--seconds", "2.0"]) == 0
    finally:
        presser.join()
        sim.stop()
        pair.close()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    alarms = [(d["code"], d["input"], d["state"]) for d in lines if "code" in d]
    assert alarms == [("alarm_column", "sos1", "raised"), ("alarm_column", "sos1", "cleared")]
    assert lines[-1]["summary"] and lines[-1]["inputs"] == {"sos1": {"active": False, "wire_break": False}}


def test_inputs_watch_config_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[[inputs]]\nkind = "modbus_rtu"\nid = "io1"\nport = "/dev/null"\n'
                   'inputs = [{ id = "a", channel = 0, meaning = "smoke" }]\n')
    assert main(["inputs", "watch", "--config", str(cfg), "--seconds", "0"]) == 2
    err = capsys.readouterr().err
    assert "gw.toml" in err and "inputs.0.modbus_rtu.inputs.0.meaning" in err


def test_watchlist_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "platform.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    now = time.time()
    entries = pseudonym_entries(Pseudonymiser(b"d" * 32), IdKind.CARD, ["0012345678"], now)
    good = tmp_path / "wl.json"
    good.write_bytes(build_watchlist(signing_key=key, district="d1", list_id="wl-7", version=3, case_id="C-1",
                                     approver="officer.li", expires_at=int(now + 3600), entries=entries))
    assert main(["watchlist", "verify", str(good), "--key", str(pub), "--district", "d1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["list_id"] == "wl-7" and out["entries"] == {"card": 2} and len(out["epochs"]) == 2
    assert main(["watchlist", "verify", str(good), "--key", str(pub), "--district", "d2"]) == 1
    assert "wrong_district" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_bytes(good.read_bytes().replace(b'"version":3', b'"version":4'))
    assert main(["watchlist", "verify", str(bad), "--key", str(pub)]) == 1
    assert "bad_signature" in capsys.readouterr().err
