"""Config of the `[watchlist]` section (signed watch-lists from the platform).

Pure pydantic, apart from `edge.watchlist` (which loads `cryptography` and the pseudonymiser), so the
root config can hold it without loading either.
"""

from __future__ import annotations

from pydantic import Field

from edge.configbase import StrictModel


class WatchlistConfig(StrictModel):
    """The gateway's `[watchlist]` section."""

    enabled: bool = False
    public_key: str = Field(default="platform-watchlist.pub", min_length=1)
    """The platform's Ed25519 public key (PEM or 64 hex digits), relative to the data directory."""
    state: str = Field(default="watchlists.json", min_length=1)
    """Accepted lists and version high-water marks, relative to the data directory."""
    sweep_interval_s: float = Field(default=60.0, gt=0)
    """How often expired lists are dropped (matching ignores them from their expiry on anyway)."""
