"""The table of serial formats: name → decoder factory. Explicit; nothing is discovered."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from drivers.serial.base import SerialDecoder
from drivers.serial.mifare import MifareDecoder
from drivers.serial.rdm6300 import Rdm6300Decoder
from drivers.serial.sniffer import SnifferCsvDecoder, SnifferJsonDecoder
from drivers.serial.wiegand import WiegandDecoder
from edge.errors import ConfigError
from edge.types import IdKind


@dataclass(frozen=True, slots=True)
class FormatInfo:
    """A serial format: what it reads, its usual line speed and how to build its decoder."""

    name: str
    description: str
    id_kind: IdKind
    default_baud: int
    factory: Callable[[], SerialDecoder]


FORMATS: Mapping[str, FormatInfo] = MappingProxyType(
    {
        info.name: info
        for info in (
            FormatInfo(
                "rdm6300",
                "125 kHz EM4100 readers (RDM6300, ID-12/ID-20): STX, 10 hex data, 2 hex XOR checksum, ETX",
                IdKind.CARD,
                9600,
                Rdm6300Decoder,
            ),
            FormatInfo(
                "wiegand",
                "Wiegand 26/34 raw bit lines from a Wiegand-to-serial converter (WiegandNG raw output)",
                IdKind.CARD,
                9600,
                WiegandDecoder,
            ),
            FormatInfo(
                "mifare",
                "13.56 MHz readers printing the 4/7/10-byte UID as a hex line",
                IdKind.CARD,
                9600,
                MifareDecoder,
            ),
            FormatInfo(
                "sniffer-csv",
                "Wi-Fi/BLE sniffer lines TS,MAC,RSSI,CH[,TYPE]",
                IdKind.MAC,
                115200,
                SnifferCsvDecoder,
            ),
            FormatInfo(
                "sniffer-json",
                'Wi-Fi/BLE sniffer JSON lines {"ts","mac","rssi","ch","type"}',
                IdKind.MAC,
                115200,
                SnifferJsonDecoder,
            ),
        )
    }
)


def format_info(name: str) -> FormatInfo:
    """The format called `name`, or a ConfigError listing the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown serial format {name!r}; known: {', '.join(FORMATS)}") from None


def make_decoder(name: str) -> SerialDecoder:
    """A fresh decoder for the format called `name`."""
    return format_info(name).factory()
