"""The privacy boundary: the only code that turns a raw Observation into a publishable Event."""

from __future__ import annotations

import logging

from edge.ids import uuid7
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Event, EventKind, Observation, Origin, Subject

log = logging.getLogger(__name__)

_UNKNOWN_TYPES = {EventKind.FACE_PASSAGE: "unknown_face", EventKind.PLATE_PASSAGE: "unread_plate"}


class PrivacyBoundary:
    """Turns Observations into Events: identifiers become keyed pseudonyms, the rest is dropped."""

    def __init__(self, pseudonymiser: Pseudonymiser, origin: Origin) -> None:
        self._pseudonymiser = pseudonymiser
        self.origin = origin

    def to_event(self, obs: Observation, *, links: tuple[str, ...] = ()) -> Event:
        """Make the Event for `obs`. The embedding and any raw value stay behind."""
        subject: Subject | None = None
        if obs.subject is not None:
            pseudonym, key_id = self._pseudonymiser.pseudonym_at(obs.subject.kind, obs.subject.value, obs.ts)
            subject = Subject(type=obs.subject.kind.value, pseudonym=pseudonym, key_id=key_id)
        elif obs.subject_ref is not None:
            subject = Subject(type=_UNKNOWN_TYPES.get(obs.kind, "unknown"), ref=obs.subject_ref)
        return Event(
            event_id=obs.event_id or str(uuid7(int(obs.ts * 1000))),
            kind=obs.kind,
            origin=self.origin,
            source_id=obs.source_id,
            ts=obs.ts,
            subject=subject,
            attrs=obs.attrs,
            links=links or obs.links,
        )
