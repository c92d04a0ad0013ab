"""Decoder examples: real frame layouts, every reject reason, resynchronisation, bounded buffers."""

from __future__ import annotations

import pytest

from drivers.serial.base import DecodedFrame, SerialDecoder
from drivers.serial.rdm6300 import ETX, STX, checksum, encode
from drivers.serial.registry import FORMATS, make_decoder
from drivers.serial.wiegand import encode_bits, parity_ok
from edge.errors import ConfigError
from edge.types import IdKind


def ids(frames: list[DecodedFrame]) -> list[str]:
    return [f.identifier.value for f in frames]


def feed_bytewise(decoder: SerialDecoder, data: bytes) -> list[DecodedFrame]:
    out: list[DecodedFrame] = []
    for i in range(len(data)):
        out.extend(decoder.feed(data[i : i + 1]))
    return out


# -- registry --------------------------------------------------------------------------------------


def test_registry_builds_fresh_decoders_of_each_format() -> None:
    assert set(FORMATS) == {"rdm6300", "wiegand", "mifare", "sniffer-csv", "sniffer-json"}
    for name, info in FORMATS.items():
        first, second = make_decoder(name), make_decoder(name)
        assert first is not second
        assert isinstance(first, SerialDecoder)
        assert first.format == name == info.name
        assert first.stats().accepted == 0


def test_unknown_format_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="rdm6300"):
        make_decoder("em4100-typo")


# -- rdm6300 ---------------------------------------------------------------------------------------


def test_rdm6300_frame_layout_and_checksum() -> None:
    tag = bytes.fromhex("62E3086CED")
    frame = encode(tag)
    assert frame[0] == STX and frame[-1] == ETX and len(frame) == 14
    assert frame[1:11] == b"62E3086CED"
    assert int(frame[11:13], 16) == 0x62 ^ 0xE3 ^ 0x08 ^ 0x6C ^ 0xED == checksum(tag)
    decoder = make_decoder("rdm6300")
    [decoded] = decoder.feed(frame)
    assert decoded.identifier.kind is IdKind.CARD
    assert decoded.identifier.value == "62E3086CED"
    # The 32-bit serial after the version byte, as printed on the card.
    assert decoded.details["decimal"] == f"{0xE3086CED:010d}"


def test_rdm6300_accepts_lowercase_hex_and_id12_crlf_and_canonicalises() -> None:
    tag = bytes.fromhex("0A1B2C3D4E")
    lower = encode(tag).lower()  # STX/ETX are not letters, so only the hex changes
    decoder = make_decoder("rdm6300")
    assert ids(decoder.feed(lower + encode(tag, crlf=True))) == ["0A1B2C3D4E", "0A1B2C3D4E"]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (bytes([STX]) + b"0A1B2C3D4E00" + bytes([ETX]), "checksum"),
        (bytes([STX]) + b"0A1B2C3D4E" + bytes([ETX]), "truncated"),
        (bytes([STX]) + b"0A1B2C3D4G00" + bytes([ETX]), "bad_char"),
        (bytes([STX]) + b"0A1B2C3D4E001122" + bytes([ETX]), "overlong"),
        (bytes([STX]) + b"0A1B2C" + bytes([STX]), "truncated"),
    ],
)
def test_rdm6300_rejects_by_reason_and_recovers(frame: bytes, reason: str) -> None:
    good = encode(bytes.fromhex("0102030405"))
    decoder = make_decoder("rdm6300")
    assert ids(decoder.feed(frame + b"noise" + good)) == ["0102030405"]
    stats = decoder.stats()
    assert stats.accepted == 1
    assert stats.rejected[reason] == 1


def test_rdm6300_split_anywhere_gives_the_same_frames() -> None:
    tags = [bytes([i, 2 * i, 3, 4, 255 - i]) for i in range(5)]
    stream = b"\x03junk".join(encode(t) for t in tags)
    expected = [t.hex().upper() for t in tags]
    assert ids(feed_bytewise(make_decoder("rdm6300"), stream)) == expected
    assert ids(make_decoder("rdm6300").feed(stream)) == expected


def test_rdm6300_reset_counts_the_partial_frame() -> None:
    decoder = make_decoder("rdm6300")
    decoder.feed(encode(bytes(5))[:7])
    assert decoder.buffered == 6
    decoder.reset()
    assert decoder.buffered == 0
    assert decoder.stats().rejected["truncated"] == 1
    # The tail of the cut frame arriving after a reconnect is noise, not a frame.
    assert decoder.feed(encode(bytes(5))[7:]) == []


# -- wiegand ---------------------------------------------------------------------------------------


def test_wiegand26_parity_layout_matches_h10301() -> None:
    # Facility 123, card 45678: 8-bit facility, 16-bit number, even then odd parity.
    data = (123 << 16) | 45678
    bits = encode_bits(data, 26)
    assert len(bits) == 26 and parity_ok(bits)
    assert bits[1:25] == f"{data:024b}"
    assert (int(bits[0]) + bits[1:13].count("1")) % 2 == 0
    assert (int(bits[25]) + bits[13:25].count("1")) % 2 == 1
    [frame] = make_decoder("wiegand").feed(f"Bits=26\r\nRAW Binary={bits}\r\n".encode())
    assert frame.identifier.value == f"{data:06X}"
    assert (frame.details["facility"], frame.details["number"], frame.details["bits"]) == (123, 45678, 26)


def test_wiegand34_bare_line() -> None:
    bits = encode_bits(0xDEADBEEF, 34)
    [frame] = make_decoder("wiegand").feed(bits.encode() + b"\n")
    assert frame.identifier.value == "DEADBEEF"
    assert frame.details["bits"] == 34


@pytest.mark.parametrize("position", [0, 5, 12, 13, 20, 25])
def test_wiegand26_any_single_bit_flip_fails_parity(position: int) -> None:
    bits = list(encode_bits(0x5A5A5A, 26))
    bits[position] = "1" if bits[position] == "0" else "0"
    decoder = make_decoder("wiegand")
    assert decoder.feed(("".join(bits) + "\n").encode()) == []
    assert decoder.stats().rejected == {"parity": 1}


def test_wiegand_checks_both_parity_bits_independently() -> None:
    good = encode_bits(0x0F0F0F, 26)
    bad_lead = ("1" if good[0] == "0" else "0") + good[1:]
    bad_trail = good[:-1] + ("1" if good[-1] == "0" else "0")
    decoder = make_decoder("wiegand")
    assert decoder.feed(f"{bad_lead}\n{bad_trail}\n{good}\n".encode())[0].identifier.value == "0F0F0F"
    assert decoder.stats().rejected == {"parity": 2}


def test_wiegand_header_rules() -> None:
    w26 = encode_bits(0x010203, 26)
    decoder = make_decoder("wiegand")
    stream = (
        "Ready...\r\n"  # the sketch's banner
        f"Bits=34\r\nRAW Binary={w26}\r\n"  # header and data disagree
        "Bits=26\r\n"  # header whose data never came ...
        f"{w26}\r\n"  # ... then a bare frame, decoded on its own
        "Bits=8\r\nRAW Binary=10101010\r\n"  # keypad press: not a card
    )
    assert ids(decoder.feed(stream.encode())) == ["010203"]
    assert decoder.stats().rejected == {
        "unrecognised": 1,
        "length_mismatch": 1,
        "truncated": 1,
        "unsupported_length": 1,
    }


# -- mifare ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "uid"),
    [
        ("04A32B1C", "04A32B1C"),
        ("04a32b1c", "04A32B1C"),
        ("0x04A32B1C", "04A32B1C"),
        ("04 A3 2B 1C", "04A32B1C"),
        ("04:a3:2b:1c", "04A32B1C"),
        ("04-A3-2B-1C", "04A32B1C"),
        ("Card UID: 04 A3 2B 1C", "04A32B1C"),
        ("  UID Value:  0x04 0xA3 0x2B 0x1C 0x5D 0x80 0x11", "04A32B1C5D8011"),
        ("4 A3 2B 1C", "04A32B1C"),
        ("In hex:  04 A3 2B 1C", "04A32B1C"),
        ("0102030405060708090A", "0102030405060708090A"),
    ],
)
def test_mifare_line_forms(line: str, uid: str) -> None:
    [frame] = make_decoder("mifare").feed(line.encode() + b"\r\n")
    assert frame.identifier.kind is IdKind.CARD
    assert frame.identifier.value == uid
    assert frame.details["uid_bytes"] == len(uid) // 2


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("04A32B", "length"),
        ("04A32B1C5D", "length"),
        ("04A32B1", "unrecognised"),
        ("00000000", "bad_uid"),
        ("UID Length: 4 bytes", "unrecognised"),
        ("In dec:  4 16 43 28", "unrecognised"),  # decimal bytes that would parse as hex
        ("Sector: 01 02 03 04", "unrecognised"),  # a label that does not announce a UID
        ("04 A3 2B 1G", "unrecognised"),
        ("caf\u00e9", "encoding"),
    ],
)
def test_mifare_rejects(line: str, reason: str) -> None:
    decoder = make_decoder("mifare")
    assert ids(decoder.feed(line.encode() + b"\n04A32B1C\n")) == ["04A32B1C"]
    assert decoder.stats().rejected == {reason: 1}


# -- sniffers --------------------------------------------------------------------------------------


def test_sniffer_csv_records_and_canonical_mac() -> None:
    decoder = make_decoder("sniffer-csv")
    stream = (
        b"# esp32 sniffer v1\r\n"
        b"ts,mac,rssi,channel,type\r\n"
        b"123456,A4:5E:60:12:34:56,-67,6,probe\r\n"
        b"123457, a4-5e-60-12-34-57 , -90 , 11\r\n"
        b"123458.5,A45E60123458,-40,,ble\r\n"
    )
    frames = decoder.feed(stream)
    assert ids(frames) == ["a4:5e:60:12:34:56", "a4:5e:60:12:34:57", "a4:5e:60:12:34:58"]
    assert [(f.rssi, f.channel, f.device_ts) for f in frames] == [
        (-67, 6, 123456.0),
        (-90, 11, 123457.0),
        (-40, None, 123458.5),
    ]
    assert frames[0].details["type"] == "probe"
    assert all(f.identifier.kind is IdKind.MAC for f in frames)
    assert decoder.stats().rejected == {}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"1,a4:5e:60:12:34:56,-67", "field_count"),
        (b"x,a4:5e:60:12:34:56,-67,6", "bad_ts"),
        (b"1,a4:5e:60:12:34,-67,6", "bad_mac"),
        (b"1,a4:5e-60:12:34:56,-67,6", "bad_mac"),
        (b"1,00:00:00:00:00:00,-67,6", "bad_mac"),
        (b"1,01:00:5e:00:00:fb,-67,6", "multicast_mac"),
        (b"1,a4:5e:60:12:34:56,12,6", "bad_rssi"),
        (b"1,a4:5e:60:12:34:56,-67,200", "bad_channel"),
        (b"1,a4:5e:60:12:34:56,-67,6,a b", "bad_type"),
        (b"1,a4:5e:60:12:34:56,-67,6\xff", "encoding"),
    ],
)
def test_sniffer_csv_rejects(line: bytes, reason: str) -> None:
    decoder = make_decoder("sniffer-csv")
    assert ids(decoder.feed(line + b"\n9,a4:5e:60:00:00:01,-50,1\n")) == ["a4:5e:60:00:00:01"]
    assert decoder.stats().rejected == {reason: 1}


def test_sniffer_json_records_ignore_extra_keys() -> None:
    decoder = make_decoder("sniffer-json")
    stream = (
        b'{"ts": 1000, "mac": "A4:5E:60:12:34:56", "rssi": -67, "ch": 6, "type": "probe", "ssid": "home"}\n'
        b'{"mac": "a45e60123457", "rssi": -70, "channel": 1}\n'
        b'{"mac": "a4-5e-60-12-34-58", "rssi": -71, "ch": null}\n'
    )
    frames = decoder.feed(stream)
    assert ids(frames) == ["a4:5e:60:12:34:56", "a4:5e:60:12:34:57", "a4:5e:60:12:34:58"]
    assert [(f.rssi, f.channel, f.device_ts) for f in frames] == [(-67, 6, 1000.0), (-70, 1, None), (-71, None, None)]
    assert "ssid" not in frames[0].details


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"mac": "a4:5e:60:12:34:56"}', "missing_field"),
        (b'{"rssi": -5}', "missing_field"),
        (b'{"mac": 5, "rssi": -5}', "bad_mac"),
        (b'{"mac": "a4:5e:60:12:34:56", "rssi": true}', "bad_rssi"),
        (b'{"mac": "a4:5e:60:12:34:56", "rssi": -5.5}', "bad_rssi"),
        (b'{"mac": "a4:5e:60:12:34:56", "rssi": -5, "ch": "6"}', "bad_channel"),
        (b'{"mac": "a4:5e:60:12:34:56", "rssi": -5, "ts": -1}', "bad_ts"),
        (b'{"mac": "a4:5e:60:12:34:56", "rssi": -5, "ts": NaN}', "bad_ts"),
        (b'{"mac": "a4:5e:60:12:34:56", "rssi": -5, "ts": 1' + b"0" * 400 + b"}", "bad_ts"),
        (b'{"mac": "a4:5e:60:12:34:56", "rssi": -5, "type": 3}', "bad_type"),
        (b'{"mac": "a4:5e:60:12:34:56", "rssi": -5', "bad_json"),
        (b"{" * 300, "bad_json"),
        (b"I (312) wifi: mode : sta", "unrecognised"),
        (b'{"mac": "a4:5e:60:12:34:56", "rssi": -5}\xff', "encoding"),
    ],
)
def test_sniffer_json_rejects(line: bytes, reason: str) -> None:
    decoder = make_decoder("sniffer-json")
    frames = decoder.feed(line + b'\n{"mac": "a4:5e:60:00:00:01", "rssi": -50}\n')
    assert ids(frames) == ["a4:5e:60:00:00:01"]
    assert decoder.stats().rejected == {reason: 1}


# -- bounds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_garbage_without_delimiters_keeps_memory_bounded(name: str) -> None:
    decoder = make_decoder(name)
    chunk = bytes(b for b in range(4, 256) if b not in b"\r\n") * 16  # no CR, LF or STX
    for _ in range(256):  # ~1 MB
        assert decoder.feed(chunk) == []
        assert decoder.buffered <= 512
    stats = decoder.stats()
    assert stats.accepted == 0
    assert stats.discarded_bytes >= 1_000_000 - 512
    # ... and the decoder is still in working order afterwards.
    good = {
        "rdm6300": encode(bytes.fromhex("0102030405")),
        "wiegand": b"\n" + encode_bits(0x010203, 26).encode() + b"\n",
        "mifare": b"\n04A32B1C\n",
        "sniffer-csv": b"\n1,a4:5e:60:00:00:01,-50,1\n",
        "sniffer-json": b'\n{"mac": "a4:5e:60:00:00:01", "rssi": -50}\n',
    }[name]
    assert len(decoder.feed(good)) == 1
    if name != "rdm6300":
        assert decoder.stats().rejected == {"overlong": 1}


def test_stx_storm_keeps_rdm6300_bounded() -> None:
    decoder = make_decoder("rdm6300")
    decoder.feed(bytes([STX]) * 100_000)
    assert decoder.buffered == 0
    assert decoder.stats().rejected["truncated"] == 99_999
