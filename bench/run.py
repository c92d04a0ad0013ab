"""`make bench`: every benchmark in one run, one table on stdout, the same figures in bench/results.json.

Sections: the face race against face_recognition (bench_faces), the capture pipeline (bench_pipeline),
the plate race against agentclpr (bench_plates) and the outbox (bench_outbox) when those modules are
present. A section that cannot run (no data, no peer, no broker) is reported with its reason and its
figures are null; nothing is ever filled in from an earlier run.

    .venv/bin/python bench/run.py [--quick] [--no-peers] [--no-install] [--only faces,pipeline,...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, SkipSection, env_summary, percentiles

RESULTS = ROOT / "bench" / "results.json"
SECTIONS = ("faces", "pipeline", "plates", "outbox")
STAGES = ("decode", "motion_gate", "detect", "align", "embed", "plate_detect", "plate_read", "outbox_commit")
TARGETS = {
    "face_speedup_vs_face_recognition": ">= 10x",
    "plate_speedup_vs_agentclpr": ">= 4x",
    "overhead_pct": "<= 10 %",
    "static_cpu_pct_per_camera": "<= 5 %",
    "peak_rss_mb": "<= 400 MB",
}


def _optional(name: str) -> Any:
    """Another engineer's bench module, or None when it is not in this checkout."""
    try:
        return importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"bench.{name}", "bench"):
            return None
        raise


def _section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one section; a skip or a crash becomes {"skipped"|"error": reason}, never a number."""
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    # Peers log at DEBUG on the root logger (agentocr does); keep the run's output to warnings.
    logging.disable(logging.INFO)
    try:
        out = fn()
    except SkipSection as exc:
        out = {"skipped": str(exc)}
    except Exception as exc:  # one broken section must not hide the others' figures
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        logging.disable(logging.NOTSET)
    out["section_s"] = round(time.perf_counter() - t0, 1)
    print(f"[bench] {name} done in {out['section_s']} s", file=sys.stderr, flush=True)
    return out


def plate_stages(quick: bool) -> dict[str, Any]:
    """Plate detect (locate on a 1280x720 frame) and plate read (one tight crop) latencies."""
    bench_plates = _optional("bench_plates")
    if bench_plates is None:
        raise SkipSection("bench/bench_plates.py is not in this checkout")
    import cv2

    from bench._common import SHARED_DATA, csv_rows
    from edge.models.config import RuntimeOptions
    from edge.plates.reader import PlateReader

    reader = PlateReader(ROOT / "models", RuntimeOptions(intra_op_threads=1))
    frames = bench_plates.scene_frames()[: 4 if quick else None]
    crops = [r["path"] for r in csv_rows(SHARED_DATA / "plates" / "labels.csv") if r.get("kind") != "full_scene"]
    reader.locate(frames[0].image)
    detect: list[float] = []
    for f in frames:
        t0 = time.perf_counter()
        reader.locate(f.image)
        detect.append(time.perf_counter() - t0)
    read: list[float] = []
    for rel in crops[: 8 if quick else 100]:
        image = cv2.imread(str(SHARED_DATA / rel), cv2.IMREAD_COLOR)
        if image is None:
            continue
        t0 = time.perf_counter()
        reader.read_crop(image)
        read.append(time.perf_counter() - t0)
    return {"plate_detect": percentiles(detect), "plate_read": percentiles(read)}


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen sections and derive the headline figures."""
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    peers, install = not args.no_peers, not args.no_install
    res: dict[str, Any] = {"quick": args.quick, "env": env_summary(), "load_avg_start": os.getloadavg()[0]}
    if "faces" in only:
        from bench import bench_faces

        res["faces"] = _section("faces", lambda: bench_faces.run(quick=args.quick, peers=peers,
                                                                   install_peers=install))
    if "pipeline" in only:
        from bench import bench_pipeline

        res["pipeline"] = _section("pipeline", lambda: bench_pipeline.run(quick=args.quick))
    if "plates" in only:
        bench_plates = _optional("bench_plates")
        if bench_plates is None:
            res["plates"] = {"skipped": "bench/bench_plates.py is not in this checkout"}
        else:
            res["plates"] = _section("plates", lambda: bench_plates.run(quick=args.quick, peers=peers,
                                                                         install_peers=install))
        res["plate_stages"] = _section("plate stages", lambda: plate_stages(args.quick))
    if "outbox" in only:
        bench_outbox = _optional("bench_outbox")
        if bench_outbox is None:
            res["outbox"] = {"skipped": "bench/bench_outbox.py is not in this checkout"}
        else:
            kw: dict[str, Any] = {"backlog": 5_000, "seconds": 2.0} if args.quick else {}
            res["outbox"] = _section("outbox", lambda: bench_outbox.run(**kw))
    res["load_avg_end"] = os.getloadavg()[0]
    res.update(headline(res))
    return res


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _why(section: Any, default: str) -> str:
    if isinstance(section, dict):
        for key in ("skipped", "error", "peer_reason"):
            if section.get(key):
                return str(section[key])
    return default


def headline(res: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, each from this run, or None with its reason in `reasons`."""
    faces, pipe, plates = res.get("faces"), res.get("pipeline"), res.get("plates")
    out: dict[str, Any] = {
        "face_speedup_vs_face_recognition": _get(faces, "speedup_vs_face_recognition"),
        "face_tar_at_far_0_1pct": _get(faces, "ours", "verification", "tar_at_far_0_1pct"),
        "face_recognition_tar_at_far_0_1pct": _get(faces, "peer", "verification", "tar_at_far_0_1pct"),
        "plate_speedup_vs_agentclpr": _get(plates, "speedup"),
        "plate_scene_exact_pct": None,
        "agentclpr_scene_exact_pct": None,
        "overhead_pct": _get(pipe, "overhead_pct"),
        "static_cpu_pct_per_camera": _get(pipe, "static", "cpu_pct_of_core"),
        "peak_rss_mb": _get(pipe, "rss", "peak_rss_mb"),
        "fps_per_camera_1280x720": _get(pipe, "fps_per_camera_every_frame_detected"),
    }
    n = _get(plates, "frames")
    if n:
        exact, peer_exact = _get(plates, "ours", "exact"), _get(plates, "peer", "exact")
        out["plate_scene_exact_pct"] = None if exact is None else round(100.0 * exact / n, 1)
        out["agentclpr_scene_exact_pct"] = None if peer_exact is None else round(100.0 * peer_exact / n, 1)
    reasons = {
        "face_speedup_vs_face_recognition": _why(faces, "face section not run"),
        "face_tar_at_far_0_1pct": _get(faces, "ours", "verification", "reason") or _why(faces, "face section not run"),
        "face_recognition_tar_at_far_0_1pct": _get(faces, "peer", "verification", "reason")
        or _why(faces, "face section not run"),
        "plate_speedup_vs_agentclpr": _why(plates, "plate section not run"),
        "plate_scene_exact_pct": _why(plates, "plate section not run"),
        "agentclpr_scene_exact_pct": _why(plates, "plate section not run"),
        "overhead_pct": _why(pipe, "pipeline section not run"),
        "static_cpu_pct_per_camera": _why(pipe, "pipeline section not run"),
        "peak_rss_mb": _get(pipe, "rss", "reason") or _why(pipe, "pipeline section not run"),
        "fps_per_camera_1280x720": _why(pipe, "pipeline section not run"),
    }
    stages: dict[str, Any] = {}
    sources = {
        "decode": _get(pipe, "stages", "decode"),
        "motion_gate": _get(pipe, "stages", "motion_gate"),
        "detect": _get(faces, "stages", "detect"),
        "align": _get(faces, "stages", "align"),
        "embed": _get(faces, "stages", "embed"),
        "plate_detect": _get(res.get("plate_stages"), "plate_detect"),
        "plate_read": _get(res.get("plate_stages"), "plate_read"),
        "outbox_commit": _get(pipe, "stages", "outbox_commit_pipeline"),
    }
    for name in STAGES:
        stages[name] = sources[name] or {"p50_ms": None, "p90_ms": None, "n": 0}
    out["stage_latency_ms"] = stages
    out["reasons"] = {k: v for k, v in reasons.items() if out.get(k) is None}
    return out


def _fmt(x: Any, unit: str = "", digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}{unit}"
    return f"{x}{unit}"


def table(res: dict[str, Any]) -> str:
    """The one table: headline figures with their targets, then stage latencies."""
    faces, pipe, plates, outbox = (res.get(k) or {} for k in ("faces", "pipeline", "plates", "outbox"))
    rows: list[tuple[str, str, str, str, str]] = [("measure", "ours", "peer", "ours/peer", "target")]
    fo, fp = _get(faces, "ours", "frame_ms", "p50_ms"), _get(faces, "peer", "frame_ms", "p50_ms")
    rows.append(("face detect+encode per 1280x720 frame, p50 ms", _fmt(fo), _fmt(fp) + " face_recognition",
                 _fmt(res["face_speedup_vs_face_recognition"], "x", 2) + " (total time)",
                 TARGETS["face_speedup_vs_face_recognition"]))
    rows.append(("face TAR at FAR <= 0.1 % (pairs.csv, same frames)", _fmt(res["face_tar_at_far_0_1pct"], "", 3),
                 _fmt(res["face_recognition_tar_at_far_0_1pct"], "", 3), "", ">= peer"))
    rows.append(("faces found on the race frames", _fmt(_get(faces, "ours", "faces_found")),
                 _fmt(_get(faces, "peer", "faces_found")), "", ""))
    po, pp = _get(plates, "ours", "frame_ms", "p50_ms"), _get(plates, "peer", "frame_ms", "p50_ms")
    rows.append(("plate read per 1280x720 scene, p50 ms", _fmt(po), _fmt(pp) + " agentclpr",
                 _fmt(res["plate_speedup_vs_agentclpr"], "x", 2) + " (median)", TARGETS["plate_speedup_vs_agentclpr"]))
    rows.append(("plate scenes read exactly", _fmt(res["plate_scene_exact_pct"], " %"),
                 _fmt(res["agentclpr_scene_exact_pct"], " %"), "", "> peer"))
    rows.append(("face pipeline frames/s per 1280x720 camera (every frame detected)",
                 _fmt(res["fps_per_camera_1280x720"]), "", "", ""))
    rows.append(("  same, motion gate on (held photos)", _fmt(_get(pipe, "fps_per_camera_motion_gated")), "", "", ""))
    rows.append(("orchestration overhead over bare model calls (CPU s)", _fmt(res["overhead_pct"], " %"), "", "",
                 TARGETS["overhead_pct"]))
    rows.append(("  same, wall time", _fmt(_get(pipe, "overhead_wall_pct"), " %"), "", "", ""))
    rows.append(("static 15 fps 1280x720 scene, CPU % of one core", _fmt(res["static_cpu_pct_per_camera"], " %", 2),
                 "", "", TARGETS["static_cpu_pct_per_camera"]))
    rows.append(("peak RSS, all models + 4 cameras (CaptureDaemon)", _fmt(res["peak_rss_mb"], " MB"), "", "",
                 TARGETS["peak_rss_mb"]))
    if outbox and "skipped" not in outbox and "error" not in outbox:
        rows.append(("outbox commit, events/s (1 per txn / 100 per txn)",
                     f"{_fmt(outbox.get('commit_single_eps'), '', 0)} / {_fmt(outbox.get('commit_batch_eps'), '', 0)}",
                     "", "", ""))
        rows.append(("outbox drain to mosquitto, events/s", _fmt(outbox.get("drain_eps"), "", 0), "", "", ""))
    for name in STAGES:
        st = res["stage_latency_ms"][name]
        rows.append((f"stage {name}, p50 / p90 ms (n)",
                     f"{_fmt(st['p50_ms'], '', 2)} / {_fmt(st['p90_ms'], '', 2)} ({st['n']})", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for key, why in res["reasons"].items():
        lines.append(f"n/a {key}: {why}")
    lines.append(f"(load average {res['load_avg_start']:.1f} at start, {res['load_avg_end']:.1f} at end; "
                 f"{res['env']['cpus']} CPUs; quick={res['quick']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON."""
    p = argparse.ArgumentParser(description="edgegw benchmarks: one table, bench/results.json")
    p.add_argument("--quick", action="store_true", help="tiny inputs (seconds): checks the harness, not speed")
    p.add_argument("--no-peers", action="store_true", help="skip face_recognition and agentclpr")
    p.add_argument("--no-install", action="store_true", help="use the peers only if already installed")
    p.add_argument("--only", default="", help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--json", type=Path, default=RESULTS, help="where to write the figures")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    res = collect(args)
    res["total_s"] = round(time.perf_counter() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(table(res))
    print(f"figures: {args.json} ({res['total_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
