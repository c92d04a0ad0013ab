"""A user per daemon, for real: the shipped sysusers and tmpfiles snippets applied to a scratch root,
then each daemon's code run as its own uid and groups (umask 0077, as the units set it).

What must work: capture and uplink meet at the outbox, capture and query append to one audit chain
(the anchor stays readable to both). What must fail (issue 12's foothold in one daemon): the uplink
reading the audit, the epoch keys or the gallery; capture writing the query daemon's state; the query
daemon reading the gallery. Needs root and systemd-sysusers/systemd-tmpfiles (Debian's systemd).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

SYSTEMD = ROOT / "systemd"


@dataclass
class Layout:
    root: Path
    users: dict[str, tuple[int, int, list[int]]]

    @property
    def state(self) -> Path:
        return self.root / "var" / "lib" / "edgegw"

    python: str
    site: str

    def run(self, user: str, code: str) -> subprocess.CompletedProcess[str]:
        uid, gid, groups = self.users[user]
        env = {"PYTHONPATH": f"{ROOT}:{self.site}", "HOME": "/tmp", "PATH": "/usr/bin"}
        return subprocess.run([self.python, "-c", code, str(self.state)], user=uid, group=gid, extra_groups=groups,
                              umask=0o077, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def _interpreter() -> tuple[str, str] | None:
    """A Python the daemons' uids may run (ours may sit in root's home), and this venv's packages."""
    import sysconfig

    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_dir = sysconfig.get_paths()["purelib"]
    for candidate in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        real = Path(candidate).resolve()
        if real.exists() and all(os.stat(p).st_mode & 0o001 for p in [real, *real.parents]):
            return candidate, site_dir
    return None


@pytest.fixture
def layout() -> Iterator[Layout]:
    if os.geteuid() != 0 or not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")):
        pytest.skip("needs root and systemd-sysusers/systemd-tmpfiles")
    interpreter = _interpreter()
    if interpreter is None:
        pytest.skip(f"no python{sys.version_info.major}.{sys.version_info.minor} that other users may run")
    root = Path(tempfile.mkdtemp(prefix="edgegw-users-", dir="/tmp"))
    try:
        root.chmod(0o755)  # the daemons' uids must reach the state tree inside it
        (root / "etc").mkdir()
        for name in ("passwd", "group", "shadow", "gshadow"):
            if Path("/etc", name).exists():
                shutil.copy(Path("/etc", name), root / "etc" / name)
        for cmd in (["systemd-sysusers", f"--root={root}", str(SYSTEMD / "edgegw.sysusers.conf")],
                    ["systemd-tmpfiles", f"--root={root}", "--create", str(SYSTEMD / "edgegw.tmpfiles.conf")]):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            assert proc.returncode == 0, proc.stderr
        gids = {}
        members: dict[str, list[int]] = {}
        for line in (root / "etc" / "group").read_text().splitlines():
            name, _, gid, users = line.split(":")
            gids[name] = int(gid)
            for u in filter(None, users.split(",")):
                members.setdefault(u, []).append(int(gid))
        users = {}
        for line in (root / "etc" / "passwd").read_text().splitlines():
            name, _, uid, gid, *_ = line.split(":")
            if name.startswith("edgegw-"):
                users[name] = (int(uid), int(gid), members.get(name, []))
        assert set(users) == {"edgegw-capture", "edgegw-uplink", "edgegw-query", "edgegw-console"}
        yield Layout(root, users, *interpreter)
    finally:
        shutil.rmtree(root, ignore_errors=True)


_OUTBOX = "from edge.outbox import Outbox\nob = Outbox(base / 'outbox/outbox.db')\n"
_AUDIT = "from edge.audit import AuditLog\naudit = AuditLog(base / 'audit/audit.db')\n"
_PRELUDE = "import sys\nfrom pathlib import Path\nbase = Path(sys.argv[1])\n"


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _refused(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode != 0 and ("Permission denied" in proc.stderr or "readonly" in proc.stderr
                                     or "unable to open" in proc.stderr), proc.stderr


def test_daemons_meet_only_where_they_must(layout: Layout) -> None:
    # They meet: capture writes the outbox and the audit, uplink drains the outbox, query appends too.
    _ok(layout.run("edgegw-capture", _PRELUDE + _OUTBOX + "ob.put_status('capture', {'ok': 1})\n" + _AUDIT
                   + "audit.append('capture', 'config_change', {'n': 1})\n"))
    out = _ok(layout.run("edgegw-uplink", _PRELUDE + _OUTBOX + "print(ob.get_status()['capture'])\n"
                         "ob.put_status('uplink', {'connected': True})\n"))
    assert "'ok': 1" in out
    out = _ok(layout.run("edgegw-query", _PRELUDE + _AUDIT + "audit.append('police:1', 'query', {'n': 2})\n"
                         "print(audit.verify().ok, audit.head().seq)\n"))
    assert out.split() == ["True", "2"]
    # Everything created on the way (databases, -wal, -shm, the anchor) is group-only, never others'.
    for path in layout.state.rglob("*"):
        mode = path.stat().st_mode
        assert mode & 0o007 == 0 or path == layout.state, (path, oct(mode))
        if path.is_file() and path.parent.name in ("outbox", "audit"):
            assert mode & 0o060 == 0o060, (path, oct(mode))  # the other member can use it
    # A foothold in the uplink (it faces the network) reaches no audit, key, gallery or passage.
    for target in ("audit/audit.db", "keys/epoch-keys.db", "residents/residents.db", "passages/passages.db"):
        _refused(layout.run("edgegw-uplink", _PRELUDE + f"open(base / {target!r}, 'rb').read()\n"))
    # A foothold in capture cannot touch the query daemon's state (rate limits, the audit's case keys).
    _refused(layout.run("edgegw-capture", _PRELUDE + "open(base / 'query/audit-case-keys.db', 'wb')\n"))
    # The query daemon cannot read the resident gallery, nor write the outbox the uplink publishes.
    _refused(layout.run("edgegw-query", _PRELUDE + "open(base / 'residents/residents.db', 'rb').read()\n"))
    _refused(layout.run("edgegw-query", _PRELUDE + "open(base / 'outbox/outbox.db', 'rb').read()\n"))


_WATCH = ("import time\nfrom cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey\n"
          "from edge.privacy.pseudonym import Pseudonymiser\nfrom edge.types import IdKind\n"
          "from edge.watchlist import WatchlistStore, build_watchlist, pseudonym_entries\n"
          "key = Ed25519PrivateKey.from_private_bytes(b's' * 32)\n"
          "store = WatchlistStore(key.public_key(), 'd1', base / 'outbox/watchlists.json')\n")


def test_watch_lists_the_uplink_writes_are_read_by_capture(layout: Layout) -> None:
    # The real sysusers/tmpfiles layout, each side under its own uid and groups with umask 0077.
    offer = ("now = int(time.time())\nstore.offer(build_watchlist(signing_key=key, district='d1', list_id='wl-1', "
             "version=1, case_id='C-1', approver='officer.li', issued_at=now - 10, expires_at=now + 3600, "
             "entries=pseudonym_entries(Pseudonymiser(b'k' * 32), IdKind.CARD, ['A1B2C3D4E5'], now)))\n")
    _ok(layout.run("edgegw-uplink", _PRELUDE + _WATCH + offer))
    out = _ok(layout.run("edgegw-capture", _PRELUDE + _WATCH + "print(sorted(store.status()['lists']))\n"))
    assert out.split() == ["['wl-1']"]
    state = layout.state / "outbox" / "watchlists.json"
    assert state.stat().st_mode & 0o777 == 0o660 and state.stat().st_uid == layout.users["edgegw-uplink"][0]


_MAIN_CONFIG = """[gateway]
district = "d1"
community = "c1"
gateway = "g1"
data_dir = "/var/lib/edgegw"

[[cameras]]
id = "gate1"
kind = "fake"
"""
_DRAW = ("from edge.app.config_edits import with_camera_owned, with_gate_line, write_atomically\n"
         "from edge.app.drawing import drawing_path\n"
         "cfg = base.parents[2] / 'etc/edgegw/gateway.toml'\n"
         "dropin = drawing_path(cfg)\n")


def test_the_console_writes_its_drop_in_and_reaches_no_other_daemons_keys(layout: Layout) -> None:
    # The installer's files as root puts them there: gateway.toml root's, world-readable like /etc.
    etc = layout.root / "etc" / "edgegw"
    (etc / "gateway.toml").write_text(_MAIN_CONFIG)
    (etc / "gateway.toml").chmod(0o644)
    dropin = etc / "console.d"
    st = dropin.stat()
    assert oct(st.st_mode & 0o7777) == "0o2750" and st.st_uid == layout.users["edgegw-console"][0]
    # The console edits a gate line through the real edit and atomic write, as its own uid and umask.
    _ok(layout.run("edgegw-console", _PRELUDE + _DRAW + (
        "text = with_camera_owned(dropin.read_text(), 'gate1', None, [], [])\n"
        "write_atomically(dropin, with_gate_line(text, 'gate1', (0, 200), (600, 200)))\n"
        "write_atomically(dropin, with_gate_line(dropin.read_text(), 'gate1', (0, 210), (600, 210)))\n")))
    drawing = dropin / "drawing.toml"
    mode = drawing.stat().st_mode & 0o777
    assert mode == 0o640 and (dropin / "drawing.toml.prev").exists(), oct(mode)  # the group keeps reading
    assert drawing.stat().st_gid == dropin.stat().st_gid  # setgid: the file is the drawing group's
    # Capture reads it merged into the config; it cannot change it.
    out = _ok(layout.run("edgegw-capture", _PRELUDE + _DRAW + (
        "from edge.app.config import load_config\nprint(load_config(cfg).gate_lines['gate1'].a)\n")))
    assert out.split() == ["(0.0,", "210.0)"]
    _refused(layout.run("edgegw-capture", _PRELUDE + _DRAW + "open(dropin, 'a').write('x')\n"))
    _refused(layout.run("edgegw-capture", _PRELUDE + _DRAW + "open(dropin.parent / 'other.toml', 'w')\n"))
    # The console cannot touch gateway.toml (broker, keys, privacy stay root's) ...
    _refused(layout.run("edgegw-console", _PRELUDE + _DRAW + "open(cfg, 'a').write('x')\n"))
    _refused(layout.run("edgegw-console", _PRELUDE + _DRAW + "open(cfg.parent / 'gateway.toml.new', 'w')\n"))
    # ... and reaches no key, gallery, passage or another daemon's private state.
    for target in ("keys/epoch-keys.db", "residents/residents.db", "passages/passages.db",
                   "passages/passage-keys.db", "query/audit-case-keys.db"):
        _refused(layout.run("edgegw-console", _PRELUDE + f"open(base / {target!r}, 'rb').read()\n"))
    # Nobody outside the two reads the drawings (the uplink faces the network).
    _refused(layout.run("edgegw-uplink", _PRELUDE + _DRAW + "dropin.read_text()\n"))


_REGISTRY = ("from edge.principals import PrincipalRegistry, Role\n"
             "reg = PrincipalRegistry(base / 'principals/registry.db')\n")


def test_the_principal_registry_is_shared_by_the_console_and_the_query_door_only(layout: Layout) -> None:
    _ok(layout.run("edgegw-query", _PRELUDE + _REGISTRY + "reg.publish('query', [('officer-0042', Role.POLICE)])\n"))
    _ok(layout.run("edgegw-console", _PRELUDE + _REGISTRY + "reg.publish('console', [('admin', Role.ADMIN)])\n"
                   "reg.revoke('officer-0042', 'admin')\n"))
    out = _ok(layout.run("edgegw-query", _PRELUDE + _REGISTRY + "print(reg.is_revoked('officer-0042'))\n"))
    assert out.split() == ["True"]
    for path in (layout.state / "principals").iterdir():
        assert path.stat().st_mode & 0o007 == 0, path  # group-only, never others'
    for user in ("edgegw-capture", "edgegw-uplink"):
        _refused(layout.run(user, _PRELUDE + "open(base / 'principals/registry.db', 'rb').read()\n"))
