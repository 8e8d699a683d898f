"""The web app: probes and metrics always, the dashboard and its API where a process
serves one (``scheduler``, ``up``, ``web``; not the worker).

Every response carries a strict Content-Security-Policy (scripts, styles and images from
this origin only, no inline script or style, no framing), ``nosniff``, no referrer to
other sites and a ``Server-Timing`` header with the time the app spent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from services.redact import redact
from services.web.auth import LoginRequired
from services.web.dashboard import Dashboard
from services.web.health import Check, probe_router

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Never to other sites; same-origin keeps the Origin header on our own form posts
    # (with no-referrer, Chromium sends "Origin: null" and the Origin check refuses).
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def create_app(live: Check, ready: Check, dashboard: Dashboard | None = None) -> FastAPI:
    app = FastAPI(
        title="cronwork",
        summary="Schedules, fires, attempts, incidents and audit of a cronwork deployment.",
        version=_version(),
        # Swagger UI and ReDoc load scripts from a CDN: the CSP (and no internet) forbid.
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json" if dashboard is not None else None,
    )
    app.include_router(probe_router(live, ready))
    app.middleware("http")(_headers)
    if dashboard is None:
        return app

    from services.web import api, views

    app.state.dashboard = dashboard
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(api.router)
    app.include_router(views.router)
    app.add_exception_handler(LoginRequired, _to_login)
    app.add_exception_handler(HTTPException, _refused)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _failed)
    return app


async def _headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    if not request.url.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _to_login(request: Request, exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)


async def _refused(request: Request, exc: HTTPException) -> Response:
    detail = redact(str(exc.detail))
    if _wants_json(request):
        return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)
    from services.web.views import render_error

    return render_error(request, exc.status_code, detail, headers=dict(exc.headers or {}))


async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    # Field locations and messages only: the input itself may hold anything.
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
        for e in exc.errors()
    )
    return await _refused(request, HTTPException(422, redact(problems) or "invalid request"))


async def _failed(request: Request, exc: Exception) -> Response:
    # Logged redacted, answered without details: an error text may hold a URL.
    logger.error("dashboard error on %s: %s", request.url.path, redact(repr(exc)), exc_info=exc)
    return await _refused(request, HTTPException(500, "internal error (logged)"))


def _version() -> str:
    from services import __version__

    return str(__version__)
