"""The local HTTP API: token auth, role enforcement, refusals with status codes, OpenAPI conformance."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from edge.errors import ConfigError, KeyFileError
from edge.query.config import HttpConfig, QueryConfig, RateLimitConfig
from edge.query.http import QueryHttpServer
from edge.query.principals import load_principals
from tests._passages import (
    CARDS,
    DAY,
    INSTALLER,
    MACS,
    PLATFORM,
    POLICE,
    T0,
    Env,
    card_obs,
    face_obs,
    mac_obs,
    make_env,
    plate_obs,
    shared_plates,
    write_tokens,
)

STAND_IN = np.eye(128, dtype=np.float32)[5]  # the "embedding" of any photo in these tests


class Api:
    def __init__(self, env: Env, server: QueryHttpServer, tokens: dict[str, str]) -> None:
        self.env = env
        self.server = server
        self.tokens = tokens
        self.base = f"http://127.0.0.1:{server.port}"
        self.spec = self.get("/openapi.json")[1]

    def request(self, method: str, path: str, body: bytes | None = None,
                token: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=dict(headers or {}))
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read()), dict(err.headers)

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        status, body, _ = self.request("GET", path, token=token)
        return status, body

    def query(self, kind: str, who: str | None, **fields: Any) -> tuple[int, Any, dict[str, str]]:
        body = {"case_id": "C-2026-17", "from": "2026-01-09T12:00:00Z", "to": T0 + DAY, **fields}
        body = {k: v for k, v in body.items() if v is not None}
        return self.request("POST", f"/v1/query/{kind}", json.dumps(body).encode(),
                            token=self.tokens[who] if who else None)

    def check(self, body: Any, schema: str) -> None:
        jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema}",
                                         "components": self.spec["components"]}).validate(body)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    env = make_env(tmp_path, query_cfg=QueryConfig(rate_limit=RateLimitConfig(max_queries=5, per_s=600)),
                   embedder=lambda img: STAND_IN)  # real faces: test_query_service and test_query_cli
    tokens = write_tokens(tmp_path / "tokens.toml")
    server = QueryHttpServer(env.service, load_principals(tmp_path / "tokens.toml"), HttpConfig(port=0))
    server.start()
    try:
        yield Api(env, server, tokens)
    finally:
        server.stop()
        env.close()


@pytest.fixture
def plates(api: Api) -> list[str]:
    plates = shared_plates(2)
    api.env.commit([plate_obs("cam-plate-n", T0, plates[0]), card_obs("reader-n", T0 + 1, CARDS[0]),
                    mac_obs("sniffer-n", T0 + 2, MACS[0]), face_obs("cam-face-n", T0 + 2.5)])
    api.env.commit([plate_obs("cam-plate-s", T0 + 90, plates[1])])
    api.env.flush()
    return plates


def test_openapi_document_describes_every_query(api: Api) -> None:
    spec = api.spec
    assert spec["openapi"].startswith("3.1")
    assert {f"/v1/query/{k}" for k in ("plate", "card", "mac", "photo", "range")} <= set(spec["paths"])
    jsonschema.Draft202012Validator.check_schema(spec["components"]["schemas"]["QueryResult"])
    for path, item in spec["paths"].items():
        assert item.get("post", item.get("get"))["security"] == [{"bearer": []}], path


def test_police_sees_raw_values_platform_pseudonyms_installer_neither(api: Api, plates: list[str]) -> None:
    status, body, _ = api.query("plate", POLICE.name, officer_id="0042", value=plates[0])
    assert status == 200
    api.check(body, "QueryResult")
    assert body["view"] == "raw"
    (hit,) = body["hits"]
    assert hit["gate"] == "north" and hit["members"][0]["raw"] == plates[0]
    # Anchors (plate, card, face) in time order, then phones.
    assert [m.get("raw") for m in hit["members"]] == [plates[0], CARDS[0], None, MACS[0]]

    status, body, _ = api.query("mac", PLATFORM.name, officer_id="D-17", value=MACS[0])
    assert status == 200 and body["view"] == "pseudonyms"
    api.check(body, "QueryResult")
    text = json.dumps(body, ensure_ascii=False)
    for raw in (plates[0], CARDS[0], MACS[0], MACS[0].replace(":", "").lower()):
        assert raw not in text
    assert all("pseudonym" in m["subject"] or "ref" in m["subject"] for m in body["hits"][0]["members"])

    status, body, _ = api.query("plate", INSTALLER.name, officer_id="inst-7", value=plates[0])
    assert status == 403 and body["error"]["code"] == "forbidden"
    api.check(body, "Error")
    status, body, _ = api.query("range", INSTALLER.name, officer_id="inst-7")
    assert status == 200 and body["view"] == "metadata" and len(body["hits"]) == 2
    assert all(set(m.get("subject", {})) <= {"type"} for h in body["hits"] for m in h["members"])


def test_requests_without_a_valid_token_are_rejected_and_not_audited(api: Api, plates: list[str]) -> None:
    before = len(api.env.audit.records())
    status, _, headers = api.query("plate", None, officer_id="0042", value=plates[0])
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer")
    api.tokens["forged"] = os.urandom(32).hex()
    assert api.query("plate", "forged", officer_id="0042", value=plates[0])[0] == 401
    assert api.get("/v1/audit/head")[0] == 401
    assert len(api.env.audit.records()) == before


def test_missing_case_id_is_a_400_with_a_clear_message_and_one_audit_record(api: Api, plates: list[str]) -> None:
    before = len(api.env.audit.records())
    status, body, _ = api.query("card", POLICE.name, case_id=None, officer_id="0042", value=CARDS[0])
    assert status == 400 and body["error"]["code"] == "missing_case_id"
    assert "case ID" in body["error"]["message"]
    records = api.env.audit.records()[before:]
    assert len(records) == 1 and records[0].action == "query_refused"
    assert body["error"]["audit_seq"] == records[0].seq


def test_officer_binding_rate_limit_and_malformed_bodies(api: Api, plates: list[str]) -> None:
    status, body, _ = api.query("card", POLICE.name, officer_id="0043", value=CARDS[0])
    assert status == 403 and "0042" in body["error"]["message"]
    status, body, _ = api.request("POST", "/v1/query/card", b"{not json", token=api.tokens[POLICE.name])
    assert status == 400 and body["error"]["code"] == "invalid"
    status, body, _ = api.query("card", POLICE.name, officer_id="0042", value=CARDS[0], colour="red")
    assert status == 400 and "colour" in body["error"]["message"]
    assert api.request("POST", "/v1/query/nothing", b"{}", token=api.tokens[POLICE.name])[0] == 404
    for _ in range(5):
        assert api.query("card", POLICE.name, value=CARDS[0])[0] == 200  # officer from the token
    status, body, headers = api.query("card", POLICE.name, value=CARDS[0])
    assert status == 429 and body["error"]["code"] == "rate_limited" and int(headers["Retry-After"]) >= 1
    # Every authenticated request left exactly one record: 3 refused + 5 answered + 1 rate-limited.
    actions = [r.action for r in api.env.audit.records()]
    assert actions.count("query") == 5 and actions.count("query_refused") == 4
    status, body = api.get("/v1/audit/head", token=api.tokens[PLATFORM.name])
    assert status == 200 and body["audit_head"]["seq"] == 9


def test_photo_over_http(api: Api, plates: list[str]) -> None:
    import cv2

    face = api.env.commit([face_obs("cam-face-s", T0 + 300, STAND_IN)])[0]
    api.env.flush()
    ok, png = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
    assert ok
    status, body, _ = api.query("photo", PLATFORM.name, officer_id="D-17",
                                photo=base64.b64encode(png.tobytes()).decode())
    assert status == 200, body
    api.check(body, "QueryResult")
    assert body["hits"][0]["matched"] == [face.event_id] and body["hits"][0]["score"] == pytest.approx(1.0)
    status, body, _ = api.query("photo", PLATFORM.name, officer_id="D-17", photo="***")
    assert status == 400 and "base64" in body["error"]["message"]


def test_tokens_file_must_be_private_and_valid(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    write_tokens(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_principals(path)
    bad = tmp_path / "bad.toml"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    secret = "short-secret-value"
    os.write(fd, f'[[principal]]\nname = "x"\nrole = "police"\ntoken = "{secret}"\n'.encode())
    os.close(fd)
    with pytest.raises(ConfigError) as err:
        load_principals(bad)
    assert secret not in str(err.value) and "token" in str(err.value)
