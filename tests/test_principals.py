"""One principal registry for both doors: an admin revokes in the console, the query door refuses at once.

Real pieces: the console app (FastAPI, its SQLite user store), the real query HTTP door (uvicorn on a port)
over the real passage side, one registry file both open; `edgegw principal` on the command line too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edge.app.console import GatewayBackend
from edge.console.users import ConsoleAuthError, UserStore
from edge.console.web import COOKIE, create_app
from edge.principals import PrincipalRegistry, RegistryError, Role
from edge.query.config import HttpConfig, QueryConfig, RateLimitConfig
from edge.query.http import QueryHttpServer
from edge.query.principals import load_principals
from tests._passages import DAY, POLICE, T0, make_env, write_tokens
from tests.conftest import ROOT, new_gateway


def test_registry_lists_revokes_and_restores(tmp_path: Path) -> None:
    reg = PrincipalRegistry(tmp_path / "p" / "registry.db")
    try:
        reg.publish("console", [("admin", Role.ADMIN), ("ina", Role.INSTALLER)])
        reg.publish("query", [("officer-0042", Role.POLICE)])
        reg.publish("console", [("admin", Role.ADMIN)])  # a door's list is replaced, not appended
        assert [(p.name, p.door, p.role) for p in reg.listed()] == [("admin", "console", Role.ADMIN),
                                                                    ("officer-0042", "query", Role.POLICE)]
        with pytest.raises(RegistryError, match="no door lists"):
            reg.revoke("nobody", "admin")
        reg.revoke("officer-0042", "admin")
        assert reg.is_revoked("officer-0042") and not reg.is_revoked("admin")
        with pytest.raises(RegistryError, match="revoked already"):
            reg.revoke("officer-0042", "admin")
        assert [p.revoked_by for p in reg.listed() if p.revoked] == ["admin"]
        reg.restore("officer-0042")
        assert not reg.is_revoked("officer-0042")
        with pytest.raises(RegistryError, match="not revoked"):
            reg.restore("officer-0042")
    finally:
        reg.close()


def test_each_door_takes_its_own_roles_of_the_one_model(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "console.db")
    try:
        with pytest.raises(ConsoleAuthError, match="query-door role"):
            users.add("cop", Role.POLICE, "long-enough-password")
    finally:
        users.close()
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[principal]]\nname = "boss"\nrole = "admin"\ntoken = "{"a" * 64}"\n')
    tokens.chmod(0o600)
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match="console role"):
        load_principals(tokens)


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _query(port: int, token: str, officer: str = "0042") -> int:
    body = json.dumps({"case_id": "C-2026-17", "from": "2026-01-09T12:00:00Z", "to": T0 + DAY,
                       "officer_id": officer}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/query/range", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def doors(tmp_path: Path) -> Iterator[tuple[Path, TestClient, UserStore, QueryHttpServer, dict[str, str]]]:
    cfg = new_gateway(tmp_path, '\n[[cameras]]\nid = "gate1"\nkind = "fake"\n')
    registry_file = tmp_path / "data" / "principals" / "registry.db"
    (tmp_path / "door").mkdir()
    env = make_env(tmp_path / "door", query_cfg=QueryConfig(rate_limit=RateLimitConfig(max_queries=50, per_s=600)))
    tokens = write_tokens(tmp_path / "tokens.toml")
    door_registry = PrincipalRegistry(registry_file)  # the query daemon's own connection
    principals = load_principals(tmp_path / "tokens.toml", door_registry)
    door_registry.publish("query", principals.listing())
    server = QueryHttpServer(env.service, principals, HttpConfig(port=0))
    server.start()
    console_registry = PrincipalRegistry(registry_file)  # the console's, another process in production
    backend = GatewayBackend(cfg)
    users = UserStore(tmp_path / "data" / "console.db", registry=console_registry)
    users.add("root_admin", Role.ADMIN, "admin-password-1", must_change=False)
    users.add("ina", Role.INSTALLER, "installer-password", must_change=False)
    client = TestClient(create_app(backend, users, secure_cookies=False, registry=console_registry),
                        follow_redirects=False)
    try:
        yield cfg, client, users, server, tokens
    finally:
        server.stop()
        env.close()
        users.close()
        backend.close()
        console_registry.close()
        door_registry.close()


def _login(client: TestClient, user: str, password: str) -> None:
    r = client.post("/login", data={"username": user, "password": password,
                                    "csrf": _csrf(client.get("/login").text)})
    assert r.status_code == 303, r.text


def test_an_admin_revoking_in_the_console_revokes_at_both_doors(
        doors: tuple[Path, TestClient, UserStore, QueryHttpServer, dict[str, str]]) -> None:
    cfg, admin, _users, server, tokens = doors
    assert _query(server.port, tokens[POLICE.name]) == 200
    _login(admin, "root_admin", "admin-password-1")
    page = admin.get("/admin/principals")
    assert page.status_code == 200
    # One view of both doors: console users and the door's principals, names and roles only.
    for name, door in (("root_admin", "console"), ("ina", "console"), (POLICE.name, "query")):
        assert f'data-name="{name}" data-door="{door}"' in page.text, name
    assert tokens[POLICE.name] not in page.text
    token = _csrf(page.text)
    r = admin.post(f"/admin/principals/{POLICE.name}/revoke", data={"csrf": token})
    assert r.status_code == 200 and "revoked everywhere" in r.text
    assert _query(server.port, tokens[POLICE.name]) == 401  # the door refuses it from the next request
    assert _query(server.port, tokens["officer-0043"], "0043") == 200  # and only it
    # A console user revoked the same way loses the session it holds and cannot log in again.
    installer = TestClient(admin.app, follow_redirects=False)
    _login(installer, "ina", "installer-password")
    assert installer.get("/").status_code == 200
    assert admin.post("/admin/principals/ina/revoke", data={"csrf": token}).status_code == 200
    assert installer.get("/").status_code == 303  # back to /login
    time.sleep(1.1)  # the login throttle: one try a second per client and name
    r = installer.post("/login", data={"username": "ina", "password": "installer-password",
                                       "csrf": _csrf(installer.get("/login").text)})
    assert r.status_code == 401
    # Restored, the token works again; an admin cannot lock themself out.
    assert admin.post(f"/admin/principals/{POLICE.name}/restore", data={"csrf": token}).status_code == 200
    assert _query(server.port, tokens[POLICE.name]) == 200
    r = admin.post("/admin/principals/root_admin/revoke", data={"csrf": token})
    assert r.status_code == 400 and "cannot revoke themself" in r.text
    # Only admins see or use the page; every POST needs the CSRF token.
    assert admin.post(f"/admin/principals/{POLICE.name}/revoke", data={"csrf": "forged"}).status_code == 403
    assert admin.post("/admin/principals/ina/restore", data={"csrf": token}).status_code == 200
    time.sleep(1.1)
    _login(installer, "ina", "installer-password")
    assert installer.get("/admin/principals").status_code == 403
    assert installer.post(f"/admin/principals/{POLICE.name}/revoke",
                          data={"csrf": _csrf(installer.get("/").text)}).status_code == 403
    assert _query(server.port, tokens[POLICE.name]) == 200
    assert COOKIE in admin.cookies
    # The command line works on the same registry (as root on the gateway), and is audited.
    out = subprocess.run([sys.executable, "-m", "edge.cli", "principal", "revoke", POLICE.name, "--by", "root",
                          "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert "revoked at both doors" in out.stdout
    assert _query(server.port, tokens[POLICE.name]) == 401
    listed = subprocess.run([sys.executable, "-m", "edge.cli", "principal", "list", "--config", str(cfg)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert re.search(rf"{POLICE.name}\s+query\s+police\s+revoked by root", listed), listed


def test_a_revoked_principal_signs_no_mqtt_request_either(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens.toml")
    reg = PrincipalRegistry(tmp_path / "registry.db")
    try:
        principals = load_principals(tmp_path / "tokens.toml", reg)
        reg.publish("query", principals.listing())
        assert principals.signer(POLICE.name) is not None and principals.by_token(tokens[POLICE.name]) is not None
        reg.revoke(POLICE.name, "admin")
        assert principals.signer(POLICE.name) is None and principals.by_token(tokens[POLICE.name]) is None
    finally:
        reg.close()
