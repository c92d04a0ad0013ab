"""Exponential backoff with jitter, shared by every reconnecting component."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from edge.configbase import BackoffConfig


@dataclass
class Backoff:
    """Delays that grow by `factor` up to `max_s`, each jittered into [delay/2, delay]."""

    config: BackoffConfig = field(default_factory=BackoffConfig)
    attempts: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """Return the delay before the next attempt and count the attempt."""
        base = min(self.config.max_s, self.config.initial_s * (self.config.factor**self.attempts))
        self.attempts += 1
        # "Equal jitter": never less than half the nominal delay, so a crowd of gateways spreads out
        # without any of them hammering the broker.
        return base / 2.0 + self._rng.random() * base / 2.0

    def reset(self) -> None:
        """Forget past failures after a success."""
        self.attempts = 0
