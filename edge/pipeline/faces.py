"""One camera's face path: detect, track, and at the end of each track embed its best frames once.

One person walking past yields one track and so one `face_passage` observation, decided as soon
as the track has enough good frames (`decision: early`, while the person is still at the gate) or
when it ends (`track_end`); a track too poor to match is reported "unmatched: quality". The embedding is
the mean of the best few aligned crops (by size, sharpness and frontalness), matched against the
resident gallery; an unmatched face gets a random per-track reference, never an identity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from edge.ids import random_ref
from edge.pipeline.config import FaceConfig
from edge.pipeline.early import EarlyDecisions
from edge.pipeline.tracker import GateLine, IouTracker, TrackerConfig, track_direction
from edge.pipeline.zones import DwellMonitor
from edge.residents import ResidentGallery
from edge.types import Box, Detection, EventKind, Frame, IdKind, Observation, RawIdentifier, Track
from edge.vision.face_quality import assess, score_bound
from edge.vision.faces import FaceAnalyzer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FaceSample:
    """What a face track keeps of one frame: the aligned crop and its quality."""

    aligned: NDArray[np.uint8] = field(repr=False)
    quality: float
    ts: float


class FacePath:
    """Frames in, `face_passage` observations out (one per finished track)."""

    def __init__(
        self,
        source_id: str,
        analyzer: FaceAnalyzer,
        gallery: ResidentGallery | None,
        config: FaceConfig,
        gate_line: GateLine | None = None,
        *,
        dwell: DwellMonitor | None = None,
    ) -> None:
        self.source_id = source_id
        self._dwell = dwell
        self._analyzer = analyzer
        self._gallery = gallery
        self._cfg = config
        self._gate = gate_line
        self._tracker: IouTracker[FaceSample] = IouTracker(
            source_id,
            quality=lambda s: s.quality,
            config=TrackerConfig(max_age_s=config.track_max_age_s, min_hits=config.track_min_hits,
                                 best_k=config.embed_best),
        )
        self.tracks_finished = 0
        self.decisions = EarlyDecisions()
        self.faces_detected = 0
        self.last_boxes: list[Box] = []
        """The faces of the last frame detection ran on (for the aiming gauge and the preview)."""

    def process(self, frame: Frame) -> list[Observation]:
        """Detect faces in `frame`, update tracks, and report the tracks that ended."""
        min_px = self._cfg.min_face_px
        # Alignment starts from the detector's downscaled copy where a face needs that much shrinking
        # anyway: the frame is not averaged down a second time for every face.
        found, shrunk = self._analyzer.detect_shrunk(frame.image)
        dets = [d for d in found if min(d.box.width, d.box.height) >= min_px]
        self.faces_detected += len(dets)
        self.last_boxes = [d.box for d in dets]

        def sample(det: Detection) -> FaceSample:
            aligned = self._analyzer.align(frame.image, det, shrunk)
            return FaceSample(aligned, assess(det, aligned).score, frame.ts)

        # Aligning and scoring a face (0.3 ms) is most of the pipeline's own time: the tracker asks
        # for a sample only while the track is undecided and the face could enter its best few
        # (`score_bound` is exact as a bound, so the kept samples are the same as aligning all).
        ended = self._observe(self._tracker.update(frame.ts, dets, sample, score_bound))
        return ended + self._early(frame.ts) + self._dwelling(frame.ts, frame.shape)

    @property
    def gate_line(self) -> GateLine | None:
        """The line crossing which gives a track its direction."""
        return self._gate

    def set_gate_line(self, line: GateLine | None) -> None:
        """Replace the gate line (an installer moved it): tracks from now on use the new one."""
        self._gate = line

    def idle(self, ts: float) -> list[Observation]:
        """No detection ran on this frame (nothing moved): end tracks that are too old."""
        ended = self._observe(self._tracker.expire(ts))
        return ended + (self._dwell.expire(ts) if self._dwell is not None else [])

    def _dwelling(self, ts: float, shape: tuple[int, int]) -> list[Observation]:
        # Dwell alarms from the open tracks; a face alarm never carries who it is (no subject).
        return self._dwell.update(self._tracker.live(), ts, shape) if self._dwell is not None else []

    def finish(self) -> list[Observation]:
        """End of input: report every open track."""
        return self._observe(self._tracker.flush())

    def _early(self, ts: float) -> list[Observation]:
        """Decide open tracks that already have enough good frames: embed them once, now."""
        cfg = self._cfg
        if cfg.early_min_hits <= 0:
            return []
        ready = []
        for track in self._tracker.peek():
            if track.track_id in self.decisions or track.hits < cfg.early_min_hits:
                continue
            good = [s for s in track.samples if s.quality >= cfg.min_match_quality]
            if len(good) >= min(cfg.embed_best, cfg.early_min_hits):
                ready.append(track)
        out = self._embed_and_match(ready, ts=ts, decision="early")
        for track in ready:
            # Decided: nothing later reads its samples (its end emits nothing), so stop building them.
            self._tracker.freeze(track.track_id)
        return [replace(obs, event_id=self.decisions.decide(track.track_id, "", len(track.samples), ts))
                for track, obs in zip(ready, out, strict=True)]

    def _observe(self, tracks: list[Track[FaceSample]]) -> list[Observation]:
        # A track decided early is final: its end emits nothing (the early event is the passage).
        undecided = [t for t in tracks if self.decisions.close(t.track_id) is None]
        out = self._embed_and_match(undecided, ts=None, decision="track_end")
        self.tracks_finished += len(tracks)
        return out

    def _embed_and_match(self, tracks: list[Track[FaceSample]], *, ts: float | None,
                         decision: str) -> list[Observation]:
        if not tracks:
            return []
        # One batched embedding call for every sample of every track.
        crops = [s.aligned for t in tracks for s in t.samples]
        embeddings = self._analyzer.embed(np.stack(crops))
        out: list[Observation] = []
        start = 0
        for track in tracks:
            n = len(track.samples)
            mean = embeddings[start:start + n].mean(axis=0)
            start += n
            mean = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
            out.append(self._observation(track, mean, ts=track.last_ts if ts is None else ts, decision=decision))
        return out

    def _observation(self, track: Track[FaceSample], embedding: NDArray[np.float32], *, ts: float,
                     decision: str) -> Observation:
        quality = max(s.quality for s in track.samples)
        # A track too poor to match is never matched: "unmatched: quality" beats a wrong match.
        poor = quality < self._cfg.min_match_quality
        match = None if poor or not self._gallery else self._gallery.match(embedding, self._cfg.match_threshold)
        attrs: dict[str, str | int | float | bool] = {
            "matched": bool(match and match.resident_id),
            "quality": round(quality, 3),
            "frames": track.hits,
            "embedded": len(track.samples),
            "duration_s": round(track.duration, 3),
            "threshold": self._cfg.match_threshold,
            "direction": track_direction(track, self._gate).value,
            "decision": decision,
        }
        if match is not None and match.resident_id is not None:
            # Only a match publishes its similarity: an unknown face's best gallery score would tell a
            # subscriber how close a stranger came to some resident (issue 12).
            attrs["confidence"] = round(max(-1.0, min(1.0, match.score)), 4)
        if match is not None and match.resident_id is not None:
            return Observation(EventKind.FACE_PASSAGE, self.source_id, ts,
                               subject=RawIdentifier(IdKind.RESIDENT, match.resident_id), attrs=attrs,
                               embedding=embedding)
        attrs["unmatched"] = "quality" if poor else "no_resident"
        return Observation(EventKind.FACE_PASSAGE, self.source_id, ts, subject_ref=random_ref(),
                           attrs=attrs, embedding=embedding)
