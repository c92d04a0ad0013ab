"""The local HTTP query API on FastAPI + uvicorn: bearer tokens, one POST per query kind, OpenAPI at /openapi.json.

Identifiers travel only in request bodies, never in URLs (which end up in proxy and access logs).
The server binds to loopback by default; beyond loopback `config check` demands TLS (served by
uvicorn from `tls_cert_file`/`tls_key_file`, the key under the key-file permission check).

Bad input never crashes the door (issue 12): bodies are typed pydantic models whose constraints the
OpenAPI document states; a body that breaks them is a 400 with a reason (audited like any refusal
of an authenticated caller), never a 422 or a dropped connection; bodies are capped while they are
read; uvicorn serves at most `max_clients` connections at once (503 beyond) and every connection
must deliver its request within `request_timeout_s`, so slow clients cannot pile up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge import __version__
from edge.keys import check_private_file
from edge.query.api_models import AuditHead, Error, IdentifierQuery, PhotoQuery, QueryBody, QueryResult, RangeQuery
from edge.query.config import HttpConfig
from edge.query.model import Channel, Principal, QueryKind, QueryRefusedError, RefusalReason
from edge.query.principals import Principals
from edge.query.service import QueryService
from edge.query.wire import WireError, refusal_to_json, request_from_json, result_to_json

log = logging.getLogger(__name__)

_STATUS = {
    RefusalReason.MISSING_CASE_ID: HTTPStatus.BAD_REQUEST,
    RefusalReason.MISSING_OFFICER_ID: HTTPStatus.BAD_REQUEST,
    RefusalReason.INVALID: HTTPStatus.BAD_REQUEST,
    RefusalReason.FORBIDDEN: HTTPStatus.FORBIDDEN,
    RefusalReason.RATE_LIMITED: HTTPStatus.TOO_MANY_REQUESTS,
}
_QUERY_PREFIX = "/v1/query/"
_HEADERS = {"Cache-Control": "no-store"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error, "description": text} for code, text in (
        (400, "invalid request (the message says which field and why)"), (401, "no valid bearer token"),
        (403, "the role may not run this query"), (413, "body too large"), (429, "rate limited"),
        (503, "too many connections"))}

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers={**_HEADERS, **(headers or {})})


def build_app(service: QueryService, principals: Principals) -> FastAPI:
    """The FastAPI application of the query door (no server: `QueryHttpServer` runs it)."""
    app = FastAPI(title="edgegw passage query API", version=__version__, docs_url=None, redoc_url=None,
                  description="Police queries over a gateway's passage records. Every query needs case_id, is "
                              "rate-limited per token and per officer, and audited. Identifying and photo queries "
                              "are police-only; the platform role gets time-range aggregates.")
    bearer = HTTPBearer(scheme_name="bearer", auto_error=False)

    def principal_of(creds: HTTPAuthorizationCredentials | None) -> Principal | None:
        return principals.by_token(creds.credentials.strip()) if creds is not None else None

    def authenticated(request: Request,
                      creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:  # noqa: B008
        principal = principal_of(creds)
        if principal is None:
            log.warning("query API: rejected a request without a valid token from %s",
                        request.client.host if request.client else "?")
            raise StarletteHTTPException(HTTPStatus.UNAUTHORIZED, "a valid bearer token is required")
        request.state.principal = principal
        return principal

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == HTTPStatus.UNAUTHORIZED:
            return _error(401, "unauthenticated", str(exc.detail), {"WWW-Authenticate": 'Bearer realm="edgegw"'})
        if exc.status_code == HTTPStatus.NOT_FOUND:
            return _error(404, "not_found", "no such resource")
        return _error(exc.status_code, HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # A typed-body failure of an authenticated caller is a refusal like any other: 400, audited.
        principal = getattr(request.state, "principal", None)
        if principal is None:
            principal = principal_of(await bearer(request))
        if principal is None:
            return _error(401, "unauthenticated", "a valid bearer token is required",
                          {"WWW-Authenticate": 'Bearer realm="edgegw"'})
        kind = request.url.path.removeprefix(_QUERY_PREFIX)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        message = _describe(exc) if ctype == "application/json" else "send the body as application/json"
        err = await asyncio.to_thread(service.refuse, principal, kind, Channel.HTTP, message)
        return JSONResponse(refusal_to_json(err), status_code=400, headers=_HEADERS)

    def run(principal: Principal, kind: QueryKind, body: dict[str, object]) -> JSONResponse:
        try:
            try:
                request = request_from_json(kind, body)
            except WireError as exc:
                raise service.refuse(principal, kind.value, Channel.HTTP, str(exc)) from None
            result = service.run(principal, request, Channel.HTTP)
        except QueryRefusedError as err:
            headers = dict(_HEADERS)
            if err.retry_after_s is not None:
                headers["Retry-After"] = str(max(1, round(err.retry_after_s)))
            return JSONResponse(refusal_to_json(err), status_code=_STATUS[err.reason], headers=headers)
        return JSONResponse(result_to_json(result), headers=_HEADERS)

    def route(kind: QueryKind, model: type[QueryBody], summary: str) -> None:
        async def endpoint(body: model,  # type: ignore[valid-type]
                           principal: Principal = Depends(authenticated)) -> JSONResponse:  # noqa: B008
            data = body.model_dump(by_alias=True, exclude_unset=True)  # type: ignore[attr-defined]
            # The service does the blocking work (SQLite, the face model) off the event loop.
            return await asyncio.to_thread(run, principal, kind, data)

        # Postponed annotations name `model` as a string FastAPI cannot resolve: give it the class.
        endpoint.__annotations__["body"] = model
        app.post(f"{_QUERY_PREFIX}{kind.value}", summary=summary, operation_id=f"query_{kind.value}",
                 response_model=QueryResult, responses=_ERRORS)(endpoint)

    for kind in (QueryKind.PLATE, QueryKind.CARD, QueryKind.MAC):
        route(kind, IdentifierQuery, f"passages by {kind.value} (police only)")
    route(QueryKind.PHOTO, PhotoQuery, "passages by a face photo (police only; biometric processing, audited)")
    route(QueryKind.RANGE, RangeQuery, "passages in a time range")

    @app.get("/v1/audit/head", summary="the audit chain head, for anchoring", operation_id="audit_head",
             response_model=AuditHead, responses={401: _ERRORS[401]})
    async def audit_head(_principal: Principal = Depends(authenticated)) -> JSONResponse:  # noqa: B008
        head = await asyncio.to_thread(service.audit.head)
        return JSONResponse({"audit_head": {"seq": head.seq, "hash": head.hash}}, headers=_HEADERS)

    return app


def _describe(exc: RequestValidationError) -> str:
    """A refusal message naming the fields and rules broken, never the values sent (they are audited)."""
    parts = []
    for err in exc.errors()[:8]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        field = ".".join(loc[:1]) if loc else "the body"
        if err.get("type") == "json_invalid":
            return "the request body is not valid JSON"
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown field {field}" if _safe(field) else "an unknown field")
            continue
        rule = str(err.get("msg", "invalid"))
        parts.append(f"{field}: {rule}" if _safe(field) else rule)
    return "; ".join(dict.fromkeys(parts)) or "the request body is invalid"


def _safe(name: str) -> bool:
    return bool(name) and len(name) <= 32 and name.replace("_", "").isalnum() and name.isascii()


class _BodyLimit:
    """ASGI middleware: refuse a body over `max_body` bytes (by Content-Length, or while it streams in)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(send)
            return
        # Read the body here, up to the cap, then replay it: the app never sees more than max_body
        # bytes, chunked or not (FastAPI would turn an error raised mid-read into a 400).
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only http.disconnect can come

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"error": {"code": "too_large",
                                     "message": f"the body may be at most {self.max_body} bytes"}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class QueryHttpServer:
    """Serves the query API with uvicorn on a background thread: `start()`, `stop()`, `port`."""

    def __init__(self, service: QueryService, principals: Principals, config: HttpConfig) -> None:
        import uvicorn

        from edge.query.deadline import deadline_protocol

        self.service = service
        self.principals = principals
        self.max_body = int(config.max_body_mb * 1024 * 1024)
        self.max_clients = config.max_clients
        self._sock = socket.socket(socket.AF_INET6 if ":" in config.bind else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((config.bind, config.port))
        self._sock.listen(64)
        ssl_args: dict[str, Any] = {}
        if config.tls_cert_file is not None and config.tls_key_file is not None:
            check_private_file(config.tls_key_file, purpose="HTTP TLS private key")
            ssl_args = {"ssl_certfile": str(config.tls_cert_file), "ssl_keyfile": str(config.tls_key_file)}
        app = _BodyLimit(build_app(service, principals), self.max_body)
        self._config = uvicorn.Config(
            app, log_config=None, access_log=False, server_header=False, lifespan="off",
            http=deadline_protocol(config.request_timeout_s), ws="none",
            limit_concurrency=config.max_clients, timeout_keep_alive=5, **ssl_args)
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when the config asked for port 0)."""
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="query-http", daemon=True)
        self._thread.start()
        log.info("query HTTP API on port %d", self.port)

    def alive(self) -> bool:
        """True while the server thread runs (the daemon's watchdog ping depends on it)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._thread = None
        self._sock.close()


def openapi(service: QueryService, principals: Principals) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API (generated from the typed models)."""
    return build_app(service, principals).openapi()
