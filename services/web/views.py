"""The dashboard's HTML pages and forms. Server-rendered, complete without JavaScript;
``static/dashboard.js`` only refreshes the live part of a page and asks before acting.

Each page reads the same read model as its ``/api`` twin. Forms post to the routes
below and are answered with a redirect back to the page (post/redirect/get).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.store import pages as read
from services.store.audit import audit_entries
from services.store.views import history
from services.vocabulary import RERUNNABLE_FIRE_STATUSES, ScheduleFilter
from services.web import actions
from services.web.auth import (
    COOKIE,
    CSRF_FIELD,
    SESSION_SECONDS,
    Principal,
    actor,
    issue_session,
    page_viewer,
    poster,
    principal,
    same_origin,
)
from services.web.charts import bar_chart, human_ms
from services.web.dashboard import Dashboard

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Fires per page of a schedule's history.
FIRES_PER_PAGE = 25


def short_time(value: str | None) -> str:
    """ "2026-11-29T09:38:53.196662Z" → "2026-11-29 09:38:53" (pages say UTC once)."""
    if not value:
        return "-"
    return value.replace("T", " ").removesuffix("Z").split(".", 1)[0]


def local_time(value: str | None, zone: str) -> str:
    """An ISO UTC time in a schedule's own zone: "02:30 CET" (what its trigger says)."""
    if not value:
        return ""
    when = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(ZoneInfo(zone))
    return when.strftime("%a %H:%M %Z")


env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters["ms"] = human_ms
env.filters["short"] = short_time
env.filters["local"] = local_time
env.globals.update(
    CSRF_FIELD=CSRF_FIELD, FILTERS=list(ScheduleFilter), RERUNNABLE=RERUNNABLE_FIRE_STATUSES
)

router = APIRouter(include_in_schema=False)


Viewer = Annotated[Principal, Depends(page_viewer)]


def render(
    request: Request,
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    who = principal(request) if hasattr(request.app.state, "dashboard") else None
    html = env.get_template(template).render(who=who, path=request.url.path, **context)
    return HTMLResponse(html, status_code, headers=headers)


def render_error(
    request: Request, status_code: int, detail: str, headers: dict[str, str] | None = None
) -> HTMLResponse:
    return render(request, "error.html", status_code, headers, code=status_code, detail=detail)


def dash_of(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


# -- pages ----------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def schedules_page(
    request: Request,
    who: Viewer,
    q: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(max_length=16)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    dash = dash_of(request)
    if status and status not in set(ScheduleFilter):
        raise HTTPException(422, f"unknown status filter {status!r}")
    # The form's "all" sends an empty status.
    wanted = ScheduleFilter(status) if status else None
    query = read.SchedulesQuery(q=q, status=wanted, page=page)
    data = read.schedules_page(dash.engine, dash.specs, query, dash.settings.lease_ttl)
    return render(request, "schedules.html", data=data)


@router.get("/schedules/{name}", response_class=HTMLResponse)
def schedule_page(
    request: Request,
    who: Viewer,
    name: str,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> HTMLResponse:
    dash = dash_of(request)
    data = read.schedule_detail(dash.engine, dash.specs, name)
    if data is None:
        raise HTTPException(404, f"no schedule named {name!r} and no fires of it")
    fires = history(dash.engine, name, FIRES_PER_PAGE, before)
    return render(
        request,
        "schedule.html",
        data=data,
        fires=fires,
        next_before=fires[-1]["id"] if len(fires) == FIRES_PER_PAGE else None,
        durations=bar_chart(data["recent"], "duration_ms"),
        delays=bar_chart(data["recent"], "delay_ms"),
    )


@router.get("/fires/{fire_id}", response_class=HTMLResponse)
def fire_page(request: Request, who: Viewer, fire_id: int) -> HTMLResponse:
    dash = dash_of(request)
    data = read.fire_detail(dash.engine, dash.specs, fire_id)
    if data is None:
        raise HTTPException(404, f"no fire {fire_id}")
    return render(request, "fire.html", data=data)


@router.get("/incidents", response_class=HTMLResponse)
def incidents_page(
    request: Request,
    who: Viewer,
    resolved: bool | None = None,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> HTMLResponse:
    found = read.incidents_list(dash_of(request).engine, resolved=resolved, before=before)
    return render(request, "incidents.html", incidents=found, resolved=resolved)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    who: Viewer,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> HTMLResponse:
    entries = audit_entries(dash_of(request).engine, limit=100, before_id=before)
    return render(request, "audit.html", entries=entries)


# -- logging in -------------------------------------------------------------------------


def _local(target: str | None) -> str:
    """Only paths of this site: never an open redirect to another."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request,
    token: Annotated[str | None, Query(max_length=200)] = None,
    next: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response:
    if token:  # the printed login URL
        return _log_in(request, token, "", _local(next))
    return render(request, "login.html", next=_local(next))


@router.post("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    form = await request.form()
    if request.headers.get("origin") and not same_origin(request):
        raise HTTPException(403, "refused: the login did not come from this dashboard's origin")
    token, name = str(form.get("token") or ""), str(form.get("name") or "")
    return _log_in(request, token, name, _local(str(form.get("next") or "/")))


def _log_in(request: Request, token: str, name: str, target: str) -> Response:
    tokens = dash_of(request).tokens
    role = tokens.role_of(token.strip())
    if role is None:
        return render(request, "login.html", 401, next=target, failed=True)
    response = RedirectResponse(target, 303)
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    response.set_cookie(
        COOKIE,
        issue_session(tokens, role, name),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request, who: Annotated[Principal, Depends(poster)]) -> Response:
    response = RedirectResponse("/login", 303)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- actions --------------------------------------------------------------------------


Actor = Annotated[Principal, Depends(actor)]


async def _field(request: Request, name: str) -> str:
    return str((await request.form()).get(name) or "")


def _back_to(name: str) -> RedirectResponse:
    return RedirectResponse(f"/schedules/{quote(name, safe='')}#audit", 303)


@router.post("/schedules/{name}/trigger")
async def trigger(request: Request, who: Actor, name: str) -> Response:
    reason = await _field(request, "reason")
    await run_in_threadpool(actions.trigger, dash_of(request), name, who.who, reason)
    return _back_to(name)


@router.post("/schedules/{name}/pause")
async def pause(request: Request, who: Actor, name: str) -> Response:
    reason, until = await _field(request, "reason"), await _field(request, "until")
    await run_in_threadpool(actions.pause, dash_of(request), name, who.who, reason, until)
    return _back_to(name)


@router.post("/schedules/{name}/resume")
async def resume(request: Request, who: Actor, name: str) -> Response:
    reason = await _field(request, "reason")
    await run_in_threadpool(actions.resume, dash_of(request), name, who.who, reason)
    return _back_to(name)


@router.post("/fires/{fire_id}/rerun")
async def rerun(request: Request, who: Actor, fire_id: int) -> Response:
    reason = await _field(request, "reason")
    fire = await run_in_threadpool(actions.rerun_fire, dash_of(request), fire_id, who.who, reason)
    return RedirectResponse(f"/fires/{fire.id}", 303)
