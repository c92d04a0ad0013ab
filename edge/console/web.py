"""The console's web app: login, dashboard, live preview, aiming gauge, gate-line editor, serial tail,
check results and recent events. FastAPI + Jinja2; htmx is served from the gateway itself.

Security model: no page without a session except /login; sessions live in HttpOnly SameSite=Strict
cookies (Secure under TLS); every POST carries the session's CSRF token (form field or X-CSRF-Token
header); logins are throttled per client (1/s, 5/min, 20/h); a first-boot password must be changed
before anything else; viewers see the dashboard, checks and events but never the preview, the
editor or the swipe test. Logins, config changes and preview starts are audited.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from edge import __version__
from edge.aim import judge
from edge.console.backend import ConfigRejectedError, ConfigUnwritableError, ConsoleBackend
from edge.console.metrics import ConsoleMetrics
from edge.console.shapes import ZONE_PARAMS, ShapeFormError, format_points, parse_rows
from edge.console.users import ConsoleAuthError, Session, UserStore
from edge.preview import PreviewRequest
from edge.principals import PrincipalRegistry, RegistryError, Role

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
COOKIE = "edgegw_session"
LOGIN_COOKIE = "edgegw_login"
_BOUNDARY = "edgegwframe"
_CSP = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


class _RedirectError(Exception):
    def __init__(self, to: str) -> None:
        self.to = to


class _ForbiddenError(Exception):
    pass


def create_app(backend: ConsoleBackend, users: UserStore, *, secure_cookies: bool, preview_fps: float = 4.0,
               preview_max_height: int = 720, aim_thresholds: dict[str, float] | None = None,
               metrics: ConsoleMetrics | None = None, registry: PrincipalRegistry | None = None) -> FastAPI:
    """The console app over a gateway backend and a user store (its metrics on `app.state.metrics`)."""
    app = FastAPI(title="edgegw console", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    m = metrics or ConsoleMetrics()
    app.state.metrics = m
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    aim = aim_thresholds or {"face_fail": 40, "face_warn": 80, "plate_fail": 15, "plate_warn": 20}
    viewers: dict[str, int] = {}

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.perf_counter()
        response = await call_next(request)
        # The route's template, never the path itself: /camera/{cam_id}, not what a client typed.
        route = getattr(request.scope.get("route"), "path", None)
        if isinstance(route, str) and not route.startswith("/static"):
            m.request_seconds.labels(route, request.method).observe(time.perf_counter() - t0)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(_RedirectError)
    async def redirect(_: Request, exc: _RedirectError) -> Response:
        return RedirectResponse(exc.to, status_code=303)

    @app.exception_handler(_ForbiddenError)
    async def forbidden(request: Request, _: _ForbiddenError) -> Response:
        return templates.TemplateResponse(request, "forbidden.html", {"session": _session(request)}, status_code=403)

    def _session(request: Request) -> Session | None:
        return users.session(request.cookies.get(COOKIE))

    def need(request: Request, *, operator: bool = False, admin: bool = False,
             allow_must_change: bool = False) -> Session:
        s = _session(request)
        if s is None:
            raise _RedirectError("/login")
        if s.must_change and not allow_must_change:
            raise _RedirectError("/password")
        if (operator and not s.may_operate()) or (admin and s.role is not Role.ADMIN):
            raise _ForbiddenError
        return s

    async def csrf_ok(request: Request, s: Session) -> None:
        sent = request.headers.get("x-csrf-token")
        if sent is None:
            form = await request.form()
            value = form.get("csrf")
            sent = value if isinstance(value, str) else None
        if not sent or not hmac.compare_digest(sent, s.csrf):
            raise _ForbiddenError

    def render(request: Request, name: str, s: Session | None, status_code: int = 200, **ctx: Any) -> Response:
        return templates.TemplateResponse(request, name, {"session": s, "version": __version__, **ctx},
                                          status_code=status_code)

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    # -- login ------------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        resp = render(request, "login.html", None, login_csrf=token, error=None)
        resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies, path="/login")
        return resp

    @app.post("/login", response_class=HTMLResponse)
    def login(request: Request, username: str = Form(...), password: str = Form(...),
              csrf: str = Form("")) -> Response:
        expected = request.cookies.get(LOGIN_COOKIE) or ""
        client = client_of(request)
        if not expected or not hmac.compare_digest(csrf, expected):
            m.logins.labels("form_expired").inc()
            return render(request, "login.html", None, 403, login_csrf=expected, error="The form expired: reload.")
        # Per client and user name: one person mistyping does not lock out a whole NATed office.
        wait = users.login_allowed(f"{client}|{username[:64]}")
        if wait:
            m.logins.labels("throttled").inc()
            backend.audit(username[:32] or "-", "console_login_throttled", {"client": client})
            resp = render(request, "login.html", None, 429, login_csrf=expected,
                          error=f"Too many login attempts: wait {wait:.0f} s and try again.")
            resp.headers["Retry-After"] = str(int(wait) + 1)
            return resp
        if not users.verify(username, password):
            m.logins.labels("failed").inc()
            backend.audit(username[:32] or "-", "console_login_failed", {"client": client})
            return render(request, "login.html", None, 401, login_csrf=expected, error="Wrong user name or password.")
        m.logins.labels("ok").inc()
        backend.audit(username, "console_login", {"client": client})
        token = users.open_session(username)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies, path="/")
        resp.delete_cookie(LOGIN_COOKIE, path="/login")
        return resp

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        s = need(request, allow_must_change=True)
        await csrf_ok(request, s)
        users.close_session(request.cookies.get(COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @app.get("/password", response_class=HTMLResponse)
    def password_page(request: Request) -> Response:
        s = need(request, allow_must_change=True)
        return render(request, "password.html", s, error=None)

    @app.post("/password", response_class=HTMLResponse)
    async def password(request: Request) -> Response:
        s = need(request, allow_must_change=True)
        await csrf_ok(request, s)
        form = await request.form()
        old, new, again = (str(form.get(k, "")) for k in ("current", "new", "again"))
        if new != again:
            return render(request, "password.html", s, 400, error="The new passwords differ.")
        try:
            users.change_password(s.name, old, new)
        except ConsoleAuthError as exc:
            return render(request, "password.html", s, 400, error=str(exc))
        backend.audit(s.name, "console_password_change", {})
        return RedirectResponse("/", status_code=303)

    # -- dashboard --------------------------------------------------------------------------------
    def tiles_context() -> dict[str, Any]:
        body = backend.status()
        capture = body.get("components", {}).get("capture", {})
        aim_by_cam: dict[str, Any] = capture.get("aim", {}) if isinstance(capture, dict) else {}
        now = time.time()
        cams = []
        for cam in backend.cameras():
            st = body.get("cameras", {}).get(cam.id, {})
            a = aim_by_cam.get(cam.id, {})
            cams.append({"info": cam, "state": st.get("state", "not running"), "fps": st.get("fps"),
                         "dropped": st.get("frames_dropped"), "error": st.get("last_error"),
                         "aim": a, "verdict": a.get("verdict", "none")})
        ports = []
        for p in backend.serial_ports():
            st = body.get("ports", {}).get(p["id"], {})
            ports.append({**p, "connected": st.get("connected"), "ok": st.get("frames_ok"),
                          "rejected": st.get("frames_rejected"), "error": st.get("last_error")})
        checks = backend.last_checks() or {}
        by_id = {c["id"]: c for c in checks.get("checks", [])}
        storage = body.get("storage", {})
        return {"body": body, "cams": cams, "ports": ports, "capture_age": capture.get("age_s"),
                "clock": by_id.get("time"), "disk": by_id.get("storage"), "models": backend.models(),
                "free_gib": (storage.get("disk_free_bytes") or 0) / 2**30, "now": now}

    @app.get("/", response_class=HTMLResponse)
    def dashboard(request: Request) -> Response:
        s = need(request)
        return render(request, "dashboard.html", s, **tiles_context())

    @app.get("/tiles", response_class=HTMLResponse)
    def tiles(request: Request) -> Response:
        s = need(request)
        return render(request, "_tiles.html", s, **tiles_context())

    # -- preview and aiming -----------------------------------------------------------------------
    def camera(cam_id: str) -> Any:
        for cam in backend.cameras():
            if cam.id == cam_id:
                return cam
        raise _RedirectError("/")

    @app.get("/camera/{cam_id}", response_class=HTMLResponse)
    def camera_page(request: Request, cam_id: str) -> Response:
        s = need(request, operator=True)
        return render(request, "camera.html", s, cam=camera(cam_id))

    @app.get("/camera/{cam_id}/aim", response_class=HTMLResponse)
    def aim_gauge(request: Request, cam_id: str) -> Response:
        s = need(request, operator=True)
        cam = camera(cam_id)
        capture = backend.status().get("components", {}).get("capture", {})
        a = (capture.get("aim", {}) if isinstance(capture, dict) else {}).get(cam_id, {})
        fail, warn = (aim["face_fail"], aim["face_warn"]) if cam.kind == "face" else (aim["plate_fail"],
                                                                                       aim["plate_warn"])
        verdict = judge(a.get("median_px"), fail, warn)
        return render(request, "_aim.html", s, cam=cam, aim=a, verdict=verdict, fail=fail, warn=warn)

    async def frames(request: Request, cam_id: str, overlay: bool, user: str) -> AsyncIterator[bytes]:
        live = backend.live
        req = PreviewRequest(overlay=overlay, fps=preview_fps, max_height=preview_max_height)
        viewers[cam_id] = viewers.get(cam_id, 0) + 1
        m.preview_sessions.inc()
        last_mtime = 0.0
        next_lease = 0.0
        try:
            while not await request.is_disconnected():
                now = time.monotonic()
                if now >= next_lease:
                    live.request(cam_id, req)
                    next_lease = now + 1.0
                got = live.latest(cam_id)
                if got is not None and got[0] != last_mtime and time.time() - got[0] < 5.0:
                    last_mtime = got[0]
                    yield (f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(got[1])}\r\n\r\n"
                           .encode() + got[1] + b"\r\n")
                await asyncio.sleep(0.5 / preview_fps)
        finally:
            m.preview_sessions.dec()
            viewers[cam_id] -= 1
            if viewers[cam_id] <= 0:
                live.release(cam_id)  # nobody watches: capture stops encoding

    @app.get("/camera/{cam_id}/stream.mjpg")
    def stream(request: Request, cam_id: str, overlay: int = 1) -> Response:
        s = need(request, operator=True)
        camera(cam_id)
        backend.audit(s.name, "preview_start", {"camera": cam_id, "overlay": bool(overlay)})
        m.preview_starts.inc()
        return StreamingResponse(frames(request, cam_id, bool(overlay), s.name),
                                 media_type=f"multipart/x-mixed-replace; boundary={_BOUNDARY}")

    @app.get("/camera/{cam_id}/snapshot.jpg")
    async def snapshot(request: Request, cam_id: str) -> Response:
        s = need(request, operator=True)
        camera(cam_id)
        live = backend.live
        req = PreviewRequest(overlay=False, fps=preview_fps, max_height=preview_max_height)
        start = time.time()
        deadline = time.monotonic() + 6.0
        try:
            while time.monotonic() < deadline:
                live.request(cam_id, req)
                got = live.latest(cam_id)
                if got is not None and got[0] >= start - 0.5:
                    return Response(got[1], media_type="image/jpeg")
                await asyncio.sleep(0.2)
        finally:
            if not viewers.get(cam_id):
                live.release(cam_id)
        log.info("no snapshot from %s for %s (is capture running?)", cam_id, s.name)
        return Response(b"no frame from capture: is edgegw-capture running?", status_code=503,
                        media_type="text/plain")

    # -- the gate-line editor ---------------------------------------------------------------------
    @app.get("/camera/{cam_id}/editor", response_class=HTMLResponse)
    def editor(request: Request, cam_id: str) -> Response:
        s = need(request, operator=True)
        cam = camera(cam_id)
        return render(request, "editor.html", s, cam=cam, size=backend.live.size(cam_id), error=None, saved=None)

    @app.post("/camera/{cam_id}/gate-line", response_class=HTMLResponse)
    async def save_line(request: Request, cam_id: str) -> Response:
        s = need(request, operator=True)
        await csrf_ok(request, s)
        cam = camera(cam_id)
        form = await request.form()
        size = backend.live.size(cam_id)
        try:
            ax, ay, bx, by = (float(str(form.get(k, ""))) for k in ("ax", "ay", "bx", "by"))
        except ValueError:
            m.saved("gate_line", "refused")
            return render(request, "editor.html", s, 400, cam=cam, size=size, saved=None,
                          error="every coordinate must be a number of pixels")
        try:
            digest = backend.save_gate_line(cam_id, (ax, ay), (bx, by), s.name)
        except ConfigRejectedError as exc:
            m.saved("gate_line", "unwritable" if isinstance(exc, ConfigUnwritableError) else "refused")
            return render(request, "editor.html", s, 400, cam=cam, size=size, saved=None, error=str(exc))
        m.saved("gate_line", "saved")
        return render(request, "editor.html", s, cam=camera(cam_id), size=size, error=None, saved=digest[:12])

    # -- the zone and mask editor ---------------------------------------------------------------
    def shape_rows(cam: Any, size: tuple[int, int] | None) -> list[dict[str, Any]]:
        w, h = size or (1, 1)
        rows = [{"kind": "zone", **z, "points": format_points(z["polygon"], w, h)} for z in cam.zones]
        rows += [{"kind": "mask", **m, "points": format_points(m["polygon"], w, h)} for m in cam.masks]
        return rows

    def applied(cam_id: str) -> dict[str, Any]:
        capture = backend.status().get("components", {}).get("capture", {})
        if not isinstance(capture, dict) or "zones" not in capture:
            return {"known": False, "zones": [], "masks": 0}
        return {"known": True, "zones": capture.get("zones", {}).get(cam_id, []),
                "masks": capture.get("masks", {}).get(cam_id, 0)}

    def zones_page(request: Request, s: Session, cam: Any, status_code: int = 200, *, error: str | None = None,
                   saved: str | None = None, rows: list[dict[str, Any]] | None = None) -> Response:
        size = backend.live.size(cam.id)
        if size is None and rows is None and (cam.zones or cam.masks):
            # No size, no pixels: better an error than shapes shown (and saved back) at the wrong place.
            return render(request, "zones.html", s, 409, cam=cam, size=None, saved=None, rows=[], locked=True,
                          applied=applied(cam.id), error="no frame from capture yet: the editor needs the "
                          "camera's picture size (is edgegw-capture running?); reload when it runs")
        return render(request, "zones.html", s, status_code, cam=cam, size=size, error=error, saved=saved,
                      rows=rows if rows is not None else shape_rows(cam, size), applied=applied(cam.id))

    async def wait_size(cam_id: str) -> None:
        # The editor shows and takes camera pixels: until capture has sent one frame of this camera its
        # size is unknown, so ask for a frame (as the snapshot does) and wait for it a few seconds.
        if backend.live.size(cam_id) is not None:
            return
        req = PreviewRequest(overlay=False, fps=preview_fps, max_height=preview_max_height)
        deadline = time.monotonic() + 6.0
        try:
            while time.monotonic() < deadline and backend.live.size(cam_id) is None:
                backend.live.request(cam_id, req)
                await asyncio.sleep(0.2)
        finally:
            if not viewers.get(cam_id):
                backend.live.release(cam_id)

    @app.get("/camera/{cam_id}/zones", response_class=HTMLResponse)
    async def zones_editor(request: Request, cam_id: str) -> Response:
        s = need(request, operator=True)
        cam = camera(cam_id)
        await wait_size(cam_id)
        return zones_page(request, s, cam)

    @app.get("/camera/{cam_id}/zones/applied", response_class=HTMLResponse)
    def zones_applied(request: Request, cam_id: str) -> Response:
        s = need(request, operator=True)
        return render(request, "_applied.html", s, cam=camera(cam_id), applied=applied(cam_id))

    @app.post("/camera/{cam_id}/zones", response_class=HTMLResponse)
    async def save_zones(request: Request, cam_id: str) -> Response:
        s = need(request, operator=True)
        await csrf_ok(request, s)
        cam = camera(cam_id)
        form = await request.form()
        columns = {k: [str(v) for v in form.getlist(k)] for k in ("kind", "id", "points", "rule", "note",
                                                                    *ZONE_PARAMS)}
        # What the installer sent comes back as typed, so a refused drawing is not lost.
        sent = [r for r in (dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=False))
                if r["id"].strip() or r["points"].strip()]
        size = backend.live.size(cam_id)
        if size is None:
            m.saved("zones_masks", "refused")
            return zones_page(request, s, cam, 409, rows=sent,
                              error="no frame from capture yet: the editor needs the camera's picture size "
                                    "(is edgegw-capture running?)")
        try:
            zones, masks = parse_rows(columns, size[0], size[1])
            digest = backend.save_shapes(cam_id, zones, masks, s.name)
        except (ShapeFormError, ConfigRejectedError) as exc:
            m.saved("zones_masks", "unwritable" if isinstance(exc, ConfigUnwritableError) else "refused")
            return zones_page(request, s, cam, 400, rows=sent, error=str(exc))
        m.saved("zones_masks", "saved")
        return zones_page(request, s, camera(cam_id), saved=digest[:12])

    # -- principals: one registry for the console and the query door (admins) ---------------------
    def principals_page(request: Request, s: Session, status_code: int = 200, *, error: str | None = None,
                        done: str | None = None) -> Response:
        listed = registry.listed() if registry is not None else []
        return render(request, "principals.html", s, status_code, listed=listed, error=error, done=done,
                      enabled=registry is not None)

    @app.get("/admin/principals", response_class=HTMLResponse)
    def principals(request: Request) -> Response:
        s = need(request, admin=True)
        return principals_page(request, s)

    @app.post("/admin/principals/{name}/{action}", response_class=HTMLResponse)
    async def principal_action(request: Request, name: str, action: str) -> Response:
        s = need(request, admin=True)
        await csrf_ok(request, s)
        if registry is None or action not in ("revoke", "restore"):
            return principals_page(request, s, 404, error="no such action")
        if action == "revoke" and name == s.name:
            return principals_page(request, s, 400, error="an admin cannot revoke themself: ask another admin")
        try:
            if action == "revoke":
                registry.revoke(name, s.name)
            else:
                registry.restore(name)
        except RegistryError as exc:
            return principals_page(request, s, 400, error=str(exc))
        backend.audit(s.name, f"principal_{action}", {"principal": name})
        return principals_page(request, s, done=f"{name} {'revoked everywhere' if action == 'revoke' else 'restored'}")

    # -- serial -----------------------------------------------------------------------------------
    @app.get("/serial", response_class=HTMLResponse)
    def serial_page(request: Request) -> Response:
        s = need(request, operator=True)
        return render(request, "serial.html", s, started=time.time(), **tiles_context())

    @app.get("/serial/swipes", response_class=HTMLResponse)
    def swipes(request: Request, since: float = 0.0) -> Response:
        s = need(request, operator=True)
        backend.live.request_swipes()  # the page polls: the lease stays fresh while it is open
        return render(request, "_swipes.html", s, swipes=list(reversed(backend.live.swipes(since))))

    # -- checks and events ------------------------------------------------------------------------
    @app.get("/checks", response_class=HTMLResponse)
    def checks_page(request: Request) -> Response:
        s = need(request)
        return render(request, "checks.html", s, result=backend.last_checks())

    @app.post("/checks/run", response_class=HTMLResponse)
    async def checks_run(request: Request) -> Response:
        s = need(request, operator=True)
        await csrf_ok(request, s)
        result = await asyncio.to_thread(backend.run_checks)
        backend.audit(s.name, "console_check_run", {"status": str(result.get("summary", {}).get("status"))})
        return render(request, "checks.html", s, result=result)

    @app.get("/events", response_class=HTMLResponse)
    def events(request: Request) -> Response:
        s = need(request)
        return render(request, "events.html", s, events=backend.recent_events())

    @app.get("/api/status")
    def api_status(request: Request) -> Response:
        need(request)
        return JSONResponse(tiles_context()["body"])

    return app
