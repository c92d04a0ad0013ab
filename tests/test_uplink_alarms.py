"""Alarms go out ahead of a backlog (uplink.alarms_first), against a real mosquitto: order, not timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.inputs.base import InputScan
from drivers.inputs.config import ModbusInputsConfig
from drivers.inputs.interpret import InputInterpreter
from edge.configbase import BackoffConfig
from edge.outbox import Outbox
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Event, EventKind, IdKind, Observation, RawIdentifier
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.uplink.uplink import Uplink
from tests._events import ORIGIN
from tests._mqtt import Collector
from tests.conftest import Broker

BOUNDARY = PrivacyBoundary(Pseudonymiser(b"k" * 32), ORIGIN)
TS = 1_795_000_000.0


def _backlog(n: int) -> list[Event]:
    return [BOUNDARY.to_event(Observation(EventKind.CARD_SWIPE, f"reader{i % 2}", TS + i * 0.01,
                                          subject=RawIdentifier(IdKind.CARD, f"{0xC0000000 + i:010X}"),
                                          attrs={"format": "rdm6300"}))
            for i in range(n)]


def _sos() -> Event:
    cfg = ModbusInputsConfig(id="io1", port="/dev/null", inputs=[{"id": "sos1", "channel": 0,  # type: ignore[list-item]
                                                                  "meaning": "alarm_column"}])
    it = InputInterpreter(cfg)
    out = it.feed(InputScan(TS + 100, {0: True}, {})) + it.feed(InputScan(TS + 100.1, {0: True}, {}))
    assert len(out) == 1
    return BOUNDARY.to_event(out[0])


@pytest.mark.parametrize(("alarms_first", "rate"), [(True, None), (False, None), (True, 400.0)],
                         ids=["strict+alarms_first", "strict", "two-lanes+alarms_first"])
def test_an_sos_committed_behind_a_backlog(tmp_path: Path, broker: Broker, alarms_first: bool,
                                           rate: float | None) -> None:
    ob = Outbox(tmp_path / "o.db")
    backlog = [r.event_id for r in ob.append(_backlog(600)).records]
    sos = ob.append([_sos()]).records[0].event_id  # committed last: during the outage, behind everything
    col = Collector(broker.host, broker.port, "edgegw/#")
    cfg = UplinkConfig(window=16, backlog_rate=rate, alarms_first=alarms_first,
                       backoff=BackoffConfig(initial_s=0.05, max_s=0.3))
    up = Uplink(ob, ORIGIN, MqttConfig(host=broker.host, port=broker.port), cfg)
    up.run(until_empty=True, idle_exit_s=0.2)
    got = col.wait_for(len(backlog) + 1)
    col.close()
    arrivals = [m.json()["event_id"] for m in got if "/events/" in m.topic]
    assert sorted(arrivals) == sorted([*backlog, sos])  # nothing lost, nothing doubled
    position = arrivals.index(sos)
    if alarms_first:
        assert position == 0  # the first publish of the connection, ahead of 600 older events
    else:
        assert position == len(arrivals) - 1  # strict commit order: behind all of them
    for source in ("reader0", "reader1"):  # the backlog itself still goes out in order, without gaps
        seqs = [m.json()["seq"] for m in got if "/events/" in m.topic and m.json()["source"] == source]
        assert seqs == sorted(seqs) == list(range(1, 301))
    assert ob.depth() == 0
    ob.close()
