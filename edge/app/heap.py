"""Give the heap that model loading freed back to the system before a daemon starts its work.

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

log = logging.getLogger(__name__)


def release_freed_heap() -> bool:
    """Collect garbage, then return freed heap pages to the system; True if `malloc_trim` ran (glibc).

    A no-op elsewhere (musl, macOS): those allocators have no `malloc_trim`, and nothing depends on
    it but the resident size."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    released = bool(trim(0))
    log.debug("malloc_trim after the models loaded: %s", "memory released" if released else "nothing to release")
    return True
