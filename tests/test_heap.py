"""edge.app.heap: one malloc arena for the capture daemon's threads, and the heap freed while models
load goes back to the system before the cameras start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.app.heap import limit_malloc_arenas, release_freed_heap


def _rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def test_freed_heap_is_returned_to_the_system() -> None:
    # 4 KB blocks come from malloc's heap (not Python's small-object arenas); keeping every 64th one
    # pins the heap's top, so free() alone cannot shrink it: this is how load-time garbage stays resident.
    blocks = [bytes(4096) for _ in range(40_000)]  # ~160 MB
    keep = blocks[::64]
    del blocks
    before = _rss_kb()
    assert release_freed_heap()  # glibc: the Linux gateways and CI
    after = _rss_kb()
    assert before - after > 100_000, (before, after)  # most of the ~157 MB freed comes back
    assert len(keep) == 625


_ARENA_PROBE = """
import ctypes, sys, threading
from edge.app.heap import limit_malloc_arenas
if sys.argv[1] == "limit":
    assert limit_malloc_arenas(1)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1])
before = vm_size()
barrier = threading.Barrier(4)
def alloc():
    barrier.wait()
    for _ in range(100):
        libc.malloc(2048)  # kept: each thread's blocks come from the arena it was given
threads = [threading.Thread(target=alloc) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(vm_size() - before)
"""


def test_one_malloc_arena_serves_every_thread() -> None:
    """Without the limit each new thread gets its own arena (64 MB of address space reserved each);
    with `limit_malloc_arenas(1)` the four threads allocate from the main heap."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    env["PYTHONPATH"] = str(root)
    grown = {}
    for mode in ("default", "limit"):
        proc = subprocess.run([sys.executable, "-c", _ARENA_PROBE, mode], capture_output=True, text=True, timeout=60,
                              cwd=root, env=env)
        assert proc.returncode == 0, proc.stderr
        grown[mode] = int(proc.stdout.split()[-1])
    # KB of address space; both include the threads' stacks (8 MB each), the default an arena per thread.
    assert grown["default"] - grown["limit"] >= 4 * 60_000, grown


def test_the_operators_malloc_arena_max_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not limit_malloc_arenas(1)
