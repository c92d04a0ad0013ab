"""Frozen value types that cross module boundaries.

The privacy boundary is carried by these types: raw identifiers live in `RawIdentifier`, which only
`Observation` and `Reading` may hold, and an `Event` can hold only a `Subject` (a keyed pseudonym or a
random reference) plus scalar attributes. Only `edge.privacy` turns an Observation into an Event.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from edge.compat import StrEnum

Scalar = str | int | float | bool
"""An event attribute value: never bytes, arrays or nested structures."""


class IdKind(StrEnum):
    """Kinds of identifier; each has its own pseudonym domain."""

    PLATE = "plate"
    CARD = "card"
    MAC = "mac"
    RESIDENT = "resident"


class EventKind(StrEnum):
    """Kinds of published event; each has a topic suffix and a schema branch."""

    FACE_PASSAGE = "face_passage"
    PLATE_PASSAGE = "plate_passage"
    CARD_SWIPE = "card_swipe"
    DEVICE_SEEN = "device_seen"
    DEVICE_AGGREGATE = "device_aggregate"
    PASSAGE = "passage"
    ALARM = "alarm"


@dataclass(frozen=True, slots=True)
class RawIdentifier:
    """A raw plate, card number, MAC or resident id. Its value never appears in repr or str."""

    kind: IdKind
    value: str = field(repr=False)

    def __repr__(self) -> str:
        return f"RawIdentifier({self.kind.value}, <redacted>)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in pixel coordinates (x2, y2 exclusive)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        """Box width in pixels (0 if degenerate)."""
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        """Box height in pixels (0 if degenerate)."""
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return self.width * self.height

    @property
    def centre(self) -> tuple[float, float]:
        """The box centre (x, y)."""
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    def iou(self, other: Box) -> float:
        """Intersection over union with another box."""
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded camera frame (BGR uint8, HxWx3)."""

    source_id: str
    index: int
    ts: float
    image: NDArray[np.uint8] = field(repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))


@dataclass(frozen=True, slots=True)
class Detection:
    """A detector's output: a box, a score and keypoints (5 face landmarks or 4 plate corners)."""

    box: Box
    score: float
    keypoints: NDArray[np.float32] = field(repr=False)


S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Track(Generic[S]):
    """A finished track: one object followed across frames, with its best samples kept."""

    track_id: int
    source_id: str
    first_ts: float
    last_ts: float
    hits: int
    first_box: Box
    last_box: Box
    samples: tuple[S, ...] = field(repr=False)

    @property
    def duration(self) -> float:
        """Seconds between the first and the last hit."""
        return self.last_ts - self.first_ts


@dataclass(frozen=True, slots=True)
class Reading:
    """A decoded serial-sensor reading (card UID or phone MAC); raw, never leaves the gateway."""

    source_id: str
    ts: float
    format: str
    identifier: RawIdentifier
    rssi: int | None = None
    channel: int | None = None
    address_random: bool = False
    """A BLE random (static or resolvable private) address, which the locally-administered bit of
    a MAC does not reveal: the sniffer says so. Such addresses are only ever counted."""


def _frozen_attrs(attrs: Mapping[str, Scalar]) -> Mapping[str, Scalar]:
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise TypeError(f"attribute key {key!r} is not a string")
        if not isinstance(value, str | int | float | bool):
            raise TypeError(f"attribute {key!r} has type {type(value).__name__}; only scalars may be attributes")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"attribute {key!r} is not finite")
    return MappingProxyType(dict(attrs))


@dataclass(frozen=True, slots=True)
class Observation:
    """Something seen at the gate, in raw form. It never leaves the gateway.

    `subject` is the raw identifier (plate text, card number, MAC, resident id) when there is one;
    `subject_ref` a random per-track reference for an unknown face. `embedding` is kept for the
    local encrypted store only and is dropped at the privacy boundary.
    """

    kind: EventKind
    source_id: str
    ts: float
    subject: RawIdentifier | None = None
    subject_ref: str | None = None
    attrs: Mapping[str, Scalar] = field(default_factory=dict)
    embedding: NDArray[np.float32] | None = field(default=None, repr=False)
    event_id: str | None = None
    """A preassigned event_id (a path that decides early names its event, so a rare later
    correction can link to it); None: the privacy boundary assigns one."""
    links: tuple[str, ...] = ()
    """event_ids this observation refers to (a correction links the event it corrects)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "attrs", _frozen_attrs(self.attrs))


@dataclass(frozen=True, slots=True)
class Derived:
    """An observation a commit observer derived (a fused passage), with the event_ids it links."""

    observation: Observation
    links: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Subject:
    """Who or what an event is about, in publishable form: a keyed pseudonym or a random reference."""

    type: str
    pseudonym: str | None = None
    key_id: str | None = None
    ref: str | None = None

    def __post_init__(self) -> None:
        if (self.pseudonym is None) == (self.ref is None):
            raise ValueError("a Subject carries exactly one of pseudonym or ref")
        if self.pseudonym is not None and self.key_id is None:
            raise ValueError("a pseudonymous Subject needs its key_id")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an event comes from: district, community and gateway ids."""

    district: str
    community: str
    gateway: str


@dataclass(frozen=True, slots=True)
class Event:
    """A publishable event: pseudonyms and scalar attributes only (see `edge.privacy`)."""

    event_id: str
    kind: EventKind
    origin: Origin
    source_id: str
    ts: float
    subject: Subject | None = None
    attrs: Mapping[str, Scalar] = field(default_factory=dict)
    links: tuple[str, ...] = ()
    """event_ids of member events (a fused `passage` links its face, plate, card and device events)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "attrs", _frozen_attrs(self.attrs))


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """A committed event row, as the uplink reads it from the outbox."""

    row_id: int
    event_id: str
    source_id: str
    seq: int
    boot: int
    kind: EventKind
    topic: str
    payload: bytes = field(repr=False)
    priority: int
    created_ts: float
    expires_ts: float | None
    attempts: int = 0
