"""The capture daemon's heap: one malloc arena for all its threads, and the heap that model loading
freed given back to the system before the cameras start.

glibc gives each new thread its own malloc arena (up to 8 per core), and memory freed in one arena
is never reused by another: with 4 camera threads, their supervisor threads and the main loop each
keeping its own high-water mark of frames and tensors, the bench's 4-camera CaptureDaemon peaked at
about 430 MB with ONNX Runtime's memory pattern off; with one arena (`limit_malloc_arenas`) at about
390 MB, for no measured CPU cost (docs/gate.md, "Peak RSS, second round"). An operator's
MALLOC_ARENA_MAX in the environment is left as it is.

Building the ONNX Runtime sessions allocates and frees tens of MB of transient buffers, which glibc
keeps resident in its arenas. Measured on the bench's CaptureDaemon with 4 cameras (docs/gate.md,
"Peak RSS after the models load"), when PP-OCR was still slimmed at load time (edge.plates.slim,
now run by `edgegw models fetch`): 527 MB peak RSS with the slimmed PP-OCR against 472-482 MB with
it off; one `malloc_trim(0)` once the models were built brought the first to 475-486 MB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

CAPTURE_MALLOC_ARENAS = 1
"""The capture daemon's malloc arenas (glibc's M_ARENA_MAX): 1, every thread on the main heap."""
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = CAPTURE_MALLOC_ARENAS) -> bool:
    """Cap the malloc arenas threads created from now on may get (glibc `mallopt(M_ARENA_MAX)`); call it
    before the daemon starts its threads. True if set; False elsewhere (musl, macOS) or when
    MALLOC_ARENA_MAX is set in the environment (glibc has read it: the operator's choice stands)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, max(1, arenas)))


def release_freed_heap() -> bool:
    """Collect garbage, then return freed heap pages to the system; True if `malloc_trim` ran (glibc).

    A no-op elsewhere (musl, macOS): those allocators have no `malloc_trim`, and nothing depends on
    it but the resident size."""
    gc.collect()
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    released = bool(trim(0))
    log.debug("malloc_trim after the models loaded: %s", "memory released" if released else "nothing to release")
    return True
