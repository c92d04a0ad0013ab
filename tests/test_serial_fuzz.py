"""Property-based fuzzing of every serial decoder.

Streams are built from items: valid frames (whose identifier we know), invalid frames (bad
checksum, bad parity, wrong length, corrupt fields; each ends in a way that leaves the decoder
hunting) and garbage that contains no frame delimiter (no STX for rdm6300; for line formats no
CR/LF, always a byte that no valid line contains, then a line end). Recovery is then well defined:
the decoder must return exactly the valid frames, in order, and count one reject per invalid
item (and per garbage line). Streams are fed in random chunk sizes.

The default suite runs a modest number of examples; `-m slow` runs 100 000 per decoder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.serial.base import DecodedFrame, SerialDecoder
from drivers.serial.rdm6300 import ETX, STX, checksum
from drivers.serial.registry import FORMATS, make_decoder
from drivers.serial.wiegand import encode_bits

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(
    max_examples=100_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BUFFER_BOUND = 512


@dataclass(frozen=True)
class Item:
    """A piece of a stream: its bytes, and what the decoder must make of it."""

    data: bytes
    expected: tuple[str, int | None, int | None] | None = None  # (id, rssi, channel) of a valid frame
    rejects: int = 0


EOL = st.sampled_from([b"\n", b"\r\n", b"\r"])
HEXDIGITS = b"0123456789ABCDEFabcdef"


def flip_case(text: str, mask: int) -> str:
    """Upper-case `text`, lowering the characters whose bit is set in `mask`."""
    return "".join(c.lower() if mask >> i & 1 else c.upper() for i, c in enumerate(text))


CASE_MASK = st.integers(0, 2**20 - 1)


# -- rdm6300 ---------------------------------------------------------------------------------------


@st.composite
def rdm_valid(draw: st.DrawFn) -> Item:
    tag = draw(st.binary(min_size=5, max_size=5))
    body = tag.hex().upper() + f"{checksum(tag):02X}"
    body = flip_case(body, draw(CASE_MASK))
    crlf = b"\r\n" if draw(st.booleans()) else b""
    return Item(bytes([STX]) + body.encode() + crlf + bytes([ETX]), (tag.hex().upper(), None, None))


@st.composite
def rdm_invalid(draw: st.DrawFn) -> Item:
    tag = draw(st.binary(min_size=5, max_size=5))
    kind = draw(st.sampled_from(["checksum", "truncated", "bad_char", "overlong"]))
    if kind == "checksum":
        bad = draw(st.integers(0, 255).filter(lambda c: c != checksum(tag)))
        body = (tag.hex() + f"{bad:02x}").encode()
        return Item(bytes([STX]) + body + bytes([ETX]), rejects=1)
    if kind == "truncated":
        body = draw(st.binary(max_size=11).map(lambda b: bytes(HEXDIGITS[x % 22] for x in b)))
        return Item(bytes([STX]) + body + bytes([ETX]), rejects=1)
    if kind == "bad_char":
        prefix = draw(st.binary(max_size=11).map(lambda b: bytes(HEXDIGITS[x % 22] for x in b)))
        bad_byte = draw(st.sampled_from([b"G", b"z", b" ", b"\x00", b"\xff", b"\r", b"\n"]))
        return Item(bytes([STX]) + prefix + bad_byte, rejects=1)
    body = draw(st.binary(min_size=15, max_size=40).map(lambda b: bytes(HEXDIGITS[x % 22] for x in b)))
    return Item(bytes([STX]) + body + bytes([ETX]), rejects=1)


rdm_garbage = st.binary(max_size=200).map(lambda b: Item(b.replace(bytes([STX]), b"")))


# -- wiegand ---------------------------------------------------------------------------------------


@st.composite
def wiegand_valid(draw: st.DrawFn) -> Item:
    nbits = draw(st.sampled_from([26, 34]))
    data = draw(st.integers(0, 2 ** (nbits - 2) - 1))
    bits = encode_bits(data, nbits)
    eol = draw(EOL)
    if draw(st.booleans()):
        line = f"Bits={nbits}".encode() + eol + f"RAW Binary={bits}".encode() + eol
    else:
        line = bits.encode() + eol
    return Item(line, (f"{data:0{(nbits - 2) // 4}X}", None, None))


@st.composite
def wiegand_invalid(draw: st.DrawFn) -> Item:
    nbits = draw(st.sampled_from([26, 34]))
    bits = list(encode_bits(draw(st.integers(0, 2 ** (nbits - 2) - 1)), nbits))
    eol = draw(EOL)
    kind = draw(st.sampled_from(["flip", "length", "mismatch", "orphan"]))
    if kind == "flip":
        for pos in draw(st.lists(st.integers(0, nbits - 1), min_size=1, max_size=nbits, unique=True)):
            bits[pos] = "1" if bits[pos] == "0" else "0"
        text = "".join(bits)
        from drivers.serial.wiegand import parity_ok

        if parity_ok(text):  # an even number of flips in each half: make it fail again
            bits[0] = "1" if bits[0] == "0" else "0"
            text = "".join(bits)
        if draw(st.booleans()):
            return Item(f"Bits={nbits}".encode() + eol + f"RAW Binary={text}".encode() + eol, rejects=1)
        return Item(text.encode() + eol, rejects=1)
    if kind == "length":
        n = draw(st.integers(1, 80).filter(lambda k: k not in (26, 34)))
        text = "".join(draw(st.lists(st.sampled_from("01"), min_size=n, max_size=n)))
        return Item(text.encode() + eol, rejects=1)
    if kind == "mismatch":
        header = draw(st.integers(0, 999).filter(lambda k: k != nbits))
        return Item(f"Bits={header}".encode() + eol + f"RAW Binary={''.join(bits)}".encode() + eol, rejects=1)
    return Item(f"Bits={nbits}".encode() + eol, rejects=1)


# -- mifare ----------------------------------------------------------------------------------------


@st.composite
def render_uid(draw: st.DrawFn, uid: bytes) -> bytes:
    text = uid.hex()
    style = draw(st.sampled_from(["bare", "0x", "groups"]))
    if style == "bare":
        out = text
    elif style == "0x":
        out = "0x" + text
    else:
        sep = draw(st.sampled_from([" ", ":", "-"]))
        prefix = "0x" if draw(st.booleans()) else ""
        out = sep.join(prefix + f"{b:02x}" for b in uid)
    out = flip_case(out, draw(CASE_MASK)).replace("0X", "0x")
    label = draw(st.sampled_from(["", "Card UID: ", "UID Value: ", "  UID:"]))
    return (label + out).encode() + draw(EOL)


@st.composite
def mifare_valid(draw: st.DrawFn) -> Item:
    n = draw(st.sampled_from([4, 7, 10]))
    uid = draw(st.binary(min_size=n, max_size=n).filter(any))
    return Item(draw(render_uid(uid)), (uid.hex().upper(), None, None))


@st.composite
def mifare_invalid(draw: st.DrawFn) -> Item:
    kind = draw(st.sampled_from(["length", "zero", "odd"]))
    if kind == "length":
        n = draw(st.integers(1, 16).filter(lambda k: k not in (4, 7, 10)))
        return Item(draw(render_uid(draw(st.binary(min_size=n, max_size=n)))), rejects=1)
    if kind == "zero":
        n = draw(st.sampled_from([4, 7, 10]))
        return Item(draw(render_uid(bytes(n))), rejects=1)
    digits = draw(st.sampled_from([7, 9, 13, 15, 19, 21]))
    return Item(b"1" * digits + draw(EOL), rejects=1)


# -- sniffers --------------------------------------------------------------------------------------


unicast = st.binary(min_size=6, max_size=6).filter(lambda m: not m[0] & 1 and any(m))
RSSI = st.integers(-128, 0)
CHANNEL = st.one_of(st.none(), st.integers(0, 196))
TYPES = st.one_of(st.none(), st.sampled_from(["probe", "wifi", "ble", "beacon_2"]))


@st.composite
def render_mac(draw: st.DrawFn, mac: bytes) -> str:
    sep = draw(st.sampled_from([":", "-", ""]))
    text = sep.join(f"{b:02x}" for b in mac)
    return flip_case(text, draw(CASE_MASK))


def canonical(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass(frozen=True)
class Record:
    mac: bytes
    mac_text: str
    rssi: int
    channel: int | None
    ts: int
    kind: str | None


@st.composite
def records(draw: st.DrawFn) -> Record:
    mac = draw(unicast)
    return Record(mac, draw(render_mac(mac)), draw(RSSI), draw(CHANNEL), draw(st.integers(0, 2**40)), draw(TYPES))


def csv_line(r: Record, **override: object) -> str:
    fields = {
        "ts": str(r.ts),
        "mac": r.mac_text,
        "rssi": str(r.rssi),
        "ch": "" if r.channel is None else str(r.channel),
    }
    fields.update({k: str(v) for k, v in override.items()})
    parts = [fields["ts"], fields["mac"], fields["rssi"], fields["ch"]]
    if r.kind is not None:
        parts.append(r.kind)
    return ",".join(parts)


BAD_FIELDS: list[tuple[str, st.SearchStrategy[object]]] = [
    ("rssi", st.integers(1, 9999) | st.integers(-9999, -129)),
    ("ch", st.integers(197, 9999)),
    ("mac", st.sampled_from(["01:00:5e:00:00:fb", "00:00:00:00:00:00", "a4:5e:60:12:34", "zz:5e:60:12:34:56"])),
    ("ts", st.sampled_from(["-1", "x", "1e5"])),
]


@st.composite
def csv_valid(draw: st.DrawFn) -> Item:
    r = draw(records())
    return Item(csv_line(r).encode() + draw(EOL), (canonical(r.mac), r.rssi, r.channel))


@st.composite
def csv_invalid(draw: st.DrawFn) -> Item:
    r = draw(records())
    if draw(st.integers(0, 4)) == 0:
        return Item(",".join(csv_line(r).split(",")[:3]).encode() + draw(EOL), rejects=1)
    name, strategy = draw(st.sampled_from(BAD_FIELDS))
    return Item(csv_line(r, **{name: draw(strategy)}).encode() + draw(EOL), rejects=1)


def json_obj(r: Record) -> dict[str, object]:
    obj: dict[str, object] = {"ts": r.ts, "mac": r.mac_text, "rssi": r.rssi}
    if r.channel is not None:
        obj["ch"] = r.channel
    if r.kind is not None:
        obj["type"] = r.kind
    return obj


@st.composite
def json_valid(draw: st.DrawFn) -> Item:
    r = draw(records())
    obj = json_obj(r)
    if draw(st.booleans()):
        obj["ssid"] = draw(st.text(max_size=32))
    line = json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()
    return Item(line + draw(EOL), (canonical(r.mac), r.rssi, r.channel))


@st.composite
def json_invalid(draw: st.DrawFn) -> Item:
    r = draw(records())
    obj = json_obj(r)
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return Item(json.dumps(obj)[:-1].encode() + draw(EOL), rejects=1)  # cut before "}"
    if kind == 1:
        del obj[draw(st.sampled_from(["mac", "rssi"]))]
    elif kind == 2:
        obj["rssi"] = draw(st.sampled_from([True, "-50", -50.5, None]))
    else:
        name, strategy = draw(st.sampled_from(BAD_FIELDS[:3]))
        obj[name] = draw(strategy)
    return Item(json.dumps(obj).encode() + draw(EOL), rejects=1)


@st.composite
def line_garbage(draw: st.DrawFn) -> Item:
    # No line end inside, and a 0xFF that no valid (ASCII or UTF-8) line contains.
    body = draw(st.binary(max_size=700)).replace(b"\r", b"").replace(b"\n", b"")
    pos = draw(st.integers(0, len(body)))
    return Item(body[:pos] + b"\xff" + body[pos:] + draw(EOL), rejects=1)


@dataclass(frozen=True)
class Grammar:
    valid: st.SearchStrategy[Item]
    invalid: st.SearchStrategy[Item]
    garbage: st.SearchStrategy[Item]


GRAMMARS: dict[str, Grammar] = {
    "rdm6300": Grammar(rdm_valid(), rdm_invalid(), rdm_garbage),
    "wiegand": Grammar(wiegand_valid(), wiegand_invalid(), line_garbage()),
    "mifare": Grammar(mifare_valid(), mifare_invalid(), line_garbage()),
    "sniffer-csv": Grammar(csv_valid(), csv_invalid(), line_garbage()),
    "sniffer-json": Grammar(json_valid(), json_invalid(), line_garbage()),
}


def test_every_format_is_fuzzed() -> None:
    assert set(GRAMMARS) == set(FORMATS)


# -- the properties --------------------------------------------------------------------------------


def feed_chunked(decoder: SerialDecoder, data: bytes, sizes: list[int]) -> list[DecodedFrame]:
    out: list[DecodedFrame] = []
    pos, i = 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)] if sizes else len(data)
        out.extend(decoder.feed(data[pos : pos + size]))
        assert decoder.buffered <= BUFFER_BOUND
        pos += size
        i += 1
    return out


def check_interleaved(fmt: str, data: st.DataObject) -> None:
    grammar = GRAMMARS[fmt]
    items = data.draw(st.lists(st.one_of(grammar.valid, grammar.invalid, grammar.garbage), max_size=24))
    sizes = data.draw(st.lists(st.integers(1, 64), max_size=8))
    stream = b"".join(item.data for item in items)
    decoder = make_decoder(fmt)
    frames = feed_chunked(decoder, stream, sizes)
    decoder.reset()  # a header still waiting for its data counts now
    expected = [item.expected for item in items if item.expected is not None]
    assert [(f.identifier.value, f.rssi, f.channel) for f in frames] == expected
    stats = decoder.stats()
    assert stats.accepted == len(expected)
    assert "internal_error" not in stats.rejected
    assert stats.rejected_total == sum(item.rejects for item in items)
    assert all(f.format == fmt for f in frames)


def check_random_bytes(fmt: str, data: st.DataObject) -> None:
    alphabet = [
        bytes([STX]),
        bytes([ETX]),
        b"\r",
        b"\n",
        b"0",
        b"1",
        b"A",
        b"f",
        b":",
        b",",
        b"-",
        b" ",
        b"{",
        b"}",
        b'"mac"',
        b'"rssi"',
        b"Bits=26",
        b"RAW Binary=",
        b"0x",
        b"\xff",
    ]
    stream = data.draw(
        st.one_of(st.binary(max_size=2000), st.lists(st.sampled_from(alphabet), max_size=400).map(b"".join))
    )
    sizes = data.draw(st.lists(st.integers(1, 64), max_size=8))
    chunked, whole = make_decoder(fmt), make_decoder(fmt)
    got = feed_chunked(chunked, stream, sizes)
    assert [f.identifier for f in got] == [f.identifier for f in whole.feed(stream)]
    assert chunked.stats() == whole.stats()
    assert "internal_error" not in chunked.stats().rejected


@pytest.mark.parametrize("fmt", sorted(GRAMMARS))
@FAST
@given(data=st.data())
def test_fuzz_interleaved_frames(fmt: str, data: st.DataObject) -> None:
    check_interleaved(fmt, data)


@pytest.mark.parametrize("fmt", sorted(GRAMMARS))
@FAST
@given(data=st.data())
def test_fuzz_random_bytes(fmt: str, data: st.DataObject) -> None:
    check_random_bytes(fmt, data)


def _slow(check: Callable[[str, st.DataObject], None]) -> Callable[[str], None]:
    def run(fmt: str) -> None:
        SLOW(given(data=st.data())(lambda data: check(fmt, data)))()

    return run


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("fmt", sorted(GRAMMARS))
def test_fuzz_interleaved_frames_1e5(fmt: str) -> None:
    _slow(check_interleaved)(fmt)


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("fmt", sorted(GRAMMARS))
def test_fuzz_random_bytes_1e5(fmt: str) -> None:
    _slow(check_random_bytes)(fmt)
