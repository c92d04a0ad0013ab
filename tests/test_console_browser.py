"""The console in a real browser: Debian's chromium driven by Playwright (nothing downloaded), against the
real capture daemon playing a real photo through the real face model and the real console process.

A preview frame appears within 5 s; the overlay toggle changes the image; a bad gate line is refused with
the validator's message shown; a good one is saved and capture applies it without a restart; a viewer
cannot open the editor; a zone and a mask drawn on the snapshot are saved and capture runs them
without a restart (the mask blacks out the preview), bad polygons are refused with the validator's
message; a viewer cannot open the zone editor either; login lockout works; a card swiped on a real
pseudo-terminal shows masked.
Screenshots of each page are kept under tests/artifacts/console/ (git-ignored).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.serial.rdm6300 import encode
from tests.conftest import MODELS_DIR, ROOT, SHARED_DATA, free_port, new_gateway

pytestmark = pytest.mark.models

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts" / "console"
OBAMA = SHARED_DATA / "faces" / "face_recognition" / "obama" / "obama.jpg"
CARD = bytes.fromhex("1A2B3C4D5E")


@dataclass
class Gateway:
    cfg: Path
    url: str
    admin_password: str
    capture: subprocess.Popen[str]
    console: subprocess.Popen[str]
    card_master: int
    capture_log: list[str]


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium (.ci/run installs it)")
    tmp = tmp_path_factory.mktemp("console")
    master, slave = os.openpty()
    port = free_port()
    cfg = new_gateway(tmp, f"""
[models]
dir = "{MODELS_DIR}"

[[cameras]]
id = "gate1"
kind = "file"
path = "{OBAMA}"
pace = "realtime"
fps = 5
loop = true

[[serial]]
id = "reader1"
port = "{os.ttyname(slave)}"
format = "rdm6300"

[gate_lines.gate1]
a = [0, 200]
b = [600, 200]

[metrics]
enabled = false

[console]
port = {port}
""")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    capture = subprocess.Popen([sys.executable, "-m", "edge.cli", "-v", "capture", "--config", str(cfg)], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    console = subprocess.Popen([sys.executable, "-m", "edge.cli", "console", "--config", str(cfg)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert console.stdout is not None
    password = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not password:
        line = console.stdout.readline()
        m = re.search(r"password (\S+) \(you must change it\)", line)
        if m:
            password = m.group(1)
        if not line and console.poll() is not None:
            break
    assert password, "the console printed no first-boot password"
    _cli("console", "user", "add", "ina", "--role", "installer", "--password", "installer-pass-1", "--config", str(cfg))
    _cli("console", "user", "add", "lou", "--role", "installer", "--password", "lockout-pass-1", "--config", str(cfg))
    _cli("console", "user", "add", "vic", "--role", "viewer", "--password", "viewer-pass-12", "--config", str(cfg))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log: list[str] = []

    def drain() -> None:  # a full pipe would stall capture; the lines are read by the editor test
        assert capture.stdout is not None
        for line in capture.stdout:
            log.append(line)

    threading.Thread(target=drain, daemon=True).start()
    gw = Gateway(cfg, f"http://127.0.0.1:{port}", password, capture, console, master, log)
    yield gw
    _stop(console)
    _stop(capture)
    os.close(master)
    os.close(slave)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def installer(gateway: Gateway, browser: object) -> Iterator[object]:
    """One logged-in installer session for the tests that need one."""
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    _first_login(page, gateway.url, "ina", "installer-pass-1")
    page.close()
    yield context
    context.close()


def _first_login(page: object, url: str, user: str, password: str) -> None:
    # `console user add` hands out a first password that must be changed at first login.
    _login(page, url, user, password)
    page.wait_for_url("**/password")  # type: ignore[attr-defined]
    page.fill("input[name=current]", password)  # type: ignore[attr-defined]
    page.fill("input[name=new]", password + "-own")  # type: ignore[attr-defined]
    page.fill("input[name=again]", password + "-own")  # type: ignore[attr-defined]
    page.click("main button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(url + "/")  # type: ignore[attr-defined]


def _login(page: object, url: str, user: str, password: str) -> None:
    page.goto(url + "/login")  # type: ignore[attr-defined]
    page.fill("input[name=username]", user)  # type: ignore[attr-defined]
    page.fill("input[name=password]", password)  # type: ignore[attr-defined]
    page.click("main button[type=submit]")  # type: ignore[attr-defined]


def test_first_login_must_change_password_then_dashboard(gateway: Gateway, browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(gateway.url + "/login")
    page.screenshot(path=str(ARTIFACTS / "01-login.png"))
    _login(page, gateway.url, "admin", gateway.admin_password)
    page.wait_for_url("**/password")
    page.screenshot(path=str(ARTIFACTS / "02-change-password.png"))
    page.fill("input[name=current]", gateway.admin_password)
    page.fill("input[name=new]", "admin-chosen-pass")
    page.fill("input[name=again]", "admin-chosen-pass")
    page.click("main button[type=submit]")
    try:
        page.wait_for_selector("#tile-camera-gate1")
    except Exception:
        (ARTIFACTS / "failed.html").write_text(page.content())
        raise
    # The tiles refresh through htmx (served by the gateway): wait until capture's state shows up.
    page.wait_for_function("() => document.querySelector('#tile-camera-gate1').innerText.includes('connected')",
                           timeout=30_000)
    page.wait_for_selector("#tile-port-reader1")
    page.screenshot(path=str(ARTIFACTS / "03-dashboard.png"), full_page=True)
    page.close()


def test_preview_overlay_and_aiming(gateway: Gateway, installer: object) -> None:
    page = installer.new_page()  # type: ignore[attr-defined]
    page.goto(gateway.url + "/camera/gate1")
    t0 = time.monotonic()
    page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0", timeout=5_000)
    assert time.monotonic() - t0 < 5.0  # a preview frame within 5 s
    # The gauge's text names its thresholds in px before any face is measured; wait for a verdict
    # (the capture daemon's first measurements, later on a loaded machine) rather than for that text.
    page.wait_for_function("() => document.getElementById('gauge') !== null && "
                           "document.getElementById('gauge').dataset.verdict !== 'none'", timeout=30_000)
    time.sleep(1.0)
    with_overlay = page.locator("#preview").screenshot()
    page.screenshot(path=str(ARTIFACTS / "04-preview-overlay.png"), full_page=True)
    gauge = page.locator("#gauge")
    assert gauge.get_attribute("data-verdict") in ("ok", "warn", "fail")
    page.uncheck("#overlay")
    deadline = time.monotonic() + 10
    changed = False
    while time.monotonic() < deadline and not changed:
        time.sleep(0.5)
        changed = page.locator("#preview").screenshot() != with_overlay
    assert changed, "the overlay toggle did not change the image"
    page.screenshot(path=str(ARTIFACTS / "05-preview-plain.png"), full_page=True)
    page.close()


def test_gate_line_editor_refuses_bad_and_saves_good(gateway: Gateway, installer: object) -> None:
    page = installer.new_page()  # type: ignore[attr-defined]
    page.goto(gateway.url + "/camera/gate1/editor")
    page.wait_for_function("() => document.getElementById('snapshot').naturalWidth > 0", timeout=10_000)
    for field, value in (("ax", "120"), ("ay", "80"), ("bx", "120"), ("by", "80")):
        page.fill(f"#{field}", value)
    page.click("#save")
    error = page.wait_for_selector("#error")
    assert "gate line end points must differ" in error.inner_text()
    page.screenshot(path=str(ARTIFACTS / "06-editor-refused.png"), full_page=True)
    # A good line, drawn by clicking two points on the snapshot.
    page.wait_for_function("() => document.getElementById('snapshot').naturalWidth > 0", timeout=10_000)
    box = page.locator("#drawing").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 5, box["y"] + box["height"] * 0.6)
    page.mouse.click(box["x"] + box["width"] - 5, box["y"] + box["height"] * 0.65)
    page.click("#save")
    saved = page.wait_for_selector("#saved")
    assert "Saved" in saved.inner_text()
    page.screenshot(path=str(ARTIFACTS / "07-editor-saved.png"), full_page=True)
    text = gateway.cfg.read_text()
    assert "[gate_lines.gate1]" in text and (gateway.cfg.parent / "gw.toml.prev").exists()
    page.close()
    # Capture applies it without a restart (it looks at the config every status interval).
    out = _capture_log_until(gateway, "gate line(s) updated without a restart: gate1")
    assert "gate line(s) updated without a restart: gate1" in out


def _click_polygon(page: object, corners: tuple[tuple[float, float], ...]) -> None:
    box = page.locator("#shapes-drawing").bounding_box()  # type: ignore[attr-defined]
    assert box is not None
    for fx, fy in corners:
        page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)  # type: ignore[attr-defined]


def test_zone_and_mask_editor_refuses_bad_polygons(gateway: Gateway, installer: object) -> None:
    page = installer.new_page()  # type: ignore[attr-defined]
    page.goto(gateway.url + "/camera/gate1/zones")
    page.wait_for_function("() => document.getElementById('snapshot').naturalWidth > 0", timeout=10_000)
    before = gateway.cfg.read_text()
    size = page.get_attribute("#snapshot", "data-width"), page.get_attribute("#snapshot", "data-height")
    w, h = int(size[0] or 0), int(size[1] or 0)
    assert w > 0 and h > 0
    cases = (
        ("bow", f"0,0 {w - 1},{h - 1} {w - 1},0 0,{h - 1}", "crosses itself", "13-zones-refused-crossing.png"),
        ("two", "10,10 200,10", "at least 3 points", "14-zones-refused-two-points.png"),
        ("off", f"0,0 {w + 300},0 {w + 300},{h - 1}", "outside the frame", "15-zones-refused-outside.png"),
    )
    for zone_id, points, message, shot in cases:
        row = page.locator("tr.shape[data-kind=zone]").first
        row.locator("input.shape-id").fill(zone_id)
        row.locator("input.points").fill(points)
        page.click("#save-shapes")
        error = page.wait_for_selector("#error")
        assert message in error.inner_text(), error.inner_text()
        assert "zones.zone.0.polygon" in error.inner_text()  # the validator's own words, naming the key
        page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    # A refused drawing is given back as typed, to fix rather than redraw.
    assert page.locator("tr.shape[data-kind=zone]").first.locator("input.points").input_value() == cases[-1][1]
    assert gateway.cfg.read_text() == before
    page.close()


def test_zone_and_mask_drawn_saved_and_run_by_capture(gateway: Gateway, installer: object) -> None:
    import cv2
    import numpy as np

    page = installer.new_page()  # type: ignore[attr-defined]
    page.set_viewport_size({"width": 1280, "height": 1600})  # the portrait snapshot whole on screen, to click on
    page.goto(gateway.url + "/camera/gate1/zones")
    page.wait_for_function("() => document.getElementById('snapshot').naturalWidth > 0", timeout=10_000)
    # A dwell zone across the lower half, clicked corner by corner on the snapshot.
    zone = page.locator("tr.shape[data-kind=zone]").first
    zone.locator("input.active").check()
    _click_polygon(page, ((0.05, 0.55), (0.95, 0.55), (0.95, 0.95), (0.05, 0.95)))
    zone.locator("input.shape-id").fill("stall")
    zone.locator("select[name=rule]").select_option("dwell")
    zone.locator("input[name=dwell_s]").fill("30")
    assert len(zone.locator("input.points").input_value().split()) == 4
    # A mask over the top-left corner (a neighbour's window, say).
    mask = page.locator("tr.shape[data-kind=mask]").first
    mask.locator("input.active").check()
    _click_polygon(page, ((0.0, 0.0), (0.35, 0.0), (0.35, 0.3), (0.0, 0.3)))
    mask.locator("input.shape-id").fill("window")
    page.screenshot(path=str(ARTIFACTS / "16-zones-drawn.png"), full_page=True)
    page.click("#save-shapes")
    saved = page.wait_for_selector("#saved, #error")
    assert "Saved" in saved.inner_text(), saved.inner_text()
    from edge.app.config import load_config

    cfg = load_config(gateway.cfg)
    assert [(z.id, z.rule, z.dwell_s) for z in cfg.zones.zone] == [("stall", "dwell", 30.0)]
    assert [m.id for m in cfg.masks] == ["window"]
    assert (gateway.cfg.parent / "gw.toml.prev").exists()
    # Capture runs them without a restart: its status says so, and the page shows it.
    page.wait_for_function("() => { const a = document.getElementById('applied-zones');"
                           " return a && a.dataset.zones.split(',').includes('stall') && a.dataset.masks === '1'; }",
                           timeout=30_000)
    out = _capture_log_until(gateway, "masks updated without a restart: gate1")
    assert "zones updated without a restart: gate1" in out and "masks updated without a restart: gate1" in out
    assert capture_pid_alive(gateway)
    page.screenshot(path=str(ARTIFACTS / "17-zones-applied.png"), full_page=True)
    # The mask takes effect: the picture capture hands the console is black under it, and not elsewhere.
    dark = bright = 0.0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = page.request.get(gateway.url + "/camera/gate1/snapshot.jpg")
        assert r.status == 200
        img = cv2.imdecode(np.frombuffer(r.body(), np.uint8), cv2.IMREAD_GRAYSCALE)
        ih, iw = img.shape
        dark = float(img[int(ih * 0.03):int(ih * 0.27), int(iw * 0.03):int(iw * 0.32)].mean())
        bright = float(img[int(ih * 0.35):int(ih * 0.5), int(iw * 0.5):int(iw * 0.9)].mean())
        if dark < 8:
            break
        time.sleep(0.5)
    assert dark < 8 and bright > 30, (dark, bright)
    page.goto(gateway.url + "/camera/gate1")
    page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0", timeout=10_000)
    time.sleep(1.0)
    page.screenshot(path=str(ARTIFACTS / "18-preview-zone-mask.png"), full_page=True)
    page.close()


def capture_pid_alive(gateway: Gateway) -> bool:
    """Capture was not restarted to apply the edit: the same process still runs."""
    return gateway.capture.poll() is None


def _capture_log_until(gateway: Gateway, needle: str, timeout: float = 30.0) -> str:
    # The capture log is drained by a thread (see the fixture): wait until the needle shows up.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = "".join(gateway.capture_log)
        if needle in seen:
            return seen
        time.sleep(0.2)
    return "".join(gateway.capture_log)


def test_serial_swipe_test_shows_masked_card(gateway: Gateway, installer: object) -> None:
    page = installer.new_page()  # type: ignore[attr-defined]
    page.goto(gateway.url + "/serial")
    page.wait_for_selector("#swipes li")
    time.sleep(1.5)  # the page's lease reaches capture
    for _ in range(10):  # swipe again if a swipe went unseen, as a person at the reader would
        os.write(gateway.card_master, encode(CARD))
        if page.locator("#swipes li.swipe").count():
            break
        page.wait_for_timeout(1500)
    assert page.locator("#swipes li.swipe").count(), "".join(gateway.capture_log[-30:])
    shown = page.locator("#swipes").inner_text()
    assert "•" in shown and CARD.hex().upper() not in shown.upper()
    page.screenshot(path=str(ARTIFACTS / "08-serial-swipe.png"), full_page=True)
    page.goto(gateway.url + "/checks")
    page.screenshot(path=str(ARTIFACTS / "09-checks.png"), full_page=True)
    page.goto(gateway.url + "/events")
    page.screenshot(path=str(ARTIFACTS / "10-events.png"), full_page=True)
    page.close()


def test_viewer_cannot_open_the_editor(gateway: Gateway, browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    _first_login(page, gateway.url, "vic", "viewer-pass-12")
    assert page.locator("text=gate line").count() == 0
    resp = page.goto(gateway.url + "/camera/gate1/editor")
    assert resp is not None and resp.status == 403
    assert "may not open this page" in page.inner_text("#forbidden")
    page.screenshot(path=str(ARTIFACTS / "11-viewer-forbidden.png"), full_page=True)
    assert page.locator("text=zones & masks").count() == 0
    resp = page.goto(gateway.url + "/camera/gate1/zones")
    assert resp is not None and resp.status == 403
    assert "may not open this page" in page.inner_text("#forbidden")
    page.screenshot(path=str(ARTIFACTS / "19-viewer-forbidden-zones.png"), full_page=True)
    page.close()


def test_login_lockout(gateway: Gateway, browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    for _ in range(5):
        _login(page, gateway.url, "lou", "not-the-password")
        assert "Wrong user name or password" in page.inner_text("#error")
        time.sleep(1.1)
    _login(page, gateway.url, "lou", "lockout-pass-1")  # right, but the sixth try within a minute
    assert "Too many login attempts" in page.inner_text("#error")
    assert page.url.endswith("/login")
    page.screenshot(path=str(ARTIFACTS / "12-login-locked.png"), full_page=True)
    page.close()
