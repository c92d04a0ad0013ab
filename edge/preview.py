"""The live channel between capture and the console: preview requests, preview frames, swipe tests.

Capture and the console are separate processes. The console asks for a camera's preview by keeping
a request file fresh (its mtime is the lease); capture looks at that file at most twice a second
per camera, and only while the lease is fresh does it draw overlays and encode JPEGs, written
atomically beside it. Nobody watching costs one `stat()` per camera every half second. The same
lease model carries the "swipe a card now" test: capture writes the masked last characters of
decoded cards only while the console holds the serial lease. The folder is local state (the
gateway's data dir or a tmpfs); nothing in it is published.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

LEASE_S = 3.0
"""A request older than this is abandoned (the viewer closed the page or the console died)."""
_CHECK_EVERY_S = 0.5
_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class PreviewRequest:
    """What the viewer asked for."""

    overlay: bool = True
    fps: float = 4.0
    max_height: int = 720


def _name(source_id: str) -> str:
    if not _SAFE.match(source_id) or source_id.startswith("."):
        raise ValueError(f"not a source id: {source_id!r}")
    return source_id


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def mask(identifier: str, keep: int = 4) -> str:
    """`••••1234`: only the last `keep` characters of an identifier, for an installer's eyes."""
    tail = identifier[-keep:] if len(identifier) > keep else ""
    return "•" * max(4, len(identifier) - len(tail)) + tail


class LiveChannel:
    """Both ends of the channel over one folder (created 0700 on first use)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cache: dict[str, tuple[float, PreviewRequest | None]] = {}
        self._sizes: set[tuple[str, int, int]] = set()

    def _ensure(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- the console's end ------------------------------------------------------------------------
    def request(self, source_id: str, req: PreviewRequest) -> None:
        """Ask for (or keep asking for) a preview; call at least every LEASE_S / 2 seconds."""
        self._ensure()
        body = json.dumps({"overlay": req.overlay, "fps": req.fps, "max_height": req.max_height}).encode()
        _write_atomic(self.folder / f"{_name(source_id)}.want", body)

    def release(self, source_id: str) -> None:
        """The viewer left: capture stops encoding, and the last frame is deleted (frames are not kept)."""
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"{_name(source_id)}.want").unlink()
        self.discard(source_id)

    def discard(self, source_id: str) -> None:
        """Delete the camera's preview frame, if any."""
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"{_name(source_id)}.jpg").unlink()

    def latest(self, source_id: str) -> tuple[float, bytes] | None:
        """(mtime, JPEG bytes) of the newest preview frame, or None."""
        path = self.folder / f"{_name(source_id)}.jpg"
        try:
            mtime = path.stat().st_mtime
            return mtime, path.read_bytes()
        except FileNotFoundError:
            return None

    # -- capture's end ----------------------------------------------------------------------------
    def wanted(self, source_id: str, now: float | None = None) -> PreviewRequest | None:
        """The live request for this camera, or None; looks at the disk at most every 0.5 s."""
        mono = time.monotonic()
        cached = self._cache.get(source_id)
        if cached is not None and mono - cached[0] < _CHECK_EVERY_S:
            return cached[1]
        req: PreviewRequest | None = None
        path = self.folder / f"{_name(source_id)}.want"
        try:
            if (now or time.time()) - path.stat().st_mtime <= LEASE_S:
                raw = json.loads(path.read_bytes())
                req = PreviewRequest(overlay=bool(raw.get("overlay", True)),
                                     fps=min(10.0, max(0.5, float(raw.get("fps", 4.0)))),
                                     max_height=min(1080, max(120, int(raw.get("max_height", 720)))))
        except (OSError, ValueError, TypeError, AttributeError):
            req = None
        self._cache[source_id] = (mono, req)
        return req

    def publish(self, source_id: str, jpeg: bytes, *, width: int = 0, height: int = 0) -> None:
        """Write the newest preview frame (atomically: a reader never sees half a JPEG), and the camera's
        own resolution when it changed (the editor maps clicks on the scaled preview back to it)."""
        self._ensure()
        meta = self.folder / f"{_name(source_id)}.size"
        if width and (source_id, width, height) not in self._sizes:
            _write_atomic(meta, json.dumps({"width": width, "height": height}).encode())
            self._sizes.add((source_id, width, height))
        _write_atomic(self.folder / f"{_name(source_id)}.jpg", jpeg)

    def size(self, source_id: str) -> tuple[int, int] | None:
        """The camera's own (width, height), as capture last reported it."""
        try:
            raw = json.loads((self.folder / f"{_name(source_id)}.size").read_bytes())
            return int(raw["width"]), int(raw["height"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- the swipe test ---------------------------------------------------------------------------
    def request_swipes(self) -> None:
        """The console's serial page is open: capture records masked swipes."""
        self._ensure()
        _write_atomic(self.folder / "_serial.want", b"{}")

    def swipes_wanted(self) -> bool:
        """Whether the console holds the serial lease (checked at most every 0.5 s)."""
        return self.wanted("_serial") is not None

    def record_swipe(self, sensor_id: str, masked: str, ts: float) -> None:
        """Append one masked swipe (the raw identifier never reaches this file)."""
        self._ensure()
        line = json.dumps({"sensor": sensor_id, "card": masked, "ts": ts}) + "\n"
        with open(self.folder / "swipes.jsonl", "a", encoding="utf-8") as f:
            f.write(line)

    def swipes(self, since: float = 0.0, limit: int = 20) -> list[dict[str, object]]:
        """The masked swipes recorded after `since`, newest last."""
        try:
            lines = (self.folder / "swipes.jsonl").read_text(encoding="utf-8").splitlines()[-200:]
        except FileNotFoundError:
            return []
        out: list[dict[str, object]] = []
        for line in lines:
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict) and float(item.get("ts", 0)) > since:
                    out.append(item)
        return out[-limit:]
