"""edge.app.heap: the heap freed while models load goes back to the system before the cameras start."""

from __future__ import annotations

from edge.app.heap import release_freed_heap


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
