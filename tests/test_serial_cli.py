"""`edgegw serial formats|decode|sniff`: what an installer sees."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from drivers.serial.rdm6300 import encode
from drivers.serial.registry import FORMATS
from drivers.serial.wiegand import encode_bits
from edge.cli import build_parser, main


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_serial_group_is_registered() -> None:
    args = build_parser().parse_args(["serial", "decode", "--format", "rdm6300", "-"])
    assert args.format == "rdm6300" and args.file == "-"


def test_formats_lists_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serial", "formats"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == list(FORMATS)
    assert "sniffer-json" in out and "115200" in out


def test_decode_file_prints_readings_then_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "door.bin"
    capture.write_bytes(
        b"\x00noise"
        + encode(bytes.fromhex("62E3086CED"))
        + b"\x020A1B2C3D4E00\x03"  # bad checksum
        + b"\x020A1B"  # cut short by the next frame
        + encode(bytes.fromhex("0A1B2C3D4E"), crlf=True)
    )
    assert main(["serial", "decode", "--format", "rdm6300", str(capture)]) == 0
    *readings, summary = lines(capsys.readouterr().out)
    assert readings == [
        {"format": "rdm6300", "kind": "card", "id": "62E3086CED", "decimal": f"{0xE3086CED:010d}"},
        {"format": "rdm6300", "kind": "card", "id": "0A1B2C3D4E", "decimal": f"{0x1B2C3D4E:010d}"},
    ]
    assert summary == {
        "summary": True,
        "format": "rdm6300",
        "accepted": 2,
        "rejected": {"checksum": 1, "truncated": 1},
        "rejected_total": 2,
        "discarded_bytes": 6,
    }


def test_decode_stdin_wiegand(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bits = encode_bits((12 << 16) | 3456, 26)
    data = f"Ready...\r\nBits=26\r\nRAW Binary={bits}\r\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["serial", "decode", "--format", "wiegand", "-"]) == 0
    reading, summary = lines(capsys.readouterr().out)
    assert reading == {"format": "wiegand", "kind": "card", "id": "0C0D80", "bits": 26, "facility": 12, "number": 3456}
    assert summary["accepted"] == 1 and summary["rejected"] == {"unrecognised": 1}


def test_decode_sniffer_prints_rssi_and_channel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "sniff.csv"
    capture.write_bytes(b"ts,mac,rssi,channel\n1500,A4-5E-60-12-34-56,-61,11,probe\n1501,zz,-1,1\n")
    assert main(["serial", "decode", "--format", "sniffer-csv", str(capture)]) == 0
    reading, summary = lines(capsys.readouterr().out)
    assert reading == {
        "format": "sniffer-csv",
        "kind": "mac",
        "id": "a4:5e:60:12:34:56",
        "rssi": -61,
        "channel": 11,
        "device_ts": 1500.0,
        "type": "probe",
    }
    assert summary["rejected"] == {"bad_mac": 1}


def test_decode_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serial", "decode", "--format", "mifare", str(tmp_path / "nope.bin")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_decode_unknown_format_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serial", "decode", "--format", "em4100", "-"])
    assert "invalid choice" in capsys.readouterr().err


def test_sniff_live_on_a_pty(capsys: pytest.CaptureFixture[str]) -> None:
    master, slave = os.openpty()
    try:

        def reader_sends() -> None:
            time.sleep(0.4)  # after the port is open and in raw mode
            os.write(master, b"Card UID: 04 A3 2B 1C\r\nhello\r\n")

        writer = threading.Thread(target=reader_sends)
        writer.start()
        rc = main(["serial", "sniff", "--port", os.ttyname(slave), "--format", "mifare", "--seconds", "1.2"])
        writer.join()
    finally:
        os.close(master)
        os.close(slave)
    assert rc == 0
    captured = capsys.readouterr()
    reading, summary = lines(captured.out)
    assert reading == {"format": "mifare", "kind": "card", "id": "04A32B1C", "uid_bytes": 4}
    assert summary["accepted"] == 1 and summary["rejected"] == {"unrecognised": 1}
    assert summary["connects"] == 1 and summary["bytes"] == 30
    assert "connected" in captured.err


def test_sniff_bad_port_settings_are_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serial", "sniff", "--port", "/dev/null", "--format", "mifare", "--baud", "0"]) == 2
    assert "configuration error" in capsys.readouterr().err
