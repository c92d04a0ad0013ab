"""Wi-Fi/BLE probe sniffers (ESP32-style firmware): one record per line, CSV or JSON.

`sniffer-csv` (ASCII): ``TS,MAC,RSSI,CH[,TYPE]``, e.g. ``123456,A4:5E:60:12:34:56,-67,6,probe``.
`sniffer-json` (UTF-8): one object per line, e.g.
``{"ts": 123456, "mac": "a4:5e:60:12:34:56", "rssi": -67, "ch": 6, "type": "probe"}``.

Fields (both formats):

- ``ts``: the sensor's own timestamp, a non-negative number (ESP32 firmware usually prints
  milliseconds since boot). Kept for the installer CLI only; readings are stamped with host time.
- ``mac``: the transmitter address, six hex octets separated by ':' or '-', or twelve bare hex
  digits, any case. Multicast and all-zero addresses are rejected.
- ``rssi``: integer dBm in [-128, 0].
- ``ch`` (JSON also ``channel``): integer channel in [0, 196]; empty (CSV) or absent/null (JSON)
  when unknown (e.g. BLE scanners that do not report it).
- ``type``: optional token ([A-Za-z0-9_-], up to 16 characters), e.g. ``probe``, ``wifi``, ``ble``.

CSV lines starting with ``#`` and a header line whose first field is ``ts`` or ``timestamp`` are
skipped. JSON keys other than these are ignored and never forwarded (an ``ssid`` stays here).
"""

from __future__ import annotations

import json
import math
import re
from typing import ClassVar

from drivers.serial.base import DecodedFrame, FrameRejected, LineDecoder, ascii_text
from drivers.serial.ident import canonical_mac
from edge.types import IdKind, RawIdentifier

RSSI_RANGE = (-128, 0)
CHANNEL_RANGE = (0, 196)
_TS = re.compile(r"\d{1,15}(?:\.\d{1,9})?")
_INT = re.compile(r"[+-]?\d{1,4}")
_TYPE = re.compile(r"[A-Za-z0-9_-]{1,16}")
# BLE random addresses (static or private) do not set the MAC's locally-administered bit; firmware
# that knows the address type reports it with one of these TYPE tokens, and such addresses are
# then only counted, like randomised Wi-Fi MACs.
RANDOM_ADDRESS_TYPES = frozenset({"ble-random", "ble_random", "random"})


def _rssi(value: int) -> int:
    if not RSSI_RANGE[0] <= value <= RSSI_RANGE[1]:
        raise FrameRejected("bad_rssi")
    return value


def _channel(value: int) -> int:
    if not CHANNEL_RANGE[0] <= value <= CHANNEL_RANGE[1]:
        raise FrameRejected("bad_channel")
    return value


def _frame(fmt: str, mac: str, rssi: int, *, channel: int | None, ts: float | None, kind: str | None) -> DecodedFrame:
    return DecodedFrame(
        format=fmt,
        identifier=RawIdentifier(IdKind.MAC, mac),
        rssi=rssi,
        channel=channel,
        device_ts=ts,
        details={"type": kind} if kind is not None else {},
        address_random=kind is not None and kind.lower() in RANDOM_ADDRESS_TYPES,
    )


class SnifferCsvDecoder(LineDecoder):
    """Decoder for ``TS,MAC,RSSI,CH[,TYPE]`` lines."""

    format: ClassVar[str] = "sniffer-csv"

    def _decode_line(self, line: bytes) -> DecodedFrame | None:
        text = ascii_text(line)
        if text.startswith("#"):
            return None
        fields = [part.strip() for part in text.split(",")]
        if fields[0].lower() in ("ts", "timestamp"):
            return None
        if len(fields) not in (4, 5):
            raise FrameRejected("field_count")
        if not _TS.fullmatch(fields[0]):
            raise FrameRejected("bad_ts")
        mac = canonical_mac(fields[1])
        if not _INT.fullmatch(fields[2]):
            raise FrameRejected("bad_rssi")
        rssi = _rssi(int(fields[2]))
        channel: int | None = None
        if fields[3]:
            if not _INT.fullmatch(fields[3]):
                raise FrameRejected("bad_channel")
            channel = _channel(int(fields[3]))
        kind: str | None = None
        if len(fields) == 5:
            if not _TYPE.fullmatch(fields[4]):
                raise FrameRejected("bad_type")
            kind = fields[4]
        return _frame(self.format, mac, rssi, channel=channel, ts=float(fields[0]), kind=kind)


def _json_int(value: object, reason: str) -> int:
    # bool is an int in Python but not in the format.
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameRejected(reason)
    return value


class SnifferJsonDecoder(LineDecoder):
    """Decoder for one JSON object per line with mac, rssi and optional ch/channel, ts, type."""

    format: ClassVar[str] = "sniffer-json"
    max_line: ClassVar[int] = 512

    def _decode_line(self, line: bytes) -> DecodedFrame | None:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameRejected("encoding") from None
        if not text.startswith("{"):
            raise FrameRejected("unrecognised")
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            raise FrameRejected("bad_json") from None
        if not isinstance(obj, dict):
            raise FrameRejected("bad_json")
        mac_value = obj.get("mac")
        if mac_value is None or "rssi" not in obj:
            raise FrameRejected("missing_field")
        if not isinstance(mac_value, str):
            raise FrameRejected("bad_mac")
        mac = canonical_mac(mac_value)
        rssi = _rssi(_json_int(obj["rssi"], "bad_rssi"))
        raw_channel = obj["ch"] if "ch" in obj else obj.get("channel")
        channel = None if raw_channel is None else _channel(_json_int(raw_channel, "bad_channel"))
        raw_ts = obj.get("ts")
        ts: float | None = None
        if raw_ts is not None:
            if isinstance(raw_ts, bool) or not isinstance(raw_ts, int | float):
                raise FrameRejected("bad_ts")
            try:
                ts = float(raw_ts)
            except OverflowError:  # an integer beyond float range
                raise FrameRejected("bad_ts") from None
            if not math.isfinite(ts) or ts < 0:
                raise FrameRejected("bad_ts")
        kind = obj.get("type")
        if kind is not None and not (isinstance(kind, str) and _TYPE.fullmatch(kind)):
            raise FrameRejected("bad_type")
        return _frame(self.format, mac, rssi, channel=channel, ts=ts, kind=kind)
