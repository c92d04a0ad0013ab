"""What one event costs on disk, and how long a broker outage each disk size buys (issue 17).

Commits a realistic mix (face, plate, card, device aggregate: a quarter each) through the real
Committer into a real outbox and passage store, measures the bytes per event each file takes, then
prints the outage each free-space size absorbs at a few event rates, with the default reserve
(64 MiB), the WAL headroom of the four state databases, the default 512 MiB outbox quota and
the default 7-day retention.

    .venv/bin/python -m bench.bench_disk [--events 20000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from edge.audit import AuditLog
from edge.configbase import BackoffConfig
from edge.diskbudget import WAL_LIMIT_BYTES
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


def main() -> None:
    """Measure, then print the table docs/delivery.md quotes."""
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20000)
    args = p.parse_args()
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
