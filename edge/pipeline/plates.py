"""One camera's plate path: detect and read plates per frame, track vehicles, vote once per track.

One vehicle passing yields one track and so one `plate_passage` observation, emitted as soon as
enough reads agree (`decision: early`) or when the track ends (`track_end`); a rare `correction`
links the early event when the rest of the track outvoted it. The observation carries the voted
plate text as a raw identifier (pseudonymised at the boundary), its colour, layout, the vote's
confidence, whether it is local, and the direction across the gate line. A track whose frames gave
no grammar-valid read is reported as an unread plate with a random reference, never a guess.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge.ids import random_ref
from edge.pipeline.config import PlateConfig
from edge.pipeline.early import EarlyDecisions
from edge.pipeline.tracker import GateLine, IouTracker, TrackerConfig, track_direction
from edge.pipeline.zones import DwellMonitor
from edge.plates.colour import PlateColour
from edge.plates.reader import PlateReader
from edge.plates.values import PlateRead
from edge.plates.vote import PlateVote, VotedPlate
from edge.types import Box, Detection, EventKind, Frame, IdKind, Observation, RawIdentifier, Scalar, Track


@dataclass(frozen=True, slots=True)
class TrackZoom:
    """Track-guided looks at a vehicle's plate where the frame's own detection missed it.

    `zoom`: on a frame where an open track got no detection, the reader looks again around the
    track's predicted plate on a crop where the plate is `refine_width` wide (PlateReader.read_near),
    so a small plate found once is found in the next frames too. A track stops being zoomed after
    `max_misses` looks in a row found nothing (the vehicle left). `lookback_frames`: when a new
    track starts, the same look at its plate in up to this many earlier frames (kept by reference,
    none older than the path's track age). (Averaging a track's registered plate lines into one
    more vote was measured and removed: docs/gate.md, third round.)
    """

    zoom: bool = False
    context: float = 2.0
    min_score: float | None = None
    max_misses: int = 3
    lookback_frames: int = 0


def _quality(read: PlateRead) -> float:
    # Valid reads first, then by confidence: the vote uses the best few frames of the track.
    return (1.0 if read.valid else 0.0) + read.confidence


class PlatePath:
    """Frames in, `plate_passage` observations out (one per finished vehicle track)."""

    def __init__(self, source_id: str, reader: PlateReader, config: PlateConfig,
                 local_prefixes: Sequence[str] = (), gate_line: GateLine | None = None, *,
                 dwell: DwellMonitor | None = None, zoom: TrackZoom | None = None) -> None:
        self.source_id = source_id
        self._zoom = zoom or TrackZoom(zoom=config.zoom, lookback_frames=config.zoom_lookback_frames)
        self._zoom_misses: dict[int, int] = {}
        self._recent: deque[tuple[float, NDArray[np.uint8]]] = deque(maxlen=max(1, self._zoom.lookback_frames))
        self.zoom_reads = 0
        """Plates found by a track-guided look (zoom or look-back) that the frame's detection missed."""
        self._dwell = dwell
        self._reader = reader
        self._cfg = config
        self._local = tuple(p.replace("·", "").upper() for p in local_prefixes)
        self._gate = gate_line
        self._tracker: IouTracker[PlateRead] = IouTracker(
            source_id, quality=_quality,
            config=TrackerConfig(max_age_s=config.track_max_age_s, min_hits=config.track_min_hits, best_k=8))
        self.plates_read = 0
        self.unread_dropped = 0
        """Tracks of fewer than `unread_min_hits` frames with no valid read, not reported."""
        self.last_boxes: list[Box] = []
        """The plates of the last frame read (for the aiming gauge and the preview)."""
        self.decisions = EarlyDecisions()

    def process(self, frame: Frame) -> list[Observation]:
        """Read the plates in `frame`, update tracks, report vehicles whose track ended or whose
        plate is already read with confidence (early; see edge.pipeline.early)."""
        reads = self._reader.read(frame.image)
        if self._zoom.zoom:
            reads += self._look_again(frame, reads)
        self.plates_read += sum(1 for r in reads if r.valid)
        self.last_boxes = [r.box for r in reads]
        by_det: dict[int, PlateRead] = {}
        dets: list[Detection] = []
        for r in reads:
            det = Detection(box=r.box, score=r.detector_score, keypoints=r.corners)
            by_det[id(det)] = r
            dets.append(det)
        known = {t for t, _ in self._tracker.predictions(frame.ts)}
        ended = self._observe(self._tracker.update(frame.ts, dets, lambda d: by_det[id(d)]))
        if self._zoom.lookback_frames > 0:
            self._look_back(frame, known)
        early = self._early(frame.ts)
        if self._dwell is None:
            return ended + early
        # A vehicle dwelling is named by the plate read on this frame (a pseudonym at the boundary).
        read_at = {r.box: r for r in reads if r.valid}
        live = self._tracker.live()
        plates = {t.track_id: RawIdentifier(IdKind.PLATE, read_at[t.last_box].text) for t in live
                  if t.last_ts == frame.ts and t.last_box in read_at}
        return ended + early + self._dwell.update(live, frame.ts, frame.shape, plates)

    def _look_again(self, frame: Frame, reads: Sequence[PlateRead]) -> list[PlateRead]:
        """Reads around each open track's predicted plate where this frame's detection found none."""
        out: list[PlateRead] = []
        z = self._zoom
        for track_id, pred in self._tracker.predictions(frame.ts):
            if any(pred.iou(r.box) > 0.0 for r in (*reads, *out)):
                self._zoom_misses[track_id] = 0
                continue
            if self._zoom_misses.get(track_id, 0) >= z.max_misses:
                continue
            got = self._reader.read_near(frame.image, pred, context=z.context, min_score=z.min_score)
            if got:
                out.append(got[0])
                self.zoom_reads += 1
                self._zoom_misses[track_id] = 0
            else:
                self._zoom_misses[track_id] = self._zoom_misses.get(track_id, 0) + 1
        return out

    def _look_back(self, frame: Frame, known: set[int]) -> None:
        """Tracks that started on this frame: look for their plate in the frames kept from before."""
        z = self._zoom
        horizon = frame.ts - self._cfg.track_max_age_s
        earlier = [img for ts, img in self._recent if horizon <= ts < frame.ts]
        self._recent.append((frame.ts, frame.image))
        if not earlier:
            return
        for track_id, box in self._tracker.predictions(frame.ts):
            if track_id in known:
                continue
            found: list[PlateRead] = []
            for img in earlier:
                got = self._reader.read_near(img, box, context=z.context, min_score=z.min_score)
                if got:
                    found.append(got[0])
            if found:
                self.zoom_reads += len(found)
                self.plates_read += sum(1 for r in found if r.valid)
                self._tracker.add_samples(track_id, found)

    @property
    def gate_line(self) -> GateLine | None:
        """The line crossing which gives a track its direction."""
        return self._gate

    def set_gate_line(self, line: GateLine | None) -> None:
        """Replace the gate line (an installer moved it): tracks from now on use the new one."""
        self._gate = line

    def idle(self, ts: float) -> list[Observation]:
        """Nothing moved: end tracks that are too old."""
        ended = self._observe(self._tracker.expire(ts))
        return ended + (self._dwell.expire(ts) if self._dwell is not None else [])

    def finish(self) -> list[Observation]:
        """End of input: report every open track."""
        return self._observe(self._tracker.flush())

    def _vote(self, track: Track[PlateRead]) -> VotedPlate | None:
        vote = PlateVote(self._cfg.min_confidence)
        for read in track.samples:
            vote.add(read)
        return vote.result()

    def _early(self, ts: float) -> list[Observation]:
        need = self._cfg.early_min_agreeing
        if need <= 0:
            return []
        out: list[Observation] = []
        for track in self._tracker.peek():
            if track.track_id in self.decisions:
                continue
            result = self._vote(track)
            if result is None or result.support < need or result.confidence < self._cfg.early_min_confidence:
                continue
            event_id = self.decisions.decide(track.track_id, result.text, result.support, ts)
            out.append(self._observation(track, result, ts=ts, decision="early", event_id=event_id))
        return out

    def _observe(self, tracks: list[Track[PlateRead]]) -> list[Observation]:
        out: list[Observation] = []
        for track in tracks:
            result = self._vote(track)
            self._zoom_misses.pop(track.track_id, None)
            decided = self.decisions.close(track.track_id)
            if decided is None and result is None and track.hits < self._cfg.unread_min_hits:
                self.unread_dropped += 1
                continue
            if decided is None:
                out.append(self._observation(track, result, ts=track.last_ts, decision="track_end"))
            elif result is not None and result.text != decided.key and result.support > decided.support:
                # The rest of the track outvoted the early read: correct it, linking the early event.
                self.decisions.count_correction()
                out.append(self._observation(track, result, ts=track.last_ts, decision="correction",
                                             links=(decided.event_id,)))
        return out

    def _observation(self, track: Track[PlateRead], result: VotedPlate | None, *, ts: float, decision: str,
                     event_id: str | None = None, links: tuple[str, ...] = ()) -> Observation:
        attrs: dict[str, Scalar] = {
            "frames": track.hits,
            "reads": sum(1 for r in track.samples if r.valid),
            "duration_s": round(track.duration, 3),
            "direction": track_direction(track, self._gate).value,
            "decision": decision,
        }
        if result is None:
            colours = Counter(r.colour for r in track.samples)
            colour = colours.most_common(1)[0][0] if colours else PlateColour.UNKNOWN
            layouts = Counter(r.plate_type for r in track.samples)
            attrs |= {"confidence": 0.0, "colour": colour.value, "local": False,
                      "plate_type": layouts.most_common(1)[0][0].value if layouts else "single"}
            return Observation(EventKind.PLATE_PASSAGE, self.source_id, ts, subject_ref=random_ref(),
                               attrs=attrs, event_id=event_id, links=links)
        attrs |= {"reads": result.reads, "confidence": round(min(1.0, max(0.0, result.confidence)), 4),
                  "colour": result.colour.value, "plate_type": result.plate_type.value,
                  "local": result.text.upper().startswith(self._local) if self._local else False}
        return Observation(EventKind.PLATE_PASSAGE, self.source_id, ts,
                           subject=RawIdentifier(IdKind.PLATE, result.text), attrs=attrs, event_id=event_id,
                           links=links)
