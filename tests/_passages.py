"""Shared set-up for the passage and query tests: a real Committer, outbox, store, fusion, audit and service."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.app.config import Config, GatewayConfig
from edge.audit import AuditLog
from edge.outbox import Outbox, OutboxLimits
from edge.passages.config import GateConfig, PassageConfig, RetentionConfig
from edge.passages.fusion import PassageFusion
from edge.passages.store import PassageStore
from edge.pipeline.commit import Committer
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.query.config import QueryConfig, RateLimitConfig
from edge.query.model import Principal, Role
from edge.query.ratelimit import RateLimiter
from edge.query.service import PhotoEmbedder, QueryService
from edge.types import Event, EventKind, IdKind, Observation, Origin, RawIdentifier
from tests._mqtt import RAW_IDENTIFIERS

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PLATES_CSV = SHARED_DATA / "plates" / "labels.csv"

T0 = 1_768_046_400.0  # 2026-01-10T12:00:00Z
DAY = 86400.0
ORIGIN = Origin("dl-district", "c0001", "gw01")
GATES = (GateConfig(id="north", sources=("cam-face-n", "cam-plate-n", "reader-n", "sniffer-n")),
         GateConfig(id="south", sources=("cam-face-s", "cam-plate-s", "reader-s")))

CARDS = ("04A1B2C3D4", "0A0B0C0D")
MACS = ("3C:22:FB:12:34:56", "A4:5E:60:AB:CD:EF")

POLICE = Principal("officer-0042", Role.POLICE, "0042")
PLATFORM = Principal("district-platform", Role.PLATFORM)
INSTALLER = Principal("installer-7", Role.INSTALLER)


class Clock:
    """A settable clock (seconds)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def shared_plates(n: int) -> list[str]:
    """`n` distinct plate texts from ../shared/data/plates/labels.csv (registered for the privacy scan)."""
    if not PLATES_CSV.is_file():
        pytest.skip(f"plate data not found at {PLATES_CSV} (../shared/data relative to the repo)")
    with PLATES_CSV.open(newline="", encoding="utf-8") as fh:
        texts = list(dict.fromkeys(r["plate_text"] for r in csv.DictReader(fh) if r["kind"] == "full_scene"))
    assert len(texts) >= n
    RAW_IDENTIFIERS.update(texts[:n])
    return texts[:n]


RAW_IDENTIFIERS.update(CARDS)
RAW_IDENTIFIERS.update(MACS)


class Recorder:
    """A CommitObserver that remembers every committed (observation, event) pair."""

    def __init__(self) -> None:
        self.pairs: list[tuple[Observation, Event]] = []

    def committed(self, pairs: Sequence[tuple[Observation, Event]]) -> list[tuple[Observation, tuple[str, ...]]]:
        self.pairs += pairs
        return []

    def tick(self, now: float) -> list[tuple[Observation, tuple[str, ...]]]:
        return []

    def events(self, kind: EventKind | None = None) -> list[Event]:
        return [e for _, e in self.pairs if kind is None or e.kind is kind]


@dataclass
class Env:
    """One gateway's passage side, wired as the capture daemon wires it."""

    tmp: Path
    clock: Clock
    pseudonymiser: Pseudonymiser
    audit: AuditLog
    store: PassageStore
    fusion: PassageFusion
    committer: Committer
    outbox: Outbox
    recorder: Recorder
    service: QueryService
    limiter: RateLimiter
    passage_cfg: PassageConfig
    extra: list[object] = field(default_factory=list)

    def commit(self, observations: Sequence[Observation]) -> list[Event]:
        """Commit observations through the real Committer; return their events (not derived ones)."""
        before = len(self.recorder.pairs)
        self.committer.commit(list(observations))
        mine = self.recorder.pairs[before:before + len(observations)]
        return [e for _, e in mine]

    def flush(self) -> list[Event]:
        """Close every fusion window; return the passage events committed."""
        before = len(self.recorder.pairs)
        self.committer.tick(float("inf"))
        return [e for _, e in self.recorder.pairs[before:] if e.kind is EventKind.PASSAGE]

    def close(self) -> None:
        self.limiter.close()
        self.store.close()
        self.outbox.close()
        self.audit.close()


def make_env(
    tmp_path: Path,
    *,
    passage_cfg: PassageConfig | None = None,
    query_cfg: QueryConfig | None = None,
    embedder: PhotoEmbedder | None = None,
    clock: Clock | None = None,
    pseudonymiser: Pseudonymiser | None = None,
) -> Env:
    """Build the whole passage side in `tmp_path` with real SQLite files and keys."""
    clock = clock or Clock()
    pcfg = passage_cfg or PassageConfig(gates=GATES, window_s=5.0, purge_interval_s=0, min_members=1,
                                        retention=RetentionConfig(records_days=30, faces_days=7))
    qcfg = query_cfg or QueryConfig(rate_limit=RateLimitConfig(max_queries=100, per_s=3600))
    cfg = Config(gateway=GatewayConfig(district=ORIGIN.district, community=ORIGIN.community, gateway=ORIGIN.gateway,
                                       data_dir=tmp_path))
    pseudonymiser = pseudonymiser or Pseudonymiser(os.urandom(32))
    audit = AuditLog(tmp_path / "audit.db", clock=lambda: int(clock() * 1000))
    store = PassageStore.open(tmp_path / "passages.db", tmp_path / "passage-keys.db", os.urandom(32), pcfg, audit,
                              clock=clock)
    fusion = PassageFusion(pcfg, clock=clock)
    outbox = Outbox(tmp_path / "outbox.db", limits=OutboxLimits(min_free_bytes=0), clock=clock)
    recorder = Recorder()
    committer = Committer(outbox, PrivacyBoundary(pseudonymiser, ORIGIN), cfg.outbox.commit_backoff,
                          [recorder, store, fusion])
    limiter = RateLimiter(tmp_path / "rate.db", qcfg.rate_limit.max_queries, qcfg.rate_limit.per_s)
    service = QueryService(store, pseudonymiser, audit, qcfg, limiter, embedder=embedder, clock=clock)
    return Env(tmp_path, clock, pseudonymiser, audit, store, fusion, committer, outbox, recorder, service, limiter,
               pcfg)


def plate_obs(source: str, ts: float, plate: str, direction: str = "in") -> Observation:
    """A plate read as the plate path reports it."""
    return Observation(EventKind.PLATE_PASSAGE, source, ts, subject=RawIdentifier(IdKind.PLATE, plate),
                       attrs={"confidence": 0.95, "colour": "blue", "plate_type": "blue_single", "local": False,
                              "frames": 5, "reads": 4, "duration_s": 1.5, "direction": direction})


def card_obs(source: str, ts: float, card: str, side: str = "in") -> Observation:
    """A card swipe as the serial path reports it (the reader's side as its direction)."""
    return Observation(EventKind.CARD_SWIPE, source, ts, subject=RawIdentifier(IdKind.CARD, card),
                       attrs={"format": "rdm6300", "direction": side})


def mac_obs(source: str, ts: float, mac: str, first_seen: float | None = None) -> Observation:
    """A phone seen by a sniffer over a dedupe window ending at `ts`."""
    return Observation(EventKind.DEVICE_SEEN, source, ts, subject=RawIdentifier(IdKind.MAC, mac),
                       attrs={"format": "esp32_sniffer", "first_seen": first_seen if first_seen is not None else ts,
                              "last_seen": ts, "sightings": 3})


def face_obs(source: str, ts: float, embedding: object | None = None, direction: str = "in") -> Observation:
    """An unknown face track with its (track-mean) embedding."""
    emb = None if embedding is None else np.asarray(embedding, np.float32)
    return Observation(EventKind.FACE_PASSAGE, source, ts, subject_ref=os.urandom(12).hex(),
                       attrs={"matched": False, "quality": 0.7, "frames": 8, "embedded": 3, "duration_s": 1.1,
                              "direction": direction}, embedding=emb)


SIGNING_KEYS: dict[str, Ed25519PrivateKey] = {}
"""Each test principal's Ed25519 MQTT signing key (the platform side); tokens files carry the public half."""


def write_tokens(path: Path) -> dict[str, str]:
    """A 0600 tokens file for POLICE, PLATFORM and INSTALLER (and a second police officer); name → token.

    Every principal also gets a `verify_key` whose private half is in SIGNING_KEYS.
    """
    tokens = {name: os.urandom(32).hex() for name in (POLICE.name, PLATFORM.name, INSTALLER.name, "officer-0043")}
    lines = []
    for name, role, officer in ((POLICE.name, "police", "0042"), (PLATFORM.name, "platform", None),
                                (INSTALLER.name, "installer", None), ("officer-0043", "police", "0043")):
        key = SIGNING_KEYS.setdefault(name, Ed25519PrivateKey.generate())
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
        lines += ["[[principal]]", f'name = "{name}"', f'role = "{role}"', f'token = "{tokens[name]}"',
                  f'verify_key = "{public}"']
        if officer:
            lines.append(f'officer = "{officer}"')
        lines.append("")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines))
    return tokens
