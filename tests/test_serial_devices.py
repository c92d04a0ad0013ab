"""DeviceObserver: card swipes, per-window device_seen, randomised MACs only in aggregates."""

from __future__ import annotations

import pytest

from edge.pipeline.config import DeviceConfig
from edge.pipeline.devices import DeviceObserver, is_randomised_mac
from edge.types import EventKind, IdKind, Observation, RawIdentifier, Reading

T0 = 1_700_000_100.0  # inside an aggregate period that starts at 1_700_000_100 - 100 for period 300
PUBLIC = "a4:5e:60:12:34:56"  # 0xa4: universally administered
PUBLIC2 = "3c:22:fb:00:00:01"
RANDOM = "da:a1:19:00:00:01"  # 0xda: locally administered bit set


def mac(value: str, ts: float, rssi: int | None = -60, source: str = "sniff1", channel: int | None = 6) -> Reading:
    return Reading(source, ts, "sniffer-json", RawIdentifier(IdKind.MAC, value), rssi=rssi, channel=channel)


def card(value: str, ts: float, source: str = "door1") -> Reading:
    return Reading(source, ts, "rdm6300", RawIdentifier(IdKind.CARD, value))


def of_kind(obs: list[Observation], kind: EventKind) -> list[Observation]:
    return [o for o in obs if o.kind is kind]


def test_locally_administered_bit() -> None:
    assert not is_randomised_mac(PUBLIC)
    assert is_randomised_mac(RANDOM)
    assert is_randomised_mac("02:00:00:00:00:01")
    assert not is_randomised_mac("fc:00:00:00:00:01")


def test_card_swipe_observation_with_direction_and_debounce() -> None:
    observer = DeviceObserver(DeviceConfig(card_debounce_s=2.0), sides={"door1": "in"})
    [swipe] = observer.observe(card("0A1B2C3D4E", T0))
    assert swipe.kind is EventKind.CARD_SWIPE
    assert swipe.subject == RawIdentifier(IdKind.CARD, "0A1B2C3D4E")
    assert dict(swipe.attrs) == {"format": "rdm6300", "direction": "in"}
    assert swipe.ts == T0
    # The reader repeats the frame while the card stays in the field: one swipe.
    assert observer.observe(card("0A1B2C3D4E", T0 + 0.5)) == []
    assert observer.observe(card("0A1B2C3D4E", T0 + 2.0)) == []  # quiet period slides with the card
    assert len(observer.observe(card("0A1B2C3D4E", T0 + 4.5))) == 1
    # Another card, or the same card on another reader, is not debounced.
    assert len(observer.observe(card("FFFF000001", T0 + 4.6))) == 1
    assert len(observer.observe(card("0A1B2C3D4E", T0 + 4.7, source="door2"))) == 1
    assert observer.stats().cards_debounced == 2


def test_device_seen_once_per_window_with_rssi_summary() -> None:
    observer = DeviceObserver(DeviceConfig(window_s=60, aggregate_period_s=3600))
    out: list[Observation] = []
    for i, rssi in enumerate([-70, -50, -65, -55]):
        out += observer.observe(mac(PUBLIC, T0 + 10 * i, rssi=rssi))
    out += observer.tick(T0 + 59.9)
    assert of_kind(out, EventKind.DEVICE_SEEN) == []
    out += observer.tick(T0 + 60)
    [seen] = of_kind(out, EventKind.DEVICE_SEEN)
    assert seen.subject == RawIdentifier(IdKind.MAC, PUBLIC)
    assert seen.source_id == "sniff1"
    assert dict(seen.attrs) == {
        "format": "sniffer-json",
        "first_seen": T0,
        "last_seen": T0 + 30,
        "sightings": 4,
        "rssi_min": -70,
        "rssi_max": -50,
        "rssi_mean": -60.0,
        "channel": 6,
    }
    assert seen.ts == T0 + 30
    # A new sighting after the window opens a new window: one more event, later.
    assert of_kind(observer.observe(mac(PUBLIC, T0 + 61)), EventKind.DEVICE_SEEN) == []
    [again] = of_kind(observer.tick(T0 + 121), EventKind.DEVICE_SEEN)
    assert again.attrs["sightings"] == 1 and again.attrs["first_seen"] == T0 + 61


def test_reading_time_closes_windows_without_tick() -> None:
    observer = DeviceObserver(DeviceConfig(window_s=5, aggregate_period_s=3600))
    observer.observe(mac(PUBLIC, T0))
    out = observer.observe(mac(PUBLIC2, T0 + 6))
    assert [o.subject for o in of_kind(out, EventKind.DEVICE_SEEN)] == [RawIdentifier(IdKind.MAC, PUBLIC)]


def test_rssi_summary_absent_without_rssi() -> None:
    observer = DeviceObserver(DeviceConfig(window_s=1, aggregate_period_s=3600))
    observer.observe(mac(PUBLIC, T0, rssi=None, channel=None))
    [seen] = of_kind(observer.tick(T0 + 1), EventKind.DEVICE_SEEN)
    assert set(seen.attrs) == {"format", "first_seen", "last_seen", "sightings"}


def test_randomised_macs_are_never_identities_only_counted() -> None:
    observer = DeviceObserver(DeviceConfig(window_s=10, aggregate_period_s=300))
    start = 1_700_000_100.0 - (1_700_000_100.0 % 300)
    out: list[Observation] = []
    randoms = [f"{0x02 | (i << 2):02x}:11:22:33:44:{i:02x}" for i in range(1, 6)]
    for i, r in enumerate(randoms * 3):
        out += observer.observe(mac(r, T0 + i))
    out += observer.observe(mac(PUBLIC, T0 + 20))
    out += observer.observe(mac(PUBLIC2, T0 + 21))
    out += observer.tick(start + 300)
    assert all(o.subject is None or o.subject.value not in randoms for o in out)
    seen = of_kind(out, EventKind.DEVICE_SEEN)
    assert sorted(o.subject.value for o in seen if o.subject) == sorted([PUBLIC, PUBLIC2])
    [agg] = of_kind(out, EventKind.DEVICE_AGGREGATE)
    assert agg.subject is None and agg.subject_ref is None
    assert agg.ts == start + 300
    assert dict(agg.attrs) == {
        "window_start": start,
        "window_end": start + 300,
        "sightings": 17,
        "distinct": 7,
        "randomised": 5,
        "randomised_sightings": 15,
        "overflow": 0,
        "capped": False,
    }
    assert observer.stats().randomised_sightings == 15


def test_aggregate_is_periodic_and_aligned() -> None:
    observer = DeviceObserver(DeviceConfig(window_s=10, aggregate_period_s=60))
    observer.observe(mac(RANDOM, 120.0 + 5))
    [first] = of_kind(observer.tick(180.0), EventKind.DEVICE_AGGREGATE)
    assert (first.attrs["window_start"], first.attrs["window_end"], first.attrs["randomised"]) == (120.0, 180.0, 1)
    # An empty period still reports (zero counts), so consumers see the sensor's rhythm.
    [second] = of_kind(observer.tick(240.0), EventKind.DEVICE_AGGREGATE)
    assert (second.attrs["window_start"], second.attrs["sightings"]) == (180.0, 0)
    assert observer.tick(250.0) == []


def test_device_cap_counts_overflow_instead_of_growing() -> None:
    observer = DeviceObserver(DeviceConfig(window_s=100, aggregate_period_s=3600, max_devices=3, max_distinct=4))
    macs = [f"a4:5e:60:00:00:{i:02x}" for i in range(10)]
    for i, m in enumerate(macs):
        observer.observe(mac(m, T0 + i))
    out = observer.flush(T0 + 50)
    seen = of_kind(out, EventKind.DEVICE_SEEN)
    assert [o.subject.value for o in seen if o.subject] == macs[:3]
    [agg] = of_kind(out, EventKind.DEVICE_AGGREGATE)
    assert agg.attrs["overflow"] == 7
    assert agg.attrs["distinct"] == 4 and agg.attrs["capped"] is True
    assert observer.stats().devices_overflow == 7


def test_card_memory_is_bounded() -> None:
    observer = DeviceObserver(DeviceConfig(max_cards=8, card_debounce_s=100))
    for i in range(100):
        assert len(observer.observe(card(f"{i:010X}", T0 + i * 0.01))) == 1
    # The oldest entries were forgotten, so card 0 swipes again; the latest is still debounced.
    assert len(observer.observe(card(f"{0:010X}", T0 + 2))) == 1
    assert observer.observe(card(f"{99:010X}", T0 + 2)) == []


def test_sources_are_independent() -> None:
    observer = DeviceObserver(DeviceConfig(window_s=10, aggregate_period_s=3600))
    observer.observe(mac(PUBLIC, T0, source="a"))
    observer.observe(mac(PUBLIC, T0 + 1, source="b"))
    seen = of_kind(observer.tick(T0 + 20), EventKind.DEVICE_SEEN)
    assert sorted(o.source_id for o in seen) == ["a", "b"]


def test_other_kinds_are_ignored() -> None:
    observer = DeviceObserver()
    assert observer.observe(Reading("cam", T0, "x", RawIdentifier(IdKind.PLATE, "ABC123"))) == []
    assert observer.stats().ignored == 1


@pytest.mark.parametrize("window_s", [0, -1])
def test_config_rejects_non_positive_windows(window_s: float) -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        DeviceConfig(window_s=window_s)


def test_ble_random_addresses_flagged_by_the_sniffer_are_only_counted() -> None:
    from drivers.serial.registry import make_decoder
    from edge.pipeline.config import DeviceConfig
    from edge.pipeline.devices import DeviceObserver
    from edge.types import EventKind

    decoder = make_decoder("sniffer-csv")
    # A BLE random static address: its first octet (0xC4) does not set the locally-administered bit.
    frames = decoder.feed(b"1,C4:11:22:33:44:55,-60,,ble-random\n2,3C:22:FB:12:34:56,-61,,ble\n")
    assert [f.address_random for f in frames] == [True, False]
    observer = DeviceObserver(DeviceConfig(window_s=1.0, aggregate_period_s=10.0))
    out = []
    for i, frame in enumerate(frames):
        out += observer.observe(frame.to_reading("sniffer1", 100.0 + i))
    out += observer.flush(200.0)
    seen = [o for o in out if o.kind is EventKind.DEVICE_SEEN]
    assert len(seen) == 1 and seen[0].subject is not None
    assert seen[0].subject.value == "3c:22:fb:12:34:56"
    agg = [o for o in out if o.kind is EventKind.DEVICE_AGGREGATE]
    assert agg and agg[0].attrs["randomised"] == 1
