"""The GA/T 1400 bridge against a mock upper platform (tests/district/_viid_mock.py, a real HTTP server).

Events reach PostgreSQL through the real loader (district.store), our /VIID/Subscribes runs under
uvicorn, the bridge runs its real loop in a thread: digest challenge, wrong password, time offset,
subscriptions (create, notify, cancel), acknowledgements (StatusCode 1 retried with the same id),
a server that answers 503 and then refuses connections, then comes back (re-register, backlog once
by id), keepalive loss, unregister on shutdown, and no pseudonym or raw identifier in any body.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn

from district.config import DatabaseConfig, IngestConfig, ViidConfig, load_config
from district.db import connect
from district.messages import parse
from district.simulate import event, payload, pseudonymous_subject
from district.store import Store
from district.viid.bridge import Bridge
from district.viid.client import ViidClient, ViidRefusedError
from district.viid.guard import GuardRefusedError, check_outgoing
from district.viid.ids import DeviceCodeError, DeviceRole, SubType, object_id, sequence_id, validate_device_code
from district.viid.outbox import Outbox
from district.viid.server import create_viid_app
from edge.compat import UTC
from edge.errors import ConfigError
from edge.ids import uuid7
from edge.privacy.config import EpochPolicy
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import IdKind
from tests.conftest import free_port
from tests.district._pg import OwnPostgres
from tests.district._viid_mock import MockViid
from tests.district.conftest import Database

DEVICE = "31010000002000000001"  # us: type 200 (a platform)
APE = "31010100001320000001"  # gw1: type 132 (an IPC)
TOLLGATE = "31010100001210000001"  # gw1's gate: type 121
APE2 = "31010200001320000002"  # gw2
PASSWORD = "s3cret-VIID"
PLATE = "沪A·D12345"
TZ = ZoneInfo("Asia/Shanghai")


def wait_for(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- ids, guard, config (no servers) -----------------------------------------------------------------
def _uuid7_at(ms: int) -> uuid.UUID:
    """A UUIDv7 at exactly `ms` (edge.ids.uuid7 never goes back in time within a process)."""
    rand = int.from_bytes(os.urandom(10), "big")
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (rand & (2**62 - 1)))


def test_device_codes_are_validated_by_length_digits_province_and_type() -> None:
    assert validate_device_code(DEVICE, DeviceRole.PLATFORM) == DEVICE
    assert validate_device_code(APE, DeviceRole.APE) == APE
    for bad, why in (("3101000000200000001", "20 digits"), ("3101000000200000000A", "20 digits"),
                     ("00010000002000000001", "province"), ("３１010000002000000001", "20 digits")):
        with pytest.raises(DeviceCodeError, match=why):
            validate_device_code(bad, DeviceRole.PLATFORM)
    with pytest.raises(DeviceCodeError, match=r"type code 132 \(positions 11-13\) is not a platform type"):
        validate_device_code(APE, DeviceRole.PLATFORM)
    with pytest.raises(DeviceCodeError, match="type code 200"):
        validate_device_code(DEVICE, DeviceRole.APE)


def test_object_ids_are_41_digits_local_time_and_a_function_of_the_event() -> None:
    at = datetime(2026, 3, 1, 0, 0, 5, 123000, tzinfo=UTC)
    eid = _uuid7_at(int(at.timestamp() * 1000))
    oid = object_id(APE, SubType.PASSAGE, eid, TZ)
    assert len(oid) == 41 and oid.isdigit()
    assert oid[:20] == APE and oid[20:22] == "02" and oid[22:36] == "20260301080005"  # Shanghai is UTC+8
    assert int(oid[36:]) // 100 == 123  # the millisecond leads the serial
    assert object_id(APE, SubType.PASSAGE, uuid.UUID(str(eid)), TZ) == oid  # same event, same id
    other = _uuid7_at(int(at.timestamp() * 1000))
    assert object_id(APE, SubType.PASSAGE, other, TZ) != oid or other == eid
    assert object_id(APE, SubType.PASSAGE, eid, TZ, bump=1) != oid
    assert len(sequence_id(DEVICE, SubType.SUBSCRIBE_NOTIFICATION, at, 123456, TZ)) == 41
    with pytest.raises(ValueError, match="UUIDv7"):
        object_id(APE, SubType.PASSAGE, uuid.uuid4(), TZ)


def test_the_guard_refuses_personal_objects_and_identifier_shaped_values() -> None:
    ps = Pseudonymiser(os.urandom(32), EpochPolicy.MONTH)
    pseudonym = pseudonymous_subject(ps, IdKind.PLATE, PLATE, time.time())["pseudonym"]
    fine = {"DispositionNotificationListObject": {"DispositionNotificationObject": [{
        "NotificationID": "3" * 41, "DispositionID": "3" * 33, "Title": "watch-list L1 hit (plate)",
        "TriggerTime": "20260301080005", "CntObjectID": "1" * 41}]}}
    check_outgoing(fine)
    for bad, rule in (({"MotorVehicleObject": {"PlateNo": "x"}}, "personal field MotorVehicleObject"),
                      ({"X": {"PlateNo": "1"}}, "personal field PlateNo"),
                      ({"Title": f"hit {pseudonym}"}, "pseudonym"),
                      ({"Title": "沪AD12345 seen"}, "plate number"),
                      ({"Place": "near 3c:5a:b4:01:02:03"}, "MAC"),
                      ({"Title": str(uuid7())}, "event id"),
                      ({"L": [{"FaceObject": {}}]}, "FaceObject")):
        with pytest.raises(GuardRefusedError, match=rule) as info:
            check_outgoing(bad)
        assert pseudonym not in str(info.value) and "AD12345" not in str(info.value)  # never the value


def test_viid_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    p = tmp_path / "d.toml"
    p.write_text('[http]\nport = 8088\n\n[viid]\nserver_url = "http://10.0.0.5:8120"\ndevice_id = "1234"\n')
    with pytest.raises(ConfigError, match=r"d\.toml: viid: .*20 digits.* \(line 4\)"):
        load_config(p)
    p.write_text(f'[viid]\ndevice_id = "{DEVICE}"\nkeepalive_s = -1\n')
    with pytest.raises(ConfigError, match=r"d\.toml: viid\.keepalive_s: .* \(line 3\)"):
        load_config(p)
    p.write_text(f'[viid]\ndevice_id = "{DEVICE}"\n\n[viid.devices."d1/c1/gw1"]\nape_id = "{DEVICE}"\n')
    with pytest.raises(ConfigError, match=r"viid\.devices\.d1/c1/gw1: .*type code 200.* \(line 4\)"):
        load_config(p)
    p.write_text(f'[viid]\ndevice_id = "{DEVICE}"\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError, match="unknown time zone"):
        load_config(p)


# -- the client against the mock ----------------------------------------------------------------------
@pytest.fixture
def mock() -> Iterator[MockViid]:
    m = MockViid({DEVICE: PASSWORD}, free_port()).start()
    yield m
    m.close()


def viid_cfg(url: str, **over: Any) -> ViidConfig:
    base: dict[str, Any] = {
        "server_url": url, "device_id": DEVICE, "keepalive_s": 0.4, "keepalive_misses": 2, "tick_s": 0.05,
        "request_timeout_s": 2.0, "backoff": {"initial_s": 0.05, "max_s": 0.4}, "lookback_s": 5,
        "report_interval_s": 0.5, "offline_after_s": 60,
        "devices": {"d1/c1/gw1": {"ape_id": APE, "tollgate_id": TOLLGATE, "name": "east gate", "place_code": "310101"},
                    "d1/c1/gw2": {"ape_id": APE2, "name": "north gate"}},
        "dispositions": {"L-0001": "310000000000" + "01" + "2026030100000000001"},
    }
    base.update(over)
    return ViidConfig.model_validate(base)


def test_register_answers_the_digest_challenge_and_reuses_the_nonce(mock: MockViid) -> None:
    client = ViidClient(viid_cfg(mock.url), PASSWORD)
    try:
        assert client.register().ok
        assert client.keepalive().ok and client.keepalive().ok
        assert client.unregister().ok
    finally:
        client.close()
    codes = [(path, code) for _, path, code in mock.state.requests]
    assert codes[:2] == [("/VIID/System/Register", 401), ("/VIID/System/Register", 200)]
    assert sum(1 for _, c in codes if c == 401) == 1  # later requests answer the same challenge (nc counts up)
    assert mock.state.registrations == 1 and mock.state.unregistrations == 1


def test_a_wrong_password_is_refused_not_retried_as_an_outage(mock: MockViid) -> None:
    client = ViidClient(viid_cfg(mock.url), "wrong")
    try:
        with pytest.raises(ViidRefusedError, match="401 after the digest challenge"):
            client.register()
    finally:
        client.close()
    assert mock.state.registrations == 0
    assert [c for _, _, c in mock.state.requests] == [401, 401]  # challenge, refused answer: no third try


def test_time_sync_records_the_servers_offset(mock: MockViid) -> None:
    mock.state.skew_s = 37.0
    client = ViidClient(viid_cfg(mock.url), PASSWORD)
    try:
        ts = client.time()
    finally:
        client.close()
    assert 36.0 <= ts.offset_s <= 38.5, ts
    assert ts.rtt_s < 1.0


# -- the bridge, with PostgreSQL and our subscription server -------------------------------------------
def ingest(pg: Database, bodies: list[dict[str, Any]], statuses: dict[str, bool] | None = None) -> None:
    """Load events (and gateway statuses) through the platform's real loader."""
    items = [parse(f"edgegw/{b['district']}/{b['community']}/{b['gateway']}/events/{b['kind']}", payload(b))
             for b in bodies]
    for gw, online in (statuses or {}).items():
        items.append(parse(f"edgegw/{gw}/status", f'{{"online": {str(online).lower()}}}'.encode()))
    store = Store(DatabaseConfig(dsn=pg.dsn), IngestConfig())
    try:
        store.write(items)
    finally:
        store.close()


def passage_and_hit(ps: Pseudonymiser, seq: int, list_id: str = "L-0001") -> tuple[dict[str, Any], dict[str, Any]]:
    """A plate passage at gw1 (pseudonymous subject) and the watch_hit alarm the gateway raised for it."""
    now = time.time()
    passage = event("d1", "c1", "gw1", "cam2", 1, seq, ts=now,
                    subject=pseudonymous_subject(ps, IdKind.PLATE, PLATE, now))
    hit = event("d1", "c1", "gw1", "cam2", 1, seq + 1, ts=now, kind="alarm")
    hit["attrs"] = {"code": "watch_hit", "message": f"plate on watch-list {list_id}", "severity": "critical",
                    "id_kind": "plate", "list_id": list_id, "list_version": 3, "case_id": "CASE-2026-0042"}
    hit["links"] = [passage["event_id"]]
    return passage, hit


@contextmanager
def running(pg: Database, cfg: ViidConfig, password: str = PASSWORD) -> Iterator[tuple[Bridge, Outbox, str]]:
    """Our /VIID/Subscribes under uvicorn and the bridge loop in a thread; both stopped at the end."""
    outbox = Outbox(cfg, lambda: connect(pg.dsn, autocommit=True))
    bridge = Bridge(cfg, ViidClient(cfg, password), outbox)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_viid_app(cfg, outbox, on_change=bridge.wake), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))
    web = threading.Thread(target=server.run, daemon=True)
    web.start()
    wait_for(lambda: server.started, 10, "our subscription server")
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            bridge.run()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield bridge, outbox, f"http://127.0.0.1:{port}"
    finally:
        bridge.stop()
        t.join(10)
        server.should_exit = True
        web.join(10)
    assert not t.is_alive()
    if errors and not isinstance(errors[0], ViidRefusedError):
        raise errors[0]


def _outbox_rows(pg: Database) -> list[tuple[Any, ...]]:
    return pg.query("SELECT notification_id, event_id, state, attempts FROM viid_outbox WHERE kind = 'disposition' "
                    "ORDER BY id")


def test_watch_hits_become_disposition_notifications_without_personal_data(pg: Database, mock: MockViid) -> None:
    ps = Pseudonymiser(os.urandom(32), EpochPolicy.MONTH)
    pairs = [passage_and_hit(ps, 1 + 2 * i) for i in range(3)]
    pseudonym = pairs[0][0]["subject"]["pseudonym"]
    ingest(pg, [e for pair in pairs for e in pair], {"d1/c1/gw1": True})
    # The first hit's NotificationID is known in advance (derived from its event id): refuse it twice.
    first = object_id(DEVICE, SubType.DISPOSITION_NOTIFICATION, uuid.UUID(pairs[0][1]["event_id"]), TZ)
    mock.state.reject[first] = 2
    mock.state.skew_s = -12.0
    cfg = viid_cfg(mock.url)
    with running(pg, cfg) as (_bridge, outbox, _):
        wait_for(lambda: len(mock.state.acked) == 3, what="three acknowledged disposition notifications")
        wait_for(lambda: "time_offset_s" in outbox.status()["state"], what="the time offset recorded")
        status = outbox.status()
    assert mock.state.unregistrations == 1  # shutdown unregistered
    assert -13.5 <= status["state"]["time_offset_s"] <= -10.5
    # Retried with the same id: received three times, acknowledged once; every other id once.
    assert mock.state.received.count(first) == 3 and mock.state.acked[first] == 1
    assert all(n == 1 for n in mock.state.acked.values())
    rows = _outbox_rows(pg)
    assert [r[2] for r in rows] == ["delivered"] * 3 and sorted(r[3] for r in rows) == [1, 1, 3]
    for passage, hit in pairs:
        nid = object_id(DEVICE, SubType.DISPOSITION_NOTIFICATION, uuid.UUID(hit["event_id"]), TZ)
        obj = mock.state.objects[nid]
        assert obj["DispositionID"] == cfg.dispositions["L-0001"]
        assert obj["CntObjectID"] == object_id(APE, SubType.PASSAGE, uuid.UUID(passage["event_id"]), TZ)
        when = datetime.fromisoformat(hit["ts"].replace("Z", "+00:00"))
        assert obj["TriggerTime"] == when.astimezone(TZ).strftime("%Y%m%d%H%M%S")
        assert "PlateNo" not in obj and "MotorVehicleObject" not in obj
    wire = "\n".join(mock.state.bodies)
    event_ids = [e["event_id"] for pair in pairs for e in pair]
    for secret in (pseudonym, PLATE, PLATE.replace("·", ""), "D12345", *event_ids):
        assert secret not in wire


def test_a_server_that_fails_and_recovers_gets_the_backlog_once_by_id(pg: Database, mock: MockViid) -> None:
    ps = Pseudonymiser(os.urandom(32), EpochPolicy.MONTH)
    ingest(pg, list(passage_and_hit(ps, 1)), {"d1/c1/gw1": True})
    with running(pg, viid_cfg(mock.url)) as (bridge, _outbox, _):
        wait_for(lambda: len(mock.state.acked) == 1, what="the first notification")
        mock.state.fail_503 = True  # first it answers 503 …
        backlog = [passage_and_hit(ps, 10 + 2 * i) for i in range(5)]
        ingest(pg, [e for pair in backlog for e in pair])
        wait_for(lambda: not bridge.registered, what="the loss to be noticed")
        mock.go_down()  # … then the port refuses connections
        time.sleep(1.0)
        assert len(mock.state.acked) == 1
        mock.state.fail_503 = False
        mock.come_up()  # back, knowing nobody
        wait_for(lambda: len(mock.state.acked) == 6, what="the backlog")
        assert bridge.registrations >= 2
    assert mock.state.registrations >= 2
    assert all(n == 1 for n in mock.state.acked.values()) and len(mock.state.acked) == 6
    ids = {object_id(DEVICE, SubType.DISPOSITION_NOTIFICATION, uuid.UUID(h["event_id"]), TZ) for _, h in backlog}
    assert ids <= set(mock.state.acked)
    assert [r[2] for r in _outbox_rows(pg)] == ["delivered"] * 6


def test_keepalive_refused_means_register_again(pg: Database, mock: MockViid) -> None:
    with running(pg, viid_cfg(mock.url)) as (bridge, _, _):
        wait_for(lambda: mock.state.registrations == 1, what="registration")
        mock.forget()
        # The mock counts a registration before it answers: wait for the bridge to have the answer too.
        wait_for(lambda: mock.state.registrations == 2 and bridge.registered,
                 what="re-registration after a refused keepalive")
    kinds = [path for _, path, _ in mock.state.requests]
    assert kinds.count("/VIID/System/Keepalive") >= 1


def test_a_refused_password_stops_the_bridge_after_the_configured_tries(pg: Database, mock: MockViid) -> None:
    cfg = viid_cfg(mock.url, register_refusals=2)
    with running(pg, cfg, password="wrong") as (bridge, outbox, _):
        wait_for(lambda: mock.state.requests.count(("POST", "/VIID/System/Register", 401)) >= 4, what="two refusals")
        time.sleep(0.5)
        assert not bridge.registered
        refusals = mock.state.requests.count(("POST", "/VIID/System/Register", 401))
    assert refusals == 4  # two tries, each a challenge and a refused answer, then the loop stopped
    assert outbox.status()["state"]["register_refusals"] == 2


def test_subscription_lifecycle_create_notify_cancel(pg: Database, mock: MockViid) -> None:
    ingest(pg, [], {"d1/c1/gw1": True, "d1/c1/gw2": False})
    upper = {"User-Identify": "31000000005030000001", "Content-Type": "application/VIID+JSON"}
    sid, refused_sid = "310000000000032026030100000001", "310000000000032026030100000002"
    cfg = viid_cfg(mock.url, server_id="31000000005030000001")
    with running(pg, cfg) as (_, _, ours):
        body = {"SubscribeListObject": {"SubscribeObject": [
            {"SubscribeID": sid, "Title": "devices", "SubscribeDetail": "3,4,7", "ResourceURI": DEVICE,
             "ApplicantName": "upper", "ReceiveAddr": f"{mock.url}/VIID/SubscribeNotifications",
             "ReportInterval": 1, "OperateType": 0},
            {"SubscribeID": refused_sid, "SubscribeDetail": "13", "ReceiveAddr": f"{mock.url}/VIID/x"},
            {"SubscribeID": "elsewhere1", "SubscribeDetail": "3", "ReceiveAddr": "http://10.9.9.9:80/VIID/x"}]}}
        r = httpx.post(f"{ours}/VIID/Subscribes", json=body, headers=upper)
        st = {o["Id"]: o["StatusCode"] for o in r.json()["ResponseStatusListObject"]["ResponseStatusObject"]}
        # Vehicle records (13) are refused, and so is a ReceiveAddr on another host than the upper platform.
        assert r.status_code == 200 and st == {sid: "0", refused_sid: "4", "elsewhere1": "4"}
        stranger = {**upper, "User-Identify": APE}
        assert httpx.post(f"{ours}/VIID/Subscribes", json=body, headers=stranger).status_code == 403

        def reports() -> list[dict[str, Any]]:
            return [o for o in mock.state.objects.values() if o.get("SubscribeID") == sid]
        wait_for(lambda: len(reports()) >= 2, what="two reports")
        rep = reports()[0]
        apes = {a["ApeID"]: a["IsOnline"] for a in rep["DeviceList"]["APEObject"]}
        assert apes == {APE: "1", APE2: "2"}
        assert {s["ApeID"] for s in rep["DeviceStatusList"]["APEStatusObject"]} == {APE, APE2}
        gates = rep["TollgateObjectList"]["TollgateObject"]
        assert [(g["TollgateID"], g["Status"], g["PlaceCode"]) for g in gates] == [(TOLLGATE, "1", "310101")]
        assert len(rep["NotificationID"]) == 41 and rep["NotificationID"].startswith(DEVICE + "03")
        r = httpx.delete(f"{ours}/VIID/Subscribes", params={"IDList": f"{sid},nope"}, headers=upper)
        st = {o["Id"]: o["StatusCode"] for o in r.json()["ResponseStatusListObject"]["ResponseStatusObject"]}
        assert st == {sid: "0", "nope": "4"}
        time.sleep(0.3)  # a report in flight at the cancel may still land
        n = len(reports())
        time.sleep(2.0)  # two report intervals: nothing more after the cancel
        assert len(reports()) == n
        # PUT: place one, then cancel it with OperateType 1.
        put_sid = "310000000000032026030100000003"
        sub = {"SubscribeID": put_sid, "SubscribeDetail": "4", "ReceiveAddr": f"{mock.url}/VIID/SubscribeNotifications"}
        placed = {"SubscribeListObject": {"SubscribeObject": [sub]}}
        r = httpx.put(f"{ours}/VIID/Subscribes", json=placed, headers=upper)
        assert r.json()["ResponseStatusListObject"]["ResponseStatusObject"][0]["StatusCode"] == "0"
        wait_for(lambda: any(o.get("SubscribeID") == put_sid for o in mock.state.objects.values()), what="PUT report")
        cancel = {"SubscribeListObject": {"SubscribeObject": [{**sub, "OperateType": 1}]}}
        r = httpx.put(f"{ours}/VIID/Subscribes", json=cancel, headers=upper)
        assert r.json()["ResponseStatusListObject"]["ResponseStatusObject"][0]["StatusCode"] == "0"
    assert pg.scalar("SELECT status FROM viid_subscriptions WHERE subscribe_id = %s", (put_sid,)) == 1
    assert pg.scalar("SELECT status FROM viid_subscriptions WHERE subscribe_id = %s", (sid,)) == 1
    assert pg.scalar("SELECT count(*) FROM viid_subscriptions WHERE subscribe_id = %s", (refused_sid,)) == 0


def test_a_notification_id_collision_takes_the_next_serial_and_a_rescan_enqueues_nothing(pg: Database) -> None:
    ps = Pseudonymiser(os.urandom(32), EpochPolicy.MONTH)
    passage, hit = passage_and_hit(ps, 1)
    ingest(pg, [passage, hit])
    cfg = viid_cfg("http://127.0.0.1:9")
    eid = uuid.UUID(hit["event_id"])
    taken = object_id(DEVICE, SubType.DISPOSITION_NOTIFICATION, eid, TZ)
    pg.query("INSERT INTO viid_outbox (kind, notification_id, event_id, url, body, state) VALUES "
             "('disposition', %s, %s, 'http://x', '{}', 'delivered')", (taken, uuid7()))
    outbox = Outbox(cfg, lambda: connect(pg.dsn, autocommit=True))
    assert outbox.collect_watch_hits() == 1
    assert outbox.collect_watch_hits() == 0  # the look-back sees it again; the outbox is unique by event id
    nid = pg.scalar("SELECT notification_id FROM viid_outbox WHERE event_id = %s", (eid,))
    assert nid == object_id(DEVICE, SubType.DISPOSITION_NOTIFICATION, eid, TZ, bump=1) != taken


def test_a_dead_receive_addr_neither_holds_dispositions_nor_piles_up_reports(pg: Database, mock: MockViid) -> None:
    ps = Pseudonymiser(os.urandom(32), EpochPolicy.MONTH)
    cfg = viid_cfg(mock.url, report_interval_s=0.2)
    with running(pg, cfg) as (_, outbox, ours):
        sub = {"SubscribeID": "310000000000032026030100000009", "SubscribeDetail": "3",
               "ReceiveAddr": f"http://127.0.0.1:{free_port()}/VIID/SubscribeNotifications"}  # nobody listens
        r = httpx.post(f"{ours}/VIID/Subscribes", json={"SubscribeListObject": {"SubscribeObject": [sub]}})
        assert r.json()["ResponseStatusListObject"]["ResponseStatusObject"][0]["StatusCode"] == "0"
        wait_for(lambda: pg.scalar("SELECT coalesce(max(attempts), 0) FROM viid_outbox WHERE kind = 'subscribe'")
                 >= 2, what="the report to fail twice")
        t0 = time.monotonic()
        ingest(pg, list(passage_and_hit(ps, 1)))
        wait_for(lambda: len(mock.state.acked) == 1, 5, "the disposition despite the dead subscriber")
        took = time.monotonic() - t0
        time.sleep(1.0)  # five report intervals
        pending = pg.scalar("SELECT count(*) FROM viid_outbox WHERE kind = 'subscribe' AND state = 'pending'")
        assert outbox.status()["outbox"]["disposition"] == {"delivered": 1}
    assert took < 3.0
    assert pending == 1  # one report, retried under its own id; no newer snapshots behind it


def test_postgres_away_keeps_the_registration_and_the_hit_goes_when_it_is_back(mock: MockViid) -> None:
    from district.db import migrate

    own = OwnPostgres()
    try:
        own.start()
        own.create_database()
        migrate(own.dsn)
        db = Database("edgegw", own.dsn)
        ps = Pseudonymiser(os.urandom(32), EpochPolicy.MONTH)
        with running(db, viid_cfg(mock.url)) as (bridge, _, _):
            wait_for(lambda: bridge.registered, what="registration")
            own.stop("immediate")  # a crash: the bridge's connection is cut
            before = mock.state.requests.count(("POST", "/VIID/System/Keepalive", 200))
            time.sleep(2.0)  # five keepalive intervals without PostgreSQL
            during = mock.state.requests.count(("POST", "/VIID/System/Keepalive", 200)) - before
            own.start()
            ingest(db, list(passage_and_hit(ps, 1)))
            wait_for(lambda: len(mock.state.acked) == 1, what="the hit after PostgreSQL came back")
        assert during >= 3 and mock.state.registrations == 1  # kept alive throughout, never re-registered
    finally:
        own.close()
