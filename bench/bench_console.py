"""What the console costs capture: capture's CPU with nobody watching, with one preview open, and idle again.

The real capture daemon plays a real photo letterboxed to 1280x720 at 15 fps (motion gate on, face path,
as at a quiet gate); the real console serves it; phase B streams /camera/gate1/stream.mjpg through the
console exactly as a browser does (720p at 4 fps, overlay on). CPU is read from /proc for each process
(user + system, all threads) over each phase. Goals: idle within noise of the baseline; one preview
≤ 15 % of one core at 720p, 4 fps.

Run: `.venv/bin/python bench/bench_console.py [--phase-s 20]` (prints a table, writes bench/results_console.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import MODELS_DIR, ROOT, SHARED_DATA, letterbox
from edge.console.users import Role, UserStore
from edge.console.web import COOKIE
from edge.keys import generate_key_file

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _phase(pids: dict[str, int], seconds: float) -> dict[str, float]:
    before = {k: _cpu_s(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return {k: round(100.0 * (_cpu_s(p) - before[k]) / wall, 2) for k, p in pids.items()}


def _stream(url: str, cookie: str, stop: threading.Event, counts: list[int]) -> None:
    with httpx.Client(cookies={COOKIE: cookie}, timeout=30) as client, \
            client.stream("GET", url) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_bytes():
            counts[0] += chunk.count(b"--edgegwframe")
            if stop.is_set():
                break


def run(phase_s: float = 20.0) -> dict[str, object]:
    """Measure the three phases; returns the figures."""
    tmp = Path(tempfile.mkdtemp(prefix="edgegw-bench-console-"))
    data = tmp / "data"
    data.mkdir()
    for name in ("district.key", "data.key"):
        generate_key_file(data / name)
    photo = SHARED_DATA / "faces" / "face_recognition" / "obama" / "obama.jpg"
    img = cv2.imread(str(photo))
    assert img is not None, photo
    cv2.imwrite(str(tmp / "scene.jpg"), letterbox(img, 1280, 720))
    port = _free_port()
    cfg = tmp / "gw.toml"
    cfg.write_text(f"""[gateway]
district = "d1"
community = "c1"
gateway = "bench"
data_dir = "{data}"

[models]
dir = "{MODELS_DIR}"

[[cameras]]
id = "gate1"
kind = "file"
path = "{tmp / 'scene.jpg'}"
pace = "realtime"
fps = 15
loop = true

[metrics]
enabled = false

[console]
port = {port}
preview_fps = 4
preview_max_height = 720
""")
    users = UserStore(data / "console.db")
    users.add("bench", Role.INSTALLER, "bench-password-1", must_change=False)
    cookie = users.open_session("bench")
    users.close()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    capture = subprocess.Popen([sys.executable, "-m", "edge.cli", "capture", "--config", str(cfg)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    console: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(12.0)  # models loaded, the first frames through
        no_console = _phase({"capture": capture.pid}, phase_s)
        console = subprocess.Popen([sys.executable, "-m", "edge.cli", "console", "--config", str(cfg)], cwd=ROOT,
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(4.0)
        pids = {"capture": capture.pid, "console": console.pid}
        baseline = _phase(pids, phase_s)
        stop = threading.Event()
        counts = [0]
        viewer = threading.Thread(target=_stream, args=(f"http://127.0.0.1:{port}/camera/gate1/stream.mjpg?overlay=1",
                                                        cookie, stop, counts), daemon=True)
        viewer.start()
        time.sleep(3.0)  # the lease reaches capture
        counts[0] = 0
        preview = _phase(pids, phase_s)
        frames = counts[0]
        stop.set()
        viewer.join(10)
        time.sleep(4.0)  # the lease lapses
        idle_again = _phase(pids, phase_s)
    finally:
        procs = [p for p in (console, capture) if p is not None]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
    load = os.getloadavg()[0]
    return {
        "capture_cpu_pct_no_console": no_console["capture"],
        "capture_cpu_pct_console_idle": baseline["capture"],
        "capture_cpu_pct_one_preview_720p_4fps": preview["capture"],
        "capture_cpu_pct_idle_again": idle_again["capture"],
        "preview_cost_pct_of_a_core": round(preview["capture"] - (baseline["capture"] + idle_again["capture"]) / 2, 2),
        "console_cpu_pct_idle": baseline["console"],
        "console_cpu_pct_streaming": preview["console"],
        "preview_fps_delivered": round(frames / phase_s, 2),
        "phase_s": phase_s,
        "load_average_1m": round(load, 2),
    }


def main() -> int:
    """Print the table and write bench/results_console.json."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase-s", type=float, default=20.0)
    args = ap.parse_args()
    res = run(args.phase_s)
    rows = [("capture CPU, no console", f"{res['capture_cpu_pct_no_console']} %", "baseline"),
            ("capture CPU, console idle (nobody watching)", f"{res['capture_cpu_pct_console_idle']} %",
             "= baseline ± noise"),
            ("capture CPU, one preview 720p 4 fps", f"{res['capture_cpu_pct_one_preview_720p_4fps']} %", ""),
            ("capture CPU, idle again", f"{res['capture_cpu_pct_idle_again']} %", "= baseline ± noise"),
            ("preview cost (one core)", f"{res['preview_cost_pct_of_a_core']} %", "≤ 15 %"),
            ("console CPU idle / streaming", f"{res['console_cpu_pct_idle']} % / {res['console_cpu_pct_streaming']} %",
             ""),
            ("preview frames delivered", f"{res['preview_fps_delivered']} fps", "3-5 fps")]
    for name, value, goal in rows:
        print(f"{name:46} {value:>18}  {goal}")
    print(f"(phases of {res['phase_s']:.0f} s, load average {res['load_average_1m']})")
    (ROOT / "bench" / "results_console.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
