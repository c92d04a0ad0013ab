"""Commissioning checks of the machine itself: clock, TLS certificates, storage, systemd units.

Pure functions over what they are given (a server address, a certificate, a path) returning
(status, detail, hint), so `edge.app.commission` only composes them.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from cryptography import x509

from edge.compat import UTC

Status = Literal["ok", "warn", "fail", "skip"]
Outcome = tuple[Status, str, str]
"""(status, detail, hint)."""

NTP_EPOCH = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
MAX_OFFSET_S = 1.0
CERT_WARN_DAYS = 30
DISK_WARN_FRACTION = 0.20
DISK_FAIL_FRACTION = 0.05


# -- time -----------------------------------------------------------------------------------------
def sntp_offset(host: str, port: int = 123, timeout_s: float = 2.0) -> float:
    """Clock offset (server − local, seconds) from one SNTP exchange (RFC 4330); raises OSError."""
    packet = bytearray(48)
    packet[0] = (0 << 6) | (4 << 3) | 3  # LI 0, version 4, mode 3 (client)
    t1 = time.time()
    secs = int(t1) + NTP_EPOCH
    struct.pack_into("!II", packet, 40, secs, int((t1 % 1) * 2**32))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        s.sendto(bytes(packet), (host, port))
        data, _ = s.recvfrom(512)
    t4 = time.time()
    if len(data) < 48:
        raise OSError(f"short SNTP answer from {host}")

    def stamp(off: int) -> float:
        sec, frac = struct.unpack_from("!II", data, off)
        return float(sec - NTP_EPOCH) + float(frac) / 2**32

    t2, t3 = stamp(32), stamp(40)
    if t3 == 0.0 - NTP_EPOCH:
        raise OSError(f"{host} sent no transmit time (not synchronised?)")
    return ((t2 - t1) + (t3 - t4)) / 2.0


def check_time(servers: Sequence[str], *, run: Callable[[list[str]], str] | None = None) -> Outcome:
    """Offset to the configured NTP servers under 1 s; without servers, ask systemd whether NTP synced."""
    errors = []
    for server in servers:
        host, _, port = server.partition(":") if server.count(":") == 1 else (server, "", "")
        try:
            offset = sntp_offset(host, int(port or 123))
        except (OSError, ValueError) as exc:
            errors.append(f"{server}: {exc}")
            continue
        if abs(offset) < MAX_OFFSET_S:
            return "ok", f"offset {offset * 1000:+.0f} ms to {server}", ""
        return ("fail", f"clock is {offset:+.1f} s off {server}",
                "enable time sync (systemd-timesyncd or chrony) against the district's NTP server; "
                "events and fusion windows depend on the clock")
    if servers:
        return "fail", "no NTP server answered: " + "; ".join(errors), \
            "check the NTP servers in commission.ntp_servers and that UDP 123 is open"
    runner = run or _run_text
    try:
        synced = runner(["timedatectl", "show", "--property=NTPSynchronized", "--value"]).strip()
    except (OSError, subprocess.SubprocessError):
        return "skip", "no NTP server configured and timedatectl is unavailable", \
            "list the district's NTP servers in commission.ntp_servers"
    if synced == "yes":
        return "ok", "systemd reports the clock NTP-synchronised", ""
    return "warn", f"systemd reports NTPSynchronized={synced or 'unknown'}", \
        "enable systemd-timesyncd or chrony, or list NTP servers in commission.ntp_servers"


def _run_text(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    if proc.returncode != 0:
        raise subprocess.SubprocessError(proc.stderr.strip() or f"{cmd[0]} exited {proc.returncode}")
    return proc.stdout


# -- TLS ------------------------------------------------------------------------------------------
def days_left(cert: x509.Certificate, now: dt.datetime | None = None) -> float:
    """Days until the certificate's notAfter."""
    moment = now or dt.datetime.now(UTC)
    return (cert.not_valid_after_utc - moment).total_seconds() / 86400.0


def check_tls(host: str, port: int, *, ca_file: Path | None, cert_file: Path | None, key_file: Path | None,
              timeout_s: float = 5.0) -> Outcome:
    """The broker's chain verifies against the configured CA, and no certificate expires within 30 days."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file is not None:
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as exc:
            return "fail", f"cannot load the client certificate {cert_file}: {exc}", \
                "check tls.cert_file and tls.key_file (PEM, key matching the certificate)"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        return "fail", f"{host}:{port}: certificate does not verify: {exc.verify_message}", \
            "install the district CA as tls.ca_file, and check the broker's certificate names this host"
    except (OSError, ssl.SSLError) as exc:
        return "fail", f"{host}:{port}: TLS handshake failed: {exc}", "check mqtt.port is the broker's TLS port"
    if der is None:
        return "fail", f"{host}:{port} sent no certificate", "check the broker's TLS listener"
    certs = [("broker", x509.load_der_x509_certificate(der))]
    if cert_file is not None:
        certs.append(("client", x509.load_pem_x509_certificate(cert_file.read_bytes())))
    worst = min((days_left(c), name) for name, c in certs)
    detail = ", ".join(f"{name} certificate expires in {days_left(c):.0f} days" for name, c in certs)
    if worst[0] < 0:
        return "fail", detail, f"the {worst[1]} certificate has expired: renew it"
    if worst[0] < CERT_WARN_DAYS:
        return "warn", detail, f"renew the {worst[1]} certificate before it expires"
    return "ok", f"chain verifies; {detail}", ""


# -- storage --------------------------------------------------------------------------------------
def classify_free(free: int, total: int) -> Status:
    """fail under 5 % free, warn under 20 %."""
    frac = free / total if total else 0.0
    return "fail" if frac < DISK_FAIL_FRACTION else "warn" if frac < DISK_WARN_FRACTION else "ok"


def check_storage(path: Path, quota_bytes: int) -> Outcome:
    """Free space in the data directory's file system, and room for the outbox quota."""
    usage = shutil.disk_usage(path)
    status = classify_free(usage.free, usage.total)
    detail = f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB ({usage.free / usage.total:.0%}) " \
             f"in {path}"
    if usage.free < quota_bytes:
        return "fail", detail + f", less than the outbox quota ({quota_bytes / 2**20:.0f} MiB)", \
            "free space or lower outbox.max_mb"
    if status != "ok":
        return status, detail, "free space on the data partition (old logs, images) or move gateway.data_dir"
    return "ok", detail, ""


# -- systemd --------------------------------------------------------------------------------------
def parse_unit(text: str) -> dict[str, str]:
    """`systemctl show` KEY=VALUE lines as a dict."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def check_units(units: Sequence[str], *, run: Callable[[list[str]], str] | None = None,
                systemd_dir: Path = Path("/run/systemd/system")) -> Outcome:
    """Every unit active, with a watchdog set."""
    if not systemd_dir.is_dir():
        return "skip", "systemd is not running on this machine", "run the daemons as systemd units in production"
    runner = run or _run_text
    bad, good = [], []
    for unit in units:
        try:
            props = parse_unit(runner(["systemctl", "show", unit, "--property=ActiveState,SubState,WatchdogUSec,"
                                       "LoadState"]))
        except (OSError, subprocess.SubprocessError) as exc:
            bad.append(f"{unit}: {exc}")
            continue
        if props.get("LoadState") != "loaded":
            bad.append(f"{unit} is not installed")
        elif props.get("ActiveState") != "active":
            bad.append(f"{unit} is {props.get('ActiveState')}/{props.get('SubState')}")
        elif props.get("WatchdogUSec", "0") in ("0", "infinity", ""):
            bad.append(f"{unit} runs without a watchdog")
        else:
            good.append(unit)
    if bad:
        return "fail", "; ".join(bad), "sudo cp systemd/*.service /etc/systemd/system && sudo systemctl " \
            "daemon-reload && sudo systemctl enable --now " + " ".join(units)
    return "ok", f"{', '.join(good)} active with a watchdog", ""
