"""Obstruction zones: false alarms and delays on clips assembled from real frames, and CPU per frame.

    .venv/bin/python bench/bench_zones.py [--minutes 30]

Runs each scenario of tests/_clips.py at the shipped defaults (raise after 300 s covered, clear
after 30 s free, 2 modelled frames a second) and prints one row per scenario; `run() -> dict`
returns the same figures. CPU is process time per modelled frame, the resize from the camera's
768x432 frame to the model's 160 px included, and what that costs one camera at 2 frames a second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.pipeline.zoneconfig import ZoneConfig  # noqa: E402
from edge.pipeline.zones import ZoneWatcher  # noqa: E402
from edge.types import Frame  # noqa: E402
from tests._clips import CARS, CARS_ZONE, PEOPLE, PEOPLE_ZONE, Clip, scene_frames  # noqa: E402

T0 = 1.8e9


def _scenarios(minutes: float) -> list[tuple[str, Clip, Any]]:
    d = minutes * 60.0
    on, off = d * 0.2, d * 0.7
    car_box = (0.36, 0.42, 0.56, 0.60)
    return [
        ("people walking, nothing left", Clip(PEOPLE, d), PEOPLE_ZONE),
        ("people + object left", Clip(PEOPLE, d, obj_on=on, obj_off=off), PEOPLE_ZONE),
        ("people + dusk in 20 s (x0.35)", Clip(PEOPLE, d, dim=0.35, ramp=(on, on + 20, off, off + 20)), PEOPLE_ZONE),
        ("people + lights off/on (x0.4)", Clip(PEOPLE, d, dim=0.4, ramp=(on, on + 0.6, off, off + 0.6)), PEOPLE_ZONE),
        ("people + sun in 30 s (x1.6)", Clip(PEOPLE, d, dim=1.6, ramp=(on, on + 30, off, off + 30)), PEOPLE_ZONE),
        ("people + object + dusk", Clip(PEOPLE, d, obj_on=on, obj_off=off, dim=0.35,
                                        ramp=(on + 60, on + 80, off - 60, off - 40)), PEOPLE_ZONE),
        ("people + camera knocked aside", Clip(PEOPLE, d, moved_at=on), PEOPLE_ZONE),
        ("car park traffic, nothing left", Clip(CARS, d), CARS_ZONE),
        ("car park + object left", Clip(CARS, d, obj_on=on, obj_off=off, obj_box=car_box), CARS_ZONE),
        ("object there at start, removed (no saved background)", Clip(PEOPLE, d, obj_on=0.0, obj_off=on), PEOPLE_ZONE),
    ]


def _score(name: str, clip: Clip, points: Any) -> dict[str, Any]:
    zone = ZoneConfig(id="lane", camera="cam1", polygon=points, rule="obstruction")
    watcher = ZoneWatcher("cam1", [zone])
    alarms = [(o.ts - T0, str(o.attrs["state"]), o.attrs) for f in clip.frames(T0) for o in watcher.process(f)]
    raises = [t for t, s, _ in alarms if s == "raised"]
    clears = [t for t, s, _ in alarms if s == "cleared"]
    row: dict[str, Any] = {"scenario": name, "raised": len(raises), "cleared": len(clears)}
    real_object = clip.obj_on is not None and clip.obj_on > 0.0
    if real_object:
        assert clip.obj_on is not None and clip.obj_off is not None
        truth_on = clip.obj_on + zone.raise_after_s
        ok = [t for t in raises if truth_on - 1 <= t <= clip.obj_off + zone.clear_after_s + 60]
        row["false_alarms"] = len(raises) - min(1, len(ok))
        row["missed"] = not ok
        row["raise_delay_s"] = round(ok[0] - truth_on, 1) if ok else None
        later = [t for t in clears if t >= clip.obj_off]
        row["clear_delay_s"] = round(later[0] - clip.obj_off - zone.clear_after_s, 1) if later else None
        row["covered_at_raise"] = next((a["covered"] for t, s, a in alarms if s == "raised"), None)
    else:
        row["false_alarms"] = len(raises)
    return row


def _cpu(n: int = 400) -> dict[str, Any]:
    frames = scene_frames(PEOPLE, 2.0, 768)  # the camera's own resolution: the resize is part of the cost
    zones = [ZoneConfig(id=f"z{i}", camera="cam1", polygon=PEOPLE_ZONE, rule="obstruction") for i in range(4)]
    watcher = ZoneWatcher("cam1", zones)
    times: list[float] = []
    for i in range(n):
        frame = Frame("cam1", i, T0 + i * 0.5, frames[i % len(frames)])
        t = time.process_time()
        watcher.process(frame)
        times.append(time.process_time() - t)
    times = times[10:]  # warm-up: first allocations
    per_frame_ms = statistics.fmean(times) * 1000
    return {"per_frame_ms_mean": round(per_frame_ms, 3),
            "per_frame_ms_p90": round(sorted(times)[int(len(times) * 0.9)] * 1000, 3),
            "zones": len(zones), "model_width_px": watcher.model.config.width, "camera_px": "768x432",
            "cpu_pct_of_one_core_at_2fps": round(per_frame_ms * 2 / 10, 3)}


def run(minutes: float = 30.0) -> dict[str, Any]:
    """Every scenario and the CPU figures."""
    rows = [_score(name, clip, pts) for name, clip, pts in _scenarios(minutes)]
    return {"minutes_per_clip": minutes, "scenarios": rows, "cpu": _cpu()}


def main() -> None:
    """Print the table (and the JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = run(args.minutes)
    if args.json:
        print(json.dumps(res, indent=2, ensure_ascii=False))
        return
    print(f"{'scenario':55s} {'raised':>6s} {'false':>5s} {'raise delay s':>13s} {'clear delay s':>13s} "
          f"{'covered':>7s}")
    for r in res["scenarios"]:
        print(f"{r['scenario']:55s} {r['raised']:6d} {r['false_alarms']:5d} "
              f"{r.get('raise_delay_s', '-')!s:>13s} {r.get('clear_delay_s', '-')!s:>13s} "
              f"{r.get('covered_at_raise', '-')!s:>7s}")
    c = res["cpu"]
    print(f"CPU: {c['per_frame_ms_mean']} ms per modelled frame (p90 {c['per_frame_ms_p90']} ms, {c['zones']} zones, "
          f"{c['camera_px']} -> {c['model_width_px']} px): {c['cpu_pct_of_one_core_at_2fps']} % of one core at 2 fps")


if __name__ == "__main__":
    main()
