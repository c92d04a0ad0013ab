"""The console in a real browser: Debian's chromium driven by Playwright (nothing downloaded), against the
real capture daemon playing a real photo through the real face model and the real console process.

A preview frame appears within 5 s; the overlay toggle changes the image; a bad gate line is refused with
the validator's message shown; a good one is saved and capture applies it without a restart; a viewer
cannot open the editor; login lockout works; a card swiped on a real pseudo-terminal shows masked.
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
    page.wait_for_function("() => document.getElementById('gauge') !== null && "
                           "document.getElementById('gauge').innerText.includes(' px')", timeout=20_000)
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
