"""The wiring of issue 14 in pieces: watch hits in the Committer's append, the uplink's receiver of
retained lists, dwell from the plate path's live tracks, and the new config sections.

Real outbox files, real signed lists and real stores; only the plate reader is a stand-in (it
replays reads, so no model is loaded).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.app.config import parse_config
from edge.app.watchlists import WatchlistReceiver
from edge.configbase import BackoffConfig
from edge.errors import ConfigError
from edge.outbox import Outbox
from edge.pipeline.commit import Committer
from edge.pipeline.config import PlateConfig
from edge.pipeline.plates import PlatePath
from edge.pipeline.zoneconfig import ZoneConfig
from edge.pipeline.zones import DwellMonitor
from edge.plates.colour import PlateColour, PlateLayout
from edge.plates.values import PlateRead
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Box, EventKind, Frame, IdKind, Observation, Origin, RawIdentifier
from edge.watchlist import WatchlistStore, build_watchlist, pseudonym_entries

KEY = b"d" * 32
ORIGIN = Origin("d1", "c1", "g1")
CARD = "A1B2C3D4E5"
PLATE = "辽B·7Q2K9"
MINIMAL = '[gateway]\ndistrict = "d1"\ncommunity = "c1"\ngateway = "g1"\n'


def _list(signing: Ed25519PrivateKey, list_id: str = "wl-1", version: int = 1) -> bytes:
    now = int(time.time())
    return build_watchlist(signing_key=signing, district="d1", list_id=list_id, version=version,
                           case_id="C-1", approver="officer.li", issued_at=now - 10, expires_at=now + 3600,
                           entries=pseudonym_entries(Pseudonymiser(KEY), IdKind.CARD, [CARD], now))


def _swipe(value: str) -> Observation:
    return Observation(EventKind.CARD_SWIPE, "reader1", time.time(), subject=RawIdentifier(IdKind.CARD, value),
                       attrs={"format": "rdm6300"})


def test_a_watch_hit_is_committed_in_the_same_append_as_its_event(tmp_path: Path) -> None:
    signing = Ed25519PrivateKey.generate()
    state = tmp_path / "watchlists.json"
    receiving = WatchlistStore(signing.public_key(), "d1", state)  # the uplink's
    matching = WatchlistStore(signing.public_key(), "d1", state)  # capture's, on the same file
    outbox = Outbox(tmp_path / "outbox.db")
    committer = Committer(outbox, PrivacyBoundary(Pseudonymiser(KEY), ORIGIN), BackoffConfig(initial_s=0.01),
                          watch=matching)
    committer.commit([_swipe(CARD)])
    assert [r.kind for r in outbox.pending(10)] == [EventKind.CARD_SWIPE]  # no list yet
    receiving.offer(_list(signing))
    committer.tick(time.time())  # capture's tick reloads the uplink's state file
    committer.commit([_swipe("0000000001"), _swipe(CARD)])
    rows = outbox.pending(10)
    outbox.close()
    assert [r.kind for r in rows] == [EventKind.CARD_SWIPE] * 3 + [EventKind.ALARM]
    hit = json.loads(rows[-1].payload)
    assert hit["attrs"]["code"] == "watch_hit" and hit["links"] == [rows[2].event_id]
    assert [json.loads(r.payload)["seq"] for r in rows] == [1, 2, 3, 4]  # the hit right behind its event
    assert committer.committed == 4 and matching.hits == 1


def test_the_receiver_counts_a_forgery_once_and_ignores_retained_copies(tmp_path: Path) -> None:
    signing = Ed25519PrivateKey.generate()
    store = WatchlistStore(signing.public_key(), "d1", tmp_path / "watchlists.json")
    receiver = WatchlistReceiver(store, 60.0)
    good = _list(signing)
    forged = json.loads(_list(signing, "wl-2"))
    forged["case_id"] = "C-FORGED"
    topic = "edgegw/d1/watchlists/"
    for _ in range(3):  # the same retained messages on every reconnect
        receiver(topic + "wl-1", good)
        receiver(topic + "wl-2", json.dumps(forged).encode())
    receiver(topic + "wl-3", b"")  # a cleared retained topic
    assert store.status()["refused"] == {"bad_signature": 1}
    lists: Any = store.status()["lists"]
    assert set(lists) == {"wl-1"}
    # After a restart (a new receiver, the state file kept) the accepted list's copy is no replay.
    again = WatchlistReceiver(WatchlistStore(signing.public_key(), "d1", tmp_path / "watchlists.json"), 60.0)
    again(topic + "wl-1", good)
    assert again.store.status()["refused"] == {}
    # A newer version still replaces it.
    again(topic + "wl-1", _list(signing, version=2))
    lists = again.store.status()["lists"]
    assert lists["wl-1"]["version"] == 2


class _Reads:
    """Replays one plate read per frame at a given box (the real reader needs the models)."""

    def __init__(self, box: Box) -> None:
        self.box = box

    def read(self, image: Any) -> list[PlateRead]:
        return [PlateRead(text=PLATE, confidence=0.95, char_confidences=(0.95,) * 7,
                          corners=np.zeros((4, 2), np.float32), box=self.box, colour=PlateColour.BLUE,
                          plate_type=PlateLayout.SINGLE, valid=True)]


def test_dwell_from_the_plate_path_names_the_vehicle_by_its_plate() -> None:
    zone = ZoneConfig.model_validate({"id": "gate-front", "camera": "cam1", "rule": "dwell", "dwell_s": 5.0,
                                      "polygon": [[0.2, 0.5], [0.8, 0.5], [0.8, 1.0], [0.2, 1.0]]})
    reader = _Reads(Box(200, 300, 400, 400))  # ground point (300, 400) of 640x480: inside
    path = PlatePath("cam1", reader, PlateConfig(track_max_age_s=2.0),  # type: ignore[arg-type]
                     dwell=DwellMonitor("cam1", [zone]))
    image = np.zeros((480, 640, 3), np.uint8)
    out: list[Observation] = []
    for i in range(8):  # standing for 7 s
        out += path.process(Frame("cam1", i, 1000.0 + i, image))
    raised = [o for o in out if o.kind is EventKind.ALARM]
    assert [o.attrs["state"] for o in raised] == ["raised"]
    assert raised[0].subject == RawIdentifier(IdKind.PLATE, PLATE) and raised[0].attrs["zone"] == "gate-front"
    out = path.idle(1020.0)  # not seen for long: the track ends and the dwell clears
    assert [o.attrs.get("state") for o in out if o.kind is EventKind.ALARM] == ["cleared"]
    assert any(o.kind is EventKind.PLATE_PASSAGE for o in out)


def test_the_new_sections_are_checked(tmp_path: Path) -> None:
    camera = '[[cameras]]\nid = "cam1"\nkind = "file"\npath = "clip"\n'
    zone = '[[zones.zone]]\nid = "z1"\ncamera = "{cam}"\nrule = "obstruction"\npolygon = [[0,0],[1,0],[1,1]]\n'
    cfg = parse_config(MINIMAL + camera + zone.format(cam="cam1") + '[watchlist]\nenabled = true\n')
    assert cfg.zone_cameras() == ["cam1"] and cfg.watchlist.enabled
    with pytest.raises(ConfigError, match="not configured: cam9"):
        parse_config(MINIMAL + camera + zone.format(cam="cam9"))
    module = ('[[inputs]]\nkind = "gpio"\nid = "io1"\ninputs = [{ id = "sos", channel = 17, '
              'meaning = "alarm_column" }]\n')
    with pytest.raises(ConfigError, match="input module ids must be unique"):
        parse_config(MINIMAL + module + module)
    with pytest.raises(ConfigError, match=r"gw.toml:\d+: key 'inputs.0.inputs.0.meaning'"):
        parse_config(MINIMAL + module.replace("alarm_column", "panic"), "gw.toml")


def test_a_missing_platform_key_stops_the_daemons_with_a_clear_error(tmp_path: Path) -> None:
    from edge.app.wiring import open_watchlist

    cfg = parse_config(MINIMAL + f'data_dir = "{tmp_path}"\n[watchlist]\nenabled = true\npublic_key = "nope.pub"\n')
    with pytest.raises(ConfigError, match=r"watchlist.public_key: cannot read .*nope.pub"):
        open_watchlist(cfg, None)
    assert open_watchlist(parse_config(MINIMAL), None) is None  # off by default: nothing opened


def test_the_state_file_keeps_the_installers_mode_and_an_empty_one_means_no_list(tmp_path: Path) -> None:
    signing = Ed25519PrivateKey.generate()
    state = tmp_path / "watchlists.json"
    state.touch(0o660)  # what systemd-tmpfiles pre-creates: the group's, for the capture daemon
    state.chmod(0o660)
    receiving = WatchlistStore(signing.public_key(), "d1", state)
    assert receiving.status()["lists"] == {}
    before = state.stat().st_ino
    receiving.offer(_list(signing))
    assert state.stat().st_ino != before and state.stat().st_mode & 0o777 == 0o660  # replaced, mode kept
    assert WatchlistStore(signing.public_key(), "d1", state).match(
        IdKind.CARD, *reversed(Pseudonymiser(KEY).pseudonym_at(IdKind.CARD, CARD, time.time())))

