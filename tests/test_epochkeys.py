"""Epoch keys wrapped to each gateway: a stolen gateway exposes no district root key, only its window.

Each test reproduces an attack from issue 12 ("Keys") against the real key service, the real
keyring (SQLite) and the real CLI, and shows it now fails.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from district.keyservice import KeyService, verify_head
from district.keyservice import main as keyservice_main
from edge.app.config import load_config
from edge.app.wiring import open_keyring, pseudonymiser
from edge.cli import main
from edge.keys import generate_key_file, key_fingerprint, load_key_file
from edge.privacy.config import EpochPolicy
from edge.privacy.epochkeys import (
    EpochKeyError,
    EpochKeyMissingError,
    EpochKeyring,
    RootKeySource,
    derive_epoch_key,
)
from edge.privacy.identity import GatewayIdentity, sign_audit_head
from edge.privacy.pseudonym import Pseudonymiser, epoch_label
from edge.types import IdKind
from tests.conftest import new_gateway

DAY = 86400.0
PLATE = "辽B12345"


def _ring(tmp_path: Path, identity: GatewayIdentity, clock: list[float], name: str = "ring.db") -> EpochKeyring:
    return EpochKeyring(tmp_path / name, identity, district="d1", community="c1", gateway="g1",
                        clock=lambda: clock[0])


def test_a_stolen_gateway_holds_no_root_key_and_only_its_window(tmp_path: Path) -> None:
    cfg_path = new_gateway(tmp_path)
    root = load_key_file(tmp_path / "data" / "district.key", purpose="root")
    # The attacker takes the config and every file the gateway daemons read; the stand-in district
    # root in the test's data dir is not one of them (the config never names it).
    (tmp_path / "data" / "district.key").unlink()
    cfg = load_config(cfg_path)
    assert cfg.privacy.district_key_file is None
    gateway_files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()] + [cfg_path]
    for f in gateway_files:
        blob = f.read_bytes()
        assert root not in blob and root.hex().encode() not in blob, f
    # With everything on the gateway, pseudonyms of the window are computable (they are its job) and
    # agree with the district's; an epoch outside the window is not.
    now = time.time()
    gw = pseudonymiser(cfg)
    district = Pseudonymiser(RootKeySource(root, "c1"), EpochPolicy.MONTH)
    assert gw.pseudonym_at(IdKind.PLATE, PLATE, now) == district.pseudonym_at(IdKind.PLATE, PLATE, now)
    for far in (now - 400 * DAY, now + 400 * DAY):
        with pytest.raises(EpochKeyMissingError):
            gw.pseudonym_at(IdKind.PLATE, PLATE, far)
    # The published key id names the root by the one fingerprint format `keys generate` prints.
    label = epoch_label(cfg.privacy.epoch, now)
    assert gw.pseudonym_at(IdKind.PLATE, PLATE, now)[1] == f"{key_fingerprint(root)}.{label}"


def test_a_bundle_opens_only_on_its_gateway(tmp_path: Path) -> None:
    service = KeyService(bytes(range(1, 33)))
    mine, other = GatewayIdentity(b"\x01" * 31 + b"\x02"), GatewayIdentity(b"\x03" * 31 + b"\x04")
    clock = [time.time()]
    bundle = service.issue(other.public, district="d1", community="c1", gateway="g1", window_days=30)
    with _ring(tmp_path, mine, clock) as ring, pytest.raises(EpochKeyError, match="wrapped to gateway key"):
        ring.import_bundle(bundle)
    # Re-labelled as mine, the entries still do not open: they are wrapped to the other gateway's key.
    forged = json.loads(bundle)
    forged["recipient"] = mine.public.fingerprint
    with _ring(tmp_path, mine, clock) as ring, pytest.raises(EpochKeyError, match="does not open"):
        ring.import_bundle(json.dumps(forged))
    # A bundle for another gateway id, or with an entry moved to another epoch, is refused.
    good = service.issue(mine.public, district="d1", community="c1", gateway="g2", window_days=30)
    with _ring(tmp_path, mine, clock) as ring, pytest.raises(EpochKeyError, match="is for d1/c1/g2"):
        ring.import_bundle(good)
    moved = json.loads(service.issue(mine.public, district="d1", community="c1", gateway="g1", window_days=30))
    moved["keys"][0]["epoch"] = "2099-01"
    with _ring(tmp_path, mine, clock) as ring, pytest.raises(EpochKeyError, match="does not open"):
        ring.import_bundle(json.dumps(moved))
    weekly = KeyService(bytes(range(1, 33)), EpochPolicy.WEEK).issue(
        mine.public, district="d1", community="c1", gateway="g1", window_days=30)
    monthly = EpochKeyring(tmp_path / "ring.db", mine, district="d1", community="c1", gateway="g1", policy="month")
    with monthly as ring, pytest.raises(EpochKeyError, match="week epoch keys"):
        ring.import_bundle(weekly)
    with _ring(tmp_path, mine, clock) as ring:
        assert ring.held() == []  # all or nothing: nothing of a refused bundle was stored


def test_the_stored_keys_are_useless_without_the_gateway_seed(tmp_path: Path) -> None:
    service = KeyService(bytes(range(1, 33)))
    mine = GatewayIdentity(b"\x05" * 31 + b"\x06")
    clock = [time.time()]
    with _ring(tmp_path, mine, clock) as ring:
        ring.import_bundle(service.issue(mine.public, district="d1", community="c1", gateway="g1", window_days=30))
        label = ring.epochs_of(IdKind.PLATE)[0]
    blob = (tmp_path / "ring.db").read_bytes()
    for kind in IdKind:  # no epoch key is stored in clear
        assert derive_epoch_key(bytes(range(1, 33)), kind, label, "c1") not in blob
    with _ring(tmp_path, GatewayIdentity(b"\x07" * 32), clock) as thief, pytest.raises(EpochKeyError):
        thief.epoch_key(IdKind.PLATE, label)


def test_keys_past_their_window_are_destroyed_and_never_come_back(tmp_path: Path) -> None:
    service = KeyService(bytes(range(1, 33)))
    mine = GatewayIdentity(b"\x08" * 31 + b"\x09")
    t0 = time.time()
    clock = [t0]
    bundle = service.issue(mine.public, district="d1", community="c1", gateway="g1", window_days=30, now=t0)
    with _ring(tmp_path, mine, clock) as ring:
        ring.import_bundle(bundle)
        label = epoch_label(EpochPolicy.MONTH, t0)
        ring.epoch_key(IdKind.PLATE, label)
        wrapped = [bytes.fromhex(e["wrapped"]) for e in json.loads(bundle)["keys"] if e["epoch"] == label]
        clock[0] = t0 + 75 * DAY  # this month is over, and so is the 30-day window after it
        with pytest.raises(EpochKeyMissingError, match="past its window"):
            ring.epoch_key(IdKind.PLATE, label)
        assert label not in ring.epochs_of(IdKind.PLATE)
        # A replay of the old bundle (its entries not yet expired by the clock of the replay) does not
        # resurrect a destroyed epoch.
        clock[0] = t0
        ring.import_bundle(bundle)
        assert label not in ring.epochs_of(IdKind.PLATE)
    files = b"".join(p.read_bytes() for p in tmp_path.glob("ring.db*"))
    assert all(w not in files for w in wrapped)  # secure_delete + a truncated WAL: the bytes are gone


def test_resident_pseudonyms_are_separated_by_community() -> None:
    root = bytes(range(1, 33))
    a, b = Pseudonymiser(root, community="c-a"), Pseudonymiser(root, community="c-b")
    assert a.pseudonym_in(IdKind.RESIDENT, "r-0001", "2026-11") != b.pseudonym_in(IdKind.RESIDENT, "r-0001", "2026-11")
    assert a.pseudonym_in(IdKind.PLATE, PLATE, "2026-11") == b.pseudonym_in(IdKind.PLATE, PLATE, "2026-11")


def test_signed_audit_heads_expose_a_forged_or_rewritten_head() -> None:
    gw = GatewayIdentity(b"\x0a" * 31 + b"\x0b")
    head = sign_audit_head(gw, "g1", 7, "ab" * 32, 1_795_000_000.0)
    assert verify_head(gw.public, "g1", {"audit_head": head})
    for change in ({"seq": 6}, {"hash": "cd" * 32}, {"ts": 1.0}):
        assert not verify_head(gw.public, "g1", {"audit_head": {**head, **change}})
    assert not verify_head(gw.public, "g2", {"audit_head": head})  # another gateway's topic
    other = GatewayIdentity(b"\x0c" * 32)
    assert not verify_head(gw.public, "g1", {"audit_head": sign_audit_head(other, "g1", 7, "ab" * 32, 1.0)})


def test_the_cli_round_trip_init_issue_import_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    generate_key_file(data / "data.key")
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[gateway]\ndistrict = "d1"\ncommunity = "c1"\ngateway = "g1"\ndata_dir = "{data}"\n')
    assert main(["keys", "init", "--config", str(cfg)]) == 0
    public = capsys.readouterr().out.strip()
    assert public.startswith("edgegw-gw1:") and (data / "gateway.key").stat().st_mode & 0o077 == 0
    root = tmp_path / "district" / "root.key"
    root.parent.mkdir()
    generate_key_file(root)
    signing = tmp_path / "district" / "signing.key"
    generate_key_file(signing)
    assert keyservice_main(["signing-public", "--root", str(root), "--signing-key", str(signing)]) == 0
    pin = capsys.readouterr().out.strip()
    # The gateway pins the key service: only bundles it signed are imported.
    cfg.write_text(cfg.read_text() + f'\n[privacy]\nkey_service_public_key = "{pin}"\n')
    unsigned = tmp_path / "unsigned.json"
    assert keyservice_main(["issue", "--root", str(root), "--gateway-public", public, "--district", "d1",
                            "--community", "c1", "--gateway", "g1", "--out", str(unsigned)]) == 0
    assert main(["keys", "import", "--config", str(cfg), str(unsigned)]) == 1
    assert "not signed" in capsys.readouterr().err
    bundle = tmp_path / "bundle.json"
    assert keyservice_main(["issue", "--root", str(root), "--gateway-public", public, "--district", "d1",
                            "--community", "c1", "--gateway", "g1", "--signing-key", str(signing),
                            "--out", str(bundle)]) == 0
    assert key_fingerprint(load_key_file(root, purpose="root")) in capsys.readouterr().out
    assert main(["keys", "import", "--config", str(cfg), str(bundle)]) == 0
    assert "imported" in capsys.readouterr().out
    assert main(["keys", "status", "--config", str(cfg)]) == 0
    listing = capsys.readouterr().out
    assert f"plate\t{key_fingerprint(load_key_file(root, purpose='root'))}." in listing
    with open_keyring(load_config(cfg)) as ring:
        assert {h.kind for h in ring.held()} == set(IdKind)


def test_commissioning_refuses_a_root_key_and_a_missing_epoch_key(tmp_path: Path) -> None:
    from edge.app.commission import run_checks

    cfg_path = new_gateway(tmp_path)
    cfg = load_config(cfg_path)
    [keys] = [r for r in run_checks(cfg, tmp_path, broker=False) if r.name == "keys"]
    assert keys.ok, keys.detail
    # A config that puts the district root key on the gateway fails the checklist, saying why.
    rooted = cfg.model_copy(update={"privacy": cfg.privacy.model_copy(update={"district_key_file": "district.key"})})
    [keys] = [r for r in run_checks(rooted, tmp_path, broker=False) if r.name == "keys"]
    assert not keys.ok and "must not hold the district root key" in keys.detail
    # A gateway whose bundle has run out cannot pseudonymise: the checklist says so before the gate opens.
    (tmp_path / "data" / "epoch-keys.db").unlink()
    [keys] = [r for r in run_checks(cfg, tmp_path, broker=False) if r.name == "keys"]
    assert not keys.ok and "edgegw keys import" in keys.detail


def test_keys_arrive_as_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = new_gateway(tmp_path)
    creds = tmp_path / "credentials"  # what systemd makes of LoadCredentialEncrypted=: a private 0400 file
    creds.mkdir(mode=0o700)
    for name in ("gateway.key", "data.key"):
        (tmp_path / "data" / name).rename(creds / name)
        (creds / name).chmod(0o400)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["keys", "status", "--config", str(cfg_path)]) == 1  # neither in data_dir nor a credential
    assert "gateway.key does not exist" in capsys.readouterr().err
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert main(["keys", "status", "--config", str(cfg_path)]) == 0
    assert "plate\t" in capsys.readouterr().out


def test_a_pinned_key_service_refuses_bundles_anyone_else_wrapped(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    # Anyone who knows a gateway's public key can wrap keys of their choosing to it; if an installer
    # imported such a bundle, the gateway would publish pseudonyms the forger can reverse.
    root = bytes(range(1, 33))
    district = KeyService(root, signing_seed=b"\x11" * 32)
    forger = KeyService(b"\x22" * 32, signing_seed=b"\x33" * 32)
    unsigned = KeyService(b"\x22" * 32)
    mine = GatewayIdentity(b"\x0d" * 31 + b"\x0e")
    assert district.signing_public_key is not None
    pinned = EpochKeyring(tmp_path / "ring.db", mine, district="d1", community="c1", gateway="g1",
                          trusted_signer=district.signing_public_key)
    with pinned as ring:
        for attacker in (forger, unsigned):
            bundle = attacker.issue(mine.public, district="d1", community="c1", gateway="g1", window_days=30)
            with pytest.raises(EpochKeyError, match=r"not signed|not by this gateway's key service"):
                ring.import_bundle(bundle)
        good = json.loads(district.issue(mine.public, district="d1", community="c1", gateway="g1", window_days=30))
        tampered = {**good, "keys": [{**good["keys"][0], "not_after": good["keys"][0]["not_after"] + 86400 * 365}]}
        with pytest.raises(EpochKeyError, match="does not verify"):
            ring.import_bundle(json.dumps(tampered))
        assert ring.held() == []
        assert ring.import_bundle(json.dumps(good)).imported == len(good["keys"])
    # Without a pinned key, an unsigned bundle is accepted, and the log says what to configure.
    with _ring(tmp_path, mine, [time.time()], "open.db") as ring, caplog.at_level("WARNING"):
        ring.import_bundle(unsigned.issue(mine.public, district="d1", community="c1", gateway="g1", window_days=30))
    assert "privacy.key_service_public_key" in caplog.text
    # A key that would never expire is refused outright.
    forever = json.loads(district.issue(mine.public, district="d1", community="c1", gateway="g1", window_days=30))
    forever["keys"][0]["not_after"] = float("inf")
    with _ring(tmp_path, mine, [time.time()], "inf.db") as ring, pytest.raises(EpochKeyError, match="expires"):
        ring.import_bundle(json.dumps(forever))
