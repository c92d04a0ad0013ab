"""The gate section of `make bench`: plates under gate conditions, faces at distance, early decisions.

Each part is its own module (bench_gate_plates, bench_gate_faces, bench_gate_latency); this one runs
them in turn so a broken part is reported with its reason and the others still give figures.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from bench import bench_gate_faces, bench_gate_latency, bench_gate_plates
from bench._common import SkipSection


def _part(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except SkipSection as exc:
        return {"skipped": str(exc)}
    except Exception as exc:  # one broken part must not hide the others' figures
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def run(*, quick: bool = False, peers: bool = True, install_peers: bool = True) -> dict[str, Any]:
    """All three parts; JSON-ready."""
    return {
        "plates": _part(lambda: bench_gate_plates.run(quick=quick)),
        "faces": _part(lambda: bench_gate_faces.run(quick=quick, peers=peers, install_peers=install_peers)),
        "latency": _part(lambda: bench_gate_latency.run(quick=quick)),
    }


def headline(gate: Any) -> dict[str, Any]:
    """The gate figures for the table: None where a part did not run."""
    def get(*path: str) -> Any:
        d = gate
        for k in path:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    return {
        "plates_native_exact": get("plates", "native", "exact"),
        "plates_720p_exact": get("plates", "letterboxed_720p", "exact"),
        "plates_degraded_exact_min_max": (get("plates", "degraded", "min"), get("plates", "degraded", "max")),
        "plates_degraded_points_below_native": get("plates", "degraded", "points_below_native"),
        "plates_clip_exact": get("plates", "clip", "exact"),
        "plates_scenes": get("plates", "scenes"),
        "plate_frame_ms_720p": get("plates", "letterboxed_720p", "frame_ms", "p50_ms"),
        "faces_tar_clean": get("faces", "conditions", "clean", "ours_tar_at_far_0_1pct"),
        "faces_tar_30px": get("faces", "conditions", "30px", "ours_tar_at_far_0_1pct"),
        "faces_peer_tar_30px": get("faces", "conditions", "30px", "peer_tar_at_far_0_1pct"),
        "faces_false_accepts_gated": sum(
            c["gated_decision"]["false_accepts"] for c in (get("faces", "conditions") or {}).values()),
        "plate_readable_to_event_p50_s": get("latency", "plates", "early", "readable_to_event", "p50_s"),
        "plate_end_to_event_p50_s": get("latency", "plates", "early", "passage_end_to_event", "p50_s"),
        "face_first_to_event_p50_s": get("latency", "faces", "early", "first_frame_to_event", "p50_s"),
        "face_end_to_event_p50_s": get("latency", "faces", "early", "passage_end_to_event", "p50_s"),
        "plate_end_to_event_p50_s_track_end_only": get("latency", "plates", "track_end_only",
                                                       "passage_end_to_event", "p50_s"),
        "face_end_to_event_p50_s_track_end_only": get("latency", "faces", "track_end_only",
                                                      "passage_end_to_event", "p50_s"),
    }
