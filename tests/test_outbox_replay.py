"""The platform's replay request on the gateway side: `Outbox.unsend_range` sends a seq range again."""

from __future__ import annotations

from pathlib import Path

from edge.outbox import Outbox
from tests._events import events


def test_unsend_range_marks_only_that_sources_sent_rows_in_range_of_this_boot(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    ob.append(events(source="cam1") + events(source="cam1") + events(source="reader1"))
    rows = ob.pending(100)
    ob.mark_sent([r.row_id for r in rows])
    assert ob.pending(100, unsent_only=True) == []
    assert ob.unsend_range("cam1", ob.boot + 1, 2, 4) == 0  # another boot: an older outbox file, ignored
    assert ob.unsend_range("cam1", ob.boot, 4, 2) == 0  # an empty range
    assert ob.unsend_range("cam1", ob.boot, 2, 4) == 3
    again = ob.pending(100, unsent_only=True)
    assert [(r.source_id, r.seq) for r in again] == [("cam1", 2), ("cam1", 3), ("cam1", 4)]
    # Already unsent rows are not counted twice; rows the watermark deleted cannot come back.
    ob.ack_watermark("cam1", ob.boot, 3)
    assert ob.unsend_range("cam1", ob.boot, 1, 6) == 2  # seq 5 and 6 (4 is already unsent)
    assert ob.counters()["replayed"] == 5
    ob.close()
