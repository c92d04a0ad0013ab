"""The local HTTP query API (stdlib http.server): bearer tokens, one POST per query kind, OpenAPI at /openapi.json.

Identifiers travel only in request bodies, never in URLs (which end up in proxy and access logs).
The server binds to loopback by default; put TLS in front (or keep it on loopback) before exposing it.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge import __version__
from edge.query.config import HttpConfig
from edge.query.model import Channel, Principal, QueryKind, QueryRefusedError, RefusalReason
from edge.query.principals import Principals
from edge.query.service import QueryService
from edge.query.wire import WireError, query_kind, refusal_to_json, request_from_json, result_to_json

log = logging.getLogger(__name__)

_STATUS = {
    RefusalReason.MISSING_CASE_ID: HTTPStatus.BAD_REQUEST,
    RefusalReason.MISSING_OFFICER_ID: HTTPStatus.BAD_REQUEST,
    RefusalReason.INVALID: HTTPStatus.BAD_REQUEST,
    RefusalReason.FORBIDDEN: HTTPStatus.FORBIDDEN,
    RefusalReason.RATE_LIMITED: HTTPStatus.TOO_MANY_REQUESTS,
}
_QUERY_PREFIX = "/v1/query/"


class QueryHttpServer:
    """Serves the query API on a background thread: `start()`, `stop()`, `port`."""

    def __init__(self, service: QueryService, principals: Principals, config: HttpConfig) -> None:
        self.service = service
        self.principals = principals
        self.max_body = int(config.max_body_mb * 1024 * 1024)
        self._server = _Server((config.bind, config.port), _Handler)
        self._server.app = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when the config asked for port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="query-http", daemon=True)
        self._thread.start()
        log.info("query HTTP API on %s:%d", self._server.server_address[0], self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        self._server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: QueryHttpServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"edgegw/{__version__}"
    timeout = 30  # a client that stalls mid-request must not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s " + format, self.client_address[0], *args)

    # -- routing ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if self.path == "/openapi.json":
            self._json(HTTPStatus.OK, openapi())
            return
        if self.path == "/v1/audit/head":
            if self._principal() is None:
                return
            head = self.server.app.service.audit.head()
            self._json(HTTPStatus.OK, {"audit_head": {"seq": head.seq, "hash": head.hash}})
            return
        self._error(HTTPStatus.NOT_FOUND, "not_found", "no such resource")

    def do_POST(self) -> None:
        if not self.path.startswith(_QUERY_PREFIX):
            self._error(HTTPStatus.NOT_FOUND, "not_found", "no such resource")
            return
        try:
            kind = query_kind(self.path[len(_QUERY_PREFIX):])
        except WireError:
            self._error(HTTPStatus.NOT_FOUND, "not_found", "unknown query kind")
            return
        principal = self._principal()
        if principal is None:
            return
        body = self._body()
        if body is None:
            return
        app = self.server.app
        try:
            try:
                request = request_from_json(kind, json.loads(body))
            except (WireError, ValueError) as exc:
                message = str(exc) if isinstance(exc, WireError) else "the request body is not valid JSON"
                raise app.service.refuse(principal, kind.value, Channel.HTTP, message) from None
            result = app.service.run(principal, request, Channel.HTTP)
        except QueryRefusedError as err:
            headers = {}
            if err.retry_after_s is not None:
                headers["Retry-After"] = str(max(1, round(err.retry_after_s)))
            self._json(_STATUS[err.reason], refusal_to_json(err), headers)
            return
        self._json(HTTPStatus.OK, result_to_json(result))

    # -- helpers ----------------------------------------------------------------------------------

    def _principal(self) -> Principal | None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        principal = self.server.app.principals.by_token(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            log.warning("query API: rejected a request without a valid token from %s", self.client_address[0])
            self._error(HTTPStatus.UNAUTHORIZED, "unauthenticated", "a valid bearer token is required",
                        {"WWW-Authenticate": 'Bearer realm="edgegw"'})
        return principal

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "length_required", "Content-Length is required")
            return None
        if length < 0 or length > self.server.app.max_body:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                        f"the body may be at most {self.server.app.max_body} bytes")
            return None
        return self.rfile.read(length)

    def _error(self, status: HTTPStatus, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"error": {"code": code, "message": message}}, headers)

    def _json(self, status: HTTPStatus, obj: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API (its schemas are JSON Schema 2020-12)."""
    time_schema = {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
                   "description": "ISO-8601 (no offset means UTC) or seconds since 1970"}
    error = {"description": "refused or failed", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
    kinds = {
        QueryKind.PLATE: "plate text as read (any spelling; it is normalised)",
        QueryKind.CARD: "card number (hex of the UID)",
        QueryKind.MAC: "phone MAC address",
        QueryKind.PHOTO: "",
        QueryKind.RANGE: "",
    }
    paths: dict[str, Any] = {}
    for kind, value_doc in kinds.items():
        props: dict[str, Any] = {"case_id": {"type": "string"}, "officer_id": {"type": "string"},
                                 "from": time_schema, "to": time_schema, "gate": {"type": "string"},
                                 "limit": {"type": "integer", "minimum": 1}}
        if value_doc:
            props["value"] = {"type": "string", "description": value_doc}
        if kind is QueryKind.PHOTO:
            props["photo"] = {"type": "string", "contentEncoding": "base64", "description": "JPEG/PNG/WebP image"}
            props["threshold"] = {"type": "number", "description": "cosine similarity; never below the gateway's"}
        paths[f"{_QUERY_PREFIX}{kind.value}"] = {"post": {
            "summary": f"passages by {kind.value}" if kind is not QueryKind.RANGE else "passages in a time range",
            "operationId": f"query_{kind.value}",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["case_id", "officer_id", "from", "to"],
                "properties": props}}}},
            "responses": {
                "200": {"description": "the passages found, reduced to what the caller's role may see",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/QueryResult"}}}},
                "400": error, "401": error, "403": error, "413": error, "429": error,
            },
        }}
    paths["/v1/audit/head"] = {"get": {
        "summary": "the audit chain head, for anchoring", "operationId": "audit_head", "security": [{"bearer": []}],
        "responses": {"200": {"description": "head", "content": {"application/json": {"schema": {
            "type": "object", "required": ["audit_head"], "properties": {"audit_head": {
                "type": "object", "required": ["seq", "hash"],
                "properties": {"seq": {"type": "integer"}, "hash": {"type": "string"}}}}}}}},
            "401": error},
    }}
    member = {"type": "object", "additionalProperties": False, "required": ["event_id", "kind", "source", "ts"],
              "properties": {
                  "event_id": {"type": "string"}, "kind": {"type": "string"}, "source": {"type": "string"},
                  "ts": {"type": "string"}, "direction": {"type": "string"},
                  "subject": {"type": "object", "additionalProperties": False, "properties": {
                      "type": {"type": "string"}, "pseudonym": {"type": "string"}, "key_id": {"type": "string"},
                      "ref": {"type": "string"}}},
                  "raw": {"type": "string", "description": "decrypted identifier; police role only"},
                  "score": {"type": "number"}}}
    hit = {"type": "object", "additionalProperties": False,
           "required": ["passage_id", "gate", "ts", "direction", "matched", "members"],
           "properties": {
               "passage_id": {"type": ["string", "null"]}, "gate": {"type": ["string", "null"]},
               "ts": {"type": "string"}, "direction": {"type": ["string", "null"]},
               "matched": {"type": "array", "items": {"type": "string"}},
               "members": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}},
               "score": {"type": "number"}}}
    result = {"type": "object", "additionalProperties": False,
              "required": ["query_id", "kind", "case_id", "officer_id", "view", "audit_seq", "truncated", "hits"],
              "properties": {
                  "query_id": {"type": "string"}, "kind": {"enum": [k.value for k in QueryKind]},
                  "case_id": {"type": "string"}, "officer_id": {"type": "string"},
                  "view": {"enum": ["metadata", "pseudonyms", "raw"]}, "audit_seq": {"type": "integer"},
                  "truncated": {"type": "boolean"},
                  "hits": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}}}}
    err = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "audit_seq": {"type": "integer"},
            "retry_after_s": {"type": "integer"}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgegw passage query API", "version": __version__,
                 "description": "Police queries over a gateway's passage records. Every query needs case_id "
                                "and officer_id, is rate-limited per officer and audited."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Member": member, "Hit": hit, "QueryResult": result, "Error": err},
        },
        "paths": paths,
    }
