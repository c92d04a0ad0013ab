"""Early decisions: a plate passage is emitted while the vehicle is still in view, once per vehicle,
and a rare correction links the early event. The reader is scripted (speed); the path, tracker,
vote, privacy boundary and schema are the real ones."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from edge.pipeline.config import PlateConfig
from edge.pipeline.early import EarlyDecisions
from edge.pipeline.plates import PlatePath
from edge.plates.colour import PlateColour, PlateLayout
from edge.plates.values import PlateRead
from edge.types import Box, Frame


def _read(text: str, conf: float = 0.95) -> PlateRead:
    box = Box(100, 100, 220, 140)
    corners = np.array([[100, 100], [220, 100], [220, 140], [100, 140]], np.float32)
    return PlateRead(text, conf, (conf,) * len(text), corners, box, PlateColour.BLUE, PlateLayout.SINGLE, True,
                     None, colour_trusted=True)


class ScriptedReader:
    """Returns the next scripted list of reads on each call (an empty list: no plate in view)."""

    def __init__(self, script: list[list[PlateRead]]) -> None:
        self._script: Iterator[list[PlateRead]] = iter(script)

    def read(self, image: Any) -> list[PlateRead]:
        return next(self._script, [])

    def read_near(self, image: Any, box: Box, **_: Any) -> list[PlateRead]:
        return []  # the track-guided looks find nothing the script did not (tests/test_plate_zoom.py)


def _run(script: list[list[PlateRead]], cfg: PlateConfig) -> list[tuple[float, Any]]:
    path = PlatePath("gate", ScriptedReader(script), cfg)  # type: ignore[arg-type]
    out = []
    image = np.zeros((8, 8, 3), np.uint8)
    for i in range(len(script) + 15):  # then 1.5 s of empty road: the track closes
        ts = 100.0 + i * 0.1
        out += [(ts, o) for o in path.process(Frame("gate", i, ts, image))]
    out += [(None, o) for o in path.finish()]
    return out


def test_plate_decided_on_the_third_agreeing_read_and_only_once() -> None:
    got = _run([[_read("皖A12345")]] * 8, PlateConfig())
    assert len(got) == 1
    ts, obs = got[0]
    assert obs.attrs["decision"] == "early" and obs.attrs["frames"] == 3
    assert ts == obs.ts == 100.2  # the third frame, 0.6 s before the car is even gone
    assert obs.subject is not None and obs.subject.value == "皖A12345" and obs.event_id


def test_without_early_decisions_the_passage_waits_for_the_track_to_end() -> None:
    got = _run([[_read("皖A12345")]] * 8, PlateConfig(early_min_agreeing=0))
    assert len(got) == 1 and got[0][1].attrs["decision"] == "track_end" and got[0][1].attrs["frames"] == 8
    assert got[0][0] > 100.0 + 0.7 + PlateConfig().track_max_age_s  # emitted after the close timeout


def test_weak_reads_do_not_decide_early() -> None:
    got = _run([[_read("皖A12345", 0.6)]] * 5, PlateConfig())
    assert [o.attrs["decision"] for _, o in got] == ["track_end"]


def test_a_correction_links_the_early_event_when_the_rest_of_the_track_outvotes_it() -> None:
    script = [[_read("皖A12346")]] * 3 + [[_read("皖A12345", 0.97)]] * 5
    got = _run(script, PlateConfig())
    assert [o.attrs["decision"] for _, o in got] == ["early", "correction"]
    early, fix = got[0][1], got[1][1]
    assert fix.links == (early.event_id,) and fix.subject.value == "皖A12345"


def test_the_privacy_boundary_keeps_the_early_id_and_the_links() -> None:
    from edge.privacy.boundary import PrivacyBoundary
    from edge.privacy.pseudonym import Pseudonymiser
    from tests._events import ORIGIN

    script = [[_read("皖A12346")]] * 3 + [[_read("皖A12345", 0.97)]] * 5
    got = _run(script, PlateConfig())
    b = PrivacyBoundary(Pseudonymiser(b"k" * 32), ORIGIN)
    early, fix = (b.to_event(o) for _, o in got)
    assert early.event_id == got[0][1].event_id and fix.links == (early.event_id,)


def test_decisions_are_forgotten_when_their_track_ends() -> None:
    d = EarlyDecisions()
    eid = d.decide(7, "k", 3, 100.0)
    assert 7 in d and d.peek(7) is not None and d.close(7).event_id == eid  # type: ignore[union-attr]
    assert 7 not in d and d.close(7) is None and d.early == 1
