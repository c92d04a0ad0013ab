"""`edgegw serial ...`: installer tools to list formats and decode captured or live serial streams.

These tools print raw card numbers and MACs on purpose: they run locally, for the installer
wiring a reader, and nothing they print is logged or published.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO

from pydantic import ValidationError

from drivers.serial.base import DecodedFrame, DecodeStats
from drivers.serial.config import SerialSensorConfig
from drivers.serial.registry import FORMATS, make_decoder
from edge.configbase import BackoffConfig
from edge.errors import ConfigError

_CHUNK = 4096


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `serial` command group."""
    group = subparsers.add_parser("serial", help="serial card readers and MAC sniffers")
    sub = group.add_subparsers(dest="serial_command", required=True)

    formats = sub.add_parser("formats", help="list the serial formats")
    formats.set_defaults(func=_formats)

    decode = sub.add_parser("decode", help="decode a captured byte stream (a file or - for stdin)")
    decode.add_argument("--format", required=True, choices=sorted(FORMATS), help="serial format")
    decode.add_argument("file", help="capture file, or - for standard input")
    decode.set_defaults(func=_decode)

    sniff = sub.add_parser("sniff", help="decode a live port and print what the reader sends")
    sniff.add_argument("--port", required=True, help="device (e.g. /dev/ttyUSB0) or pyserial URL")
    sniff.add_argument("--format", required=True, choices=sorted(FORMATS), help="serial format")
    sniff.add_argument("--baud", type=int, default=None, help="line speed (default: the format's usual)")
    sniff.add_argument("--bytesize", type=int, default=8, choices=(5, 6, 7, 8))
    sniff.add_argument("--parity", default="none", choices=("none", "even", "odd", "mark", "space"))
    sniff.add_argument("--stopbits", type=float, default=1, choices=(1, 1.5, 2))
    sniff.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    sniff.set_defaults(func=_sniff)


def frame_json(frame: DecodedFrame) -> str:
    """One output line for a decoded frame: format, kind, id, then what else the sensor said."""
    record: dict[str, object] = {
        "format": frame.format,
        "kind": frame.identifier.kind.value,
        "id": frame.identifier.value,
    }
    for key, value in (("rssi", frame.rssi), ("channel", frame.channel), ("device_ts", frame.device_ts)):
        if value is not None:
            record[key] = value
    for key, detail in frame.details.items():
        record.setdefault(key, detail)
    return json.dumps(record, separators=(",", ":"))


def _summary_json(fmt: str, stats: DecodeStats, extra: Mapping[str, object] | None = None) -> str:
    record: dict[str, object] = {
        "summary": True,
        "format": fmt,
        "accepted": stats.accepted,
        "rejected": dict(sorted(stats.rejected.items())),
        "rejected_total": stats.rejected_total,
        "discarded_bytes": stats.discarded_bytes,
    }
    record.update(extra or {})
    return json.dumps(record, separators=(",", ":"))


def _formats(args: argparse.Namespace) -> int:
    for info in FORMATS.values():
        print(f"{info.name:<14} {info.id_kind.value:<5} {info.default_baud:>6} baud  {info.description}")
    return 0


def _decode(args: argparse.Namespace) -> int:
    decoder = make_decoder(args.format)
    out = sys.stdout
    try:
        if args.file == "-":
            _decode_stream(decoder.feed, sys.stdin.buffer, out)
        else:
            with open(args.file, "rb") as stream:
                _decode_stream(decoder.feed, stream, out)
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    print(_summary_json(args.format, decoder.stats()), file=out, flush=True)
    return 0


def _decode_stream(feed: Callable[[bytes], list[DecodedFrame]], stream: IO[bytes], out: IO[str]) -> None:
    while chunk := stream.read(_CHUNK):
        for frame in feed(chunk):
            print(frame_json(frame), file=out)


def _sniff(args: argparse.Namespace) -> int:
    from drivers.serial.transport import PortStatus, SerialSensor  # pyserial: loaded for `sniff` only

    try:
        config = SerialSensorConfig(
            id="sniff",
            port=args.port,
            format=args.format,
            baud=args.baud,
            bytesize=args.bytesize,
            parity=args.parity,
            stopbits=args.stopbits,
            backoff=BackoffConfig(initial_s=0.5, max_s=5.0),
        )
    except ValidationError as exc:
        raise ConfigError(f"serial sniff: {exc.errors()[0]['msg']}") from exc

    def show(frame: DecodedFrame) -> None:
        print(frame_json(frame), flush=True)

    sensor = SerialSensor(config, lambda _reading: None, frame_sink=show)
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    last: PortStatus | None = None
    sensor.start()
    try:
        while deadline is None or time.monotonic() < deadline:
            status = sensor.status()
            if last is None or status.connected != last.connected:
                state = "connected" if status.connected else f"waiting ({status.last_error or 'opening'})"
                print(f"edgegw: {config.port}: {state}", file=sys.stderr, flush=True)
            last = status
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        sensor.stop()
    status = sensor.status()
    stats = DecodeStats(status.frames_ok, status.frames_rejected, status.discarded_bytes)
    print(_summary_json(args.format, stats, {"bytes": status.bytes_read, "connects": status.connects}), flush=True)
    return 0
