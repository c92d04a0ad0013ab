"""What the console costs capture: capture's CPU with nobody watching, with one preview open, and idle again.

The real capture daemon plays a real photo letterboxed to 1280x720 at 15 fps (motion gate on, face path,
as at a quiet gate); the real console serves it; phase B streams /camera/gate1/stream.mjpg through the
console exactly as a browser does (720p at 4 fps, overlay on). CPU is read from /proc for each process
(user + system, all threads) over each phase. Goals: idle within noise of the baseline; one preview
≤ 15 % of one core at 720p, 4 fps.

Each run of the four phases (no console, console idle, one preview, idle again) starts and stops the
console on the same capture daemon; with `--repeat N` the figures are the medians of N runs, and the
machine's `uptime` at start and end is kept with them (a shared machine's load moves the figures).
`make bench` (bench/run.py) runs it as its `console` section.

Run: `.venv/bin/python bench/bench_console.py [--phase-s 20] [--repeat 3]` (prints a table, writes
bench/results_console.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import MODELS_DIR, ROOT, SHARED_DATA, letterbox
from edge.app.config import load_config
from edge.app.provision import provision_epoch_keys
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


def run(phase_s: float = 20.0, repeats: int = 1) -> dict[str, Any]:
    """Measure the four phases `repeats` times on one capture daemon; the figures are the medians."""
    tmp = Path(tempfile.mkdtemp(prefix="edgegw-bench-console-"))
    data = tmp / "data"
    data.mkdir()
    generate_key_file(data / "data.key")
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
    # The gateway identity and its epoch keys, issued from a stand-in district root key (as the tests do).
    provision_epoch_keys(load_config(cfg), data / "district.key")
    users = UserStore(data / "console" / "console.db")  # where the console looks (console.db, relative to data_dir)
    users.add("bench", Role.INSTALLER, "bench-password-1", must_change=False)
    cookie = users.open_session("bench")
    users.close()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    uptime_start = _uptime()
    capture = subprocess.Popen([sys.executable, "-m", "edge.cli", "capture", "--config", str(cfg)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs: list[dict[str, float]] = []
    try:
        time.sleep(12.0)  # models loaded, the first frames through
        for _ in range(max(1, repeats)):
            runs.append(_one_run(cfg, port, cookie, capture.pid, env, phase_s))
    finally:
        capture.send_signal(signal.SIGTERM)
        capture.wait(60)
    keys = list(runs[0])
    medians = {k: round(statistics.median(r[k] for r in runs), 2) for k in keys}
    return {**medians, "repeats": len(runs), "per_run": runs, "phase_s": phase_s,
            "load_average_1m": round(os.getloadavg()[0], 2), "uptime_start": uptime_start, "uptime_end": _uptime()}


def _uptime() -> str:
    # The machine is shared: the load at the time is part of the figure.
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()[0]:.2f}"


def _one_run(cfg: Path, port: int, cookie: str, capture_pid: int, env: dict[str, str],
             phase_s: float) -> dict[str, float]:
    """No console; console idle; one preview; idle again; the console stopped at the end."""
    no_console = _phase({"capture": capture_pid}, phase_s)
    console = subprocess.Popen([sys.executable, "-m", "edge.cli", "console", "--config", str(cfg)], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(4.0)
        pids = {"capture": capture_pid, "console": console.pid}
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
        if frames == 0:  # no stream, no figure: a preview phase without frames measured nothing
            raise RuntimeError("the preview delivered no frame (is the session cookie the console's?)")
        stop.set()
        viewer.join(10)
        time.sleep(4.0)  # the lease lapses
        idle_again = _phase(pids, phase_s)
    finally:
        console.send_signal(signal.SIGTERM)
        console.wait(60)
    return {
        "capture_cpu_pct_no_console": no_console["capture"],
        "capture_cpu_pct_console_idle": baseline["capture"],
        "capture_cpu_pct_one_preview_720p_4fps": preview["capture"],
        "capture_cpu_pct_idle_again": idle_again["capture"],
        "console_idle_cost_pct_of_a_core": round(baseline["capture"] - no_console["capture"], 2),
        "preview_cost_pct_of_a_core": round(preview["capture"] - (baseline["capture"] + idle_again["capture"]) / 2, 2),
        "console_cpu_pct_idle": baseline["console"],
        "console_cpu_pct_streaming": preview["console"],
        "preview_fps_delivered": round(frames / phase_s, 2),
    }


def main() -> int:
    """Print the table and write bench/results_console.json."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase-s", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of the four phases; figures are medians")
    args = ap.parse_args()
    res = run(args.phase_s, args.repeat)
    rows = [("capture CPU, no console", f"{res['capture_cpu_pct_no_console']} %", "baseline"),
            ("capture CPU, console idle (nobody watching)", f"{res['capture_cpu_pct_console_idle']} %",
             "= baseline ± noise"),
            ("capture CPU, one preview 720p 4 fps", f"{res['capture_cpu_pct_one_preview_720p_4fps']} %", ""),
            ("capture CPU, idle again", f"{res['capture_cpu_pct_idle_again']} %", "= baseline ± noise"),
            ("console idle cost (one core)", f"{res['console_idle_cost_pct_of_a_core']} %", "noise"),
            ("preview cost (one core)", f"{res['preview_cost_pct_of_a_core']} %", "≤ 15 %"),
            ("console CPU idle / streaming", f"{res['console_cpu_pct_idle']} % / {res['console_cpu_pct_streaming']} %",
             ""),
            ("preview frames delivered", f"{res['preview_fps_delivered']} fps", "3-5 fps")]
    for name, value, goal in rows:
        print(f"{name:46} {value:>18}  {goal}")
    print(f"(medians of {res['repeats']} runs of {res['phase_s']:.0f} s phases; uptime at start: "
          f"{res['uptime_start']}; at end: {res['uptime_end']})")
    (ROOT / "bench" / "results_console.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
