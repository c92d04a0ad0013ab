"""The platform's HTTP API (FastAPI): police search, cases, audit verification; bearer-token roles.

OpenAPI is generated from the typed models below (`/openapi.json`, docs at `/docs`). Identifiers
travel only in request bodies, never in URLs, which end up in proxy and access logs.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at run time,
# and the dependencies in them are local to create_app.
from dataclasses import fields
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, TypeAdapter
from pydantic.dataclasses import dataclass as pydantic_dataclass

from district.casedesk import CaseDesk
from district.cases_api import add_case_routes
from district.details import DetailsRequest, DetailsService
from district.errors import SearchRefusedError
from district.platform_audit import verify
from district.principals import Principal, Principals, Role
from district.search import Hit, Refusal, SearchKind, SearchRequest, SearchService

_STATUS = {
    Refusal.MISSING_CASE_ID: status.HTTP_400_BAD_REQUEST,
    Refusal.MISSING_OFFICER_ID: status.HTTP_400_BAD_REQUEST,
    Refusal.INVALID: status.HTTP_400_BAD_REQUEST,
    Refusal.FORBIDDEN: status.HTTP_403_FORBIDDEN,
    Refusal.RATE_LIMITED: status.HTTP_429_TOO_MANY_REQUESTS,
}


class SearchIn(BaseModel):
    """A police search request."""

    kind: SearchKind
    value: str = Field(min_length=1, max_length=64, description="the raw plate, card number or MAC; never stored")
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    case_id: str = Field(default="", max_length=64)
    officer: str = Field(default="", max_length=64)


@pydantic_dataclass(frozen=True)
class HitOut(Hit):
    """One sighting."""  # the fields are district.search.Hit's, declared there once


_HITS = TypeAdapter(list[HitOut])
_HIT_FIELDS = tuple(f.name for f in fields(Hit))


def _hits_out(hits: list[Hit]) -> list[HitOut]:
    # A shallow dict per hit, not dataclasses.asdict: its deep copy made 1000 hits ~6x slower to convert.
    return _HITS.validate_python([{name: getattr(h, name) for name in _HIT_FIELDS} for h in hits])


class SearchOut(BaseModel):
    """The hits, the epochs searched and the audit record written."""

    hits: list[HitOut]
    epochs: list[str]
    truncated: bool
    audit_seq: int
    details_hint: str = Field(description="how to get the sealed details from the gateways that hold them")


class DetailsIn(BaseModel):
    """Details about events a search under this case found, from the gateways that hold them."""

    case_id: str = Field(default="", max_length=64)
    officer: str = Field(default="", max_length=64)
    value: str = Field(min_length=1, max_length=64, description="the value the case's search was for; never stored")
    event_ids: list[str] = Field(min_length=1, max_length=1000)


class GatewayDetailsOut(BaseModel):
    """One gateway's answer over its MQTT query door."""

    gateway: str
    status: str = Field(description="ok, refused, unauthenticated, unreadable, timeout or no_door_key")
    event_ids: list[str]
    hits: list[dict[str, Any]] = Field(description="the gateway's hits holding the asked events (pseudonyms only)")
    error: str | None
    gateway_audit_seq: int | None = Field(description="the record the gateway wrote in its own audit log")


class DetailsOut(BaseModel):
    """Every gateway's answer, the events none answered for, and the platform's two audit records."""

    kind: str
    gateways: list[GatewayDetailsOut]
    missing: list[str]
    request_audit_seq: int
    outcome_audit_seq: int


class RefusalOut(BaseModel):
    """Why a request was refused."""

    reason: str
    message: str


class AuditOut(BaseModel):
    """The platform audit chain's state."""

    ok: bool
    records: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None
    message: str


def create_app(service: SearchService, principals: Principals, details: DetailsService | None = None,
               cases: CaseDesk | None = None) -> FastAPI:
    """Build the API around a search service, the token table, (if `[door]` is set up) details, and the
    case desk (on the same database by default)."""
    app = FastAPI(title="edgegw district platform", version="1", description=__doc__)
    bearer = HTTPBearer(auto_error=False)

    def caller(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        who = principals.authenticate(creds.credentials) if creds is not None else None
        if who is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        return who

    def require(*roles: Role) -> Any:
        def check(who: Annotated[Principal, Depends(caller)]) -> Principal:
            if who.role not in roles:
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {who.role.value} may not do this")
            return who
        return Depends(check)

    @app.exception_handler(SearchRefusedError)
    async def refused(_r: Request, exc: SearchRefusedError) -> JSONResponse:
        headers = {"Retry-After": str(int(exc.retry_after_s) + 1)} if exc.retry_after_s else None
        return JSONResponse({"reason": exc.reason, "message": str(exc)},
                            status_code=_STATUS.get(Refusal(exc.reason), 400), headers=headers)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/search", response_model=SearchOut,
              responses={400: {"model": RefusalOut}, 403: {"model": RefusalOut}, 429: {"model": RefusalOut}})
    def search(body: SearchIn, who: Annotated[Principal, require(Role.POLICE, Role.ADMIN)]) -> SearchOut:
        """Where and when a plate, card or MAC was seen across the district (case id and officer required)."""
        res = service.search(who, SearchRequest(body.kind, body.value, body.start, body.end, body.case_id,
                                                body.officer))
        return SearchOut(hits=_hits_out(res.hits),
                         epochs=res.epochs, truncated=res.truncated, audit_seq=res.audit_seq,
                         details_hint=f"POST /v1/search/details with case_id {body.case_id}, the officer, the "
                                      "value and the event_ids: the gateways holding them answer over their "
                                      "query door")

    @app.post("/v1/search/details", response_model=DetailsOut,
              responses={400: {"model": RefusalOut}, 403: {"model": RefusalOut}, 429: {"model": RefusalOut},
                         503: {"model": RefusalOut}})
    def search_details(body: DetailsIn, who: Annotated[Principal, require(Role.POLICE, Role.ADMIN)]) -> DetailsOut:
        """Ask the gateways holding a case's hits for their sealed records, over their MQTT query door."""
        if details is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "details are not configured ([door])")
        res = details.details(who, DetailsRequest(body.case_id, body.officer, body.value, tuple(body.event_ids)))
        return DetailsOut(kind=res.kind, missing=res.missing, request_audit_seq=res.request_audit_seq,
                          outcome_audit_seq=res.outcome_audit_seq,
                          gateways=[GatewayDetailsOut(gateway=g.gateway, status=g.status, event_ids=list(g.event_ids),
                                                      hits=g.hits, error=g.error,
                                                      gateway_audit_seq=g.gateway_audit_seq) for g in res.gateways])

    @app.get("/v1/audit/verify", response_model=AuditOut)
    def audit_verify(_who: Annotated[Principal, require(Role.AUDITOR, Role.ADMIN)]) -> AuditOut:
        """Re-hash the platform's audit chain."""
        with service.connect() as conn:
            c = verify(conn)
        return AuditOut(ok=c.ok, records=c.records, head_seq=c.head_seq, head_hash=c.head_hash,
                        first_bad_seq=c.first_bad_seq, message=c.message)

    add_case_routes(app, cases if cases is not None else CaseDesk(service.connect), require)
    return app
