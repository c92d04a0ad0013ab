"""The case routes of the platform's HTTP API: list, show, claim, dispatch, handle, close, export.

Read (list, show, export): roles police, auditor and admin — a district's own case system polls
`GET /v1/cases/export?since=<cursor>` with an auditor token. Moves: police and admin; a token bound
to an officer moves cases for that officer only. A move the case's state does not allow is 409.
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time.
from dataclasses import fields
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter
from pydantic.dataclasses import dataclass as pydantic_dataclass

from district.casedesk import Case, CaseDesk, CaseError, CaseRefusal, HistoryEntry
from district.cases import CaseState
from district.principals import Principal, Role

_STATUS = {CaseRefusal.NOT_FOUND: status.HTTP_404_NOT_FOUND, CaseRefusal.CONFLICT: status.HTTP_409_CONFLICT,
           CaseRefusal.INVALID: status.HTTP_400_BAD_REQUEST}


# The response models are the case desk's own dataclasses seen by pydantic: their fields are declared
# once (district.casedesk), and these subclasses only give the schema its names and narrow two types.
@pydantic_dataclass(frozen=True)
class HistoryOut(HistoryEntry):
    """One move of a case."""


@pydantic_dataclass(frozen=True)
class CaseOut(Case):
    """A case (pseudonyms only); `state_label` is the district's name of the state (发现 … 归档)."""

    state: CaseState  # the schema names the states (the desk keeps the plain string)
    history: list[HistoryOut]


class ExportOut(BaseModel):
    """The cases changed since the cursor, each with its whole history; poll again with `cursor`."""

    cursor: int
    more: bool = Field(description="true if the page was cut: ask again at once with `cursor`")
    cases: list[CaseOut]


class MoveIn(BaseModel):
    """Who the move is made for, and why."""

    officer: str = Field(min_length=1, max_length=64)
    note: str = Field(default="", max_length=500)


class DispatchIn(MoveIn):
    """A dispatch names the unit sent."""

    unit: str = Field(min_length=1, max_length=64)


class CloseIn(MoveIn):
    """Closing records the outcome (反馈) and archives (归档)."""

    note: str = Field(min_length=1, max_length=500, description="the feedback: what was found and done")


class CaseRefusalOut(BaseModel):
    """Why a case request was refused."""

    reason: str
    message: str


_CASE_OUT = TypeAdapter(CaseOut)
_CASE_FIELDS = tuple(f.name for f in fields(Case) if f.name != "history")
_HISTORY_FIELDS = tuple(f.name for f in fields(HistoryEntry))


def _out(case: Case) -> CaseOut:
    # Shallow dicts, not case.to_json(): asdict's deep copy was ~3/4 of the CPU of a 500-case export
    # page. The adapter, not CaseOut(**...): the dataclass's own __init__ costs ~10% more.
    body: dict[str, Any] = {name: getattr(case, name) for name in _CASE_FIELDS}
    body["history"] = [{name: getattr(h, name) for name in _HISTORY_FIELDS} for h in case.history]
    return _CASE_OUT.validate_python(body)


def add_case_routes(app: FastAPI, desk: CaseDesk, require: Any) -> None:
    """Mount the case routes; `require(*roles)` is the app's role dependency."""
    readers = require(Role.POLICE, Role.AUDITOR, Role.ADMIN)
    movers = require(Role.POLICE, Role.ADMIN)
    refusals: dict[int | str, dict[str, Any]] = {
        400: {"model": CaseRefusalOut}, 403: {"model": CaseRefusalOut}, 404: {"model": CaseRefusalOut},
        409: {"model": CaseRefusalOut}}

    @app.exception_handler(CaseError)
    async def refused(_r: Request, exc: CaseError) -> JSONResponse:
        return JSONResponse({"reason": exc.reason.value, "message": str(exc)}, status_code=_STATUS[exc.reason])

    def officer_of(who: Principal, body: MoveIn) -> str:
        if who.officer is not None and who.officer != body.officer:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this token is bound to another officer")
        return body.officer

    @app.get("/v1/cases/export", response_model=ExportOut, responses=refusals)
    def export(_who: Annotated[Principal, readers], since: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> ExportOut:
        """Every case changed since `since` (0: all), with its history, and the next cursor."""
        page = desk.export(since, limit=limit)
        return ExportOut(cursor=page.cursor, more=page.more, cases=[_out(c) for c in page.cases])

    @app.get("/v1/cases", response_model=list[CaseOut])
    def list_cases(_who: Annotated[Principal, readers], state: CaseState | None = None, open_only: bool = False,
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[CaseOut]:
        """Cases, newest first (optionally one state, or only those not archived)."""
        return [_out(c) for c in desk.find(state=state, open_only=open_only, limit=limit)]

    @app.get("/v1/cases/{case_id}", response_model=CaseOut, responses=refusals)
    def show(case_id: str, _who: Annotated[Principal, readers]) -> CaseOut:
        """One case and its history."""
        return _out(desk.show(case_id))

    @app.post("/v1/cases/{case_id}/claim", response_model=CaseOut, responses=refusals)
    def claim(case_id: str, body: MoveIn, who: Annotated[Principal, movers]) -> CaseOut:
        """上报 → 受理."""
        return _out(desk.claim(case_id, actor=who.name, officer=officer_of(who, body), note=body.note))

    @app.post("/v1/cases/{case_id}/dispatch", response_model=CaseOut, responses=refusals)
    def dispatch(case_id: str, body: DispatchIn, who: Annotated[Principal, movers]) -> CaseOut:
        """受理 → 分拨 (or to another unit)."""
        return _out(desk.dispatch(case_id, actor=who.name, officer=officer_of(who, body), unit=body.unit,
                                  note=body.note))

    @app.post("/v1/cases/{case_id}/handle", response_model=CaseOut, responses=refusals)
    def handle(case_id: str, body: MoveIn, who: Annotated[Principal, movers]) -> CaseOut:
        """分拨 → 处置."""
        return _out(desk.handle(case_id, actor=who.name, officer=officer_of(who, body), note=body.note))

    @app.post("/v1/cases/{case_id}/close", response_model=CaseOut, responses=refusals)
    def close(case_id: str, body: CloseIn, who: Annotated[Principal, movers]) -> CaseOut:
        """→ 反馈 → 归档."""
        return _out(desk.close(case_id, actor=who.name, officer=officer_of(who, body), note=body.note))
