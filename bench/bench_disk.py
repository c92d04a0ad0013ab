"""What one event costs on disk, and how long a broker outage each disk size buys (issue 17).

Commits a realistic mix (face, plate, card, device aggregate: a quarter each) through the real
Committer into a real outbox and passage store, measures the bytes per event each file takes, then
prints the outage each free-space size absorbs at a few event rates, with the default reserve
(64 MiB), the WAL headroom of the four state databases, the default 512 MiB outbox quota and
the default 7-day retention.

    .venv/bin/python -m bench.bench_disk [--events 20000]
    .venv/bin/python -m bench.bench_disk --scenario --free-mb 65.5 [--old-quota]   # root: a real tmpfs

`--scenario` replays the chaos run's finding on a real tmpfs with `--free-mb` free: a 30 s broker
outage at 200 events/s (6,000 mixed events, no uplink) through the real Committer and passage store,
then reports drops, refused commits, passage store failures and the lowest free space seen.
`--old-quota` uses the quota formula from before issue 17 (outbox file only, no WAL headroom, no
live allowance) for comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from edge import outbox as outbox_module
from edge.audit import AuditLog
from edge.configbase import BackoffConfig
from edge.diskbudget import PASSAGE_BYTES_PER_EVENT, WAL_LIMIT_BYTES, disk_free
from edge.outbox import Outbox, OutboxLimits
from edge.passages.config import PassageConfig
from edge.passages.store import PassageStore
from edge.pipeline.commit import Committer
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Origin
from tests._chaos import observations

MiB = 1024 * 1024


def measure(n: int) -> tuple[float, float]:
    """(outbox bytes per pending event, passage store bytes per event committed)."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        audit = AuditLog(root / "audit.db")
        store = PassageStore.open(root / "passages.db", root / "keys.db", os.urandom(32),
                                  PassageConfig(purge_interval_s=0), audit)
        ob = Outbox(root / "outbox.db", limits=OutboxLimits(min_free_bytes=0))
        committer = Committer(ob, PrivacyBoundary(Pseudonymiser(os.urandom(32)), Origin("d", "c", "g")),
                              BackoffConfig(), [store])
        before = (root / "passages.db").stat().st_size
        for i in range(0, n, 20):
            committer.commit(observations(20, i))
        st = ob.storage()
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store_bytes = (root / "passages.db").stat().st_size - before
        out = (st.used_bytes / ob.depth(), store_bytes / n)
        store.close()
        audit.close()
        ob.close()
    return out


def _old_quota(self: Outbox, file_bytes: int, *, enforce: bool = False) -> int:
    """The byte quota before issue 17: the outbox file only, no WAL headroom, no live allowance."""
    free = disk_free(self.path.parent)
    return min(self.limits.max_bytes, file_bytes + max(free - self.limits.min_free_bytes, 0))


def scenario(free_mb: float, events: int, old: bool) -> None:
    """The chaos run's nearly full disk, on a real tmpfs (needs root)."""
    if old:
        outbox_module.Outbox._quota_bytes = _old_quota  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as d:
        mnt = Path(d)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(free_mb * 1024) + 2048}k", "tmpfs", str(mnt)],
                       check=True)
        try:
            _scenario(mnt, free_mb, events)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _scenario(mnt: Path, free_mb: float, events: int) -> None:
    with (mnt / "ballast").open("wb") as f:
        while _free(mnt) > free_mb * MiB:
            f.write(b"\0" * min(256 * 1024, _free(mnt) - int(free_mb * MiB)))
            f.flush()
    audit = AuditLog(mnt / "audit.db")
    store = PassageStore.open(mnt / "passages.db", mnt / "keys.db", os.urandom(32), PassageConfig(purge_interval_s=0),
                              audit)
    dbs = (mnt / "passages.db", mnt / "keys.db", mnt / "audit.db")
    limits = OutboxLimits(state_databases=dbs, other_bytes_per_event=PASSAGE_BYTES_PER_EVENT)
    ob = Outbox(mnt / "outbox.db", limits=limits)
    committer = Committer(ob, PrivacyBoundary(Pseudonymiser(os.urandom(32)), Origin("d", "c", "g")),
                          BackoffConfig(initial_s=0.01, max_s=0.05), [store])
    start_free, lowest = _free(mnt), _free(mnt)
    for i in range(0, events, 20):
        committer.commit(observations(20, i))
        lowest = min(lowest, _free(mnt))
    c = ob.counters()
    print(f"{start_free / MiB:.1f} MiB free, {events} events offline: dropped {c.get('dropped_quota', 0)} "
          f"(alarm events {committer.alarms_committed}), refused commits {committer.full_refusals}, "
          f"passage store failures {store.failures} (missed {store.missed}), lowest free {lowest / MiB:.2f} MiB, "
          f"outbox quota {ob.storage().quota_bytes / MiB:.2f} MiB, "
          f"outbox file {(mnt / 'outbox.db').stat().st_size / MiB:.2f} MiB")
    store.close()
    audit.close()
    ob.close()


def main() -> None:
    """Measure, then print the table docs/delivery.md quotes."""
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--scenario", action="store_true")
    p.add_argument("--free-mb", type=float, default=65.5)
    p.add_argument("--old-quota", action="store_true")
    args = p.parse_args()
    if args.scenario:
        scenario(args.free_mb, 6000 if args.events == 20000 else args.events, args.old_quota)
        return
    ob_bpe, ps_bpe = measure(args.events)
    print(f"outbox: {ob_bpe:.0f} bytes per pending event; passage store: {ps_bpe:.0f} bytes per event "
          f"(mixed kinds, {args.events} events)")
    reserve, headroom, quota, retention = 64 * MiB, 4 * WAL_LIMIT_BYTES, 512 * MiB, 7 * 86400.0
    rates = (0.1, 1.0, 10.0)
    print("| free space | " + " | ".join(f"{r:g} events/s" for r in rates) + " |")
    print("|---|" + "---|" * len(rates))
    for free_mb in (100, 256, 1024, 4096, 16384):
        room = max(free_mb * MiB - reserve - headroom, 0)
        cells = []
        for rate in rates:
            # Both grow during the outage from the same free space; the outbox also stops at its quota.
            s = min(room / (rate * (ob_bpe + ps_bpe)), quota / (rate * ob_bpe))
            if s >= retention:
                cells.append("7 d (retention)")  # events expire before the disk runs out
            else:
                cells.append(f"{s / 3600:.1f} h" if s < 72 * 3600 else f"{s / 86400:.1f} d")
        print(f"| {free_mb} MiB | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
