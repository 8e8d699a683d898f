"""The JSON API under ``/api``: every page's data, and the actions.

Reads take a bearer token (admin or read-only) or a browser session; actions take the
admin token, or an admin session with its CSRF token (services/web/auth.py). The
OpenAPI document is served at ``/api/openapi.json``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BeforeValidator

from services.store import pages as read
from services.store.audit import audit_entries
from services.store.views import history, schedules_of
from services.timeutil import iso
from services.vocabulary import FireKind, FireStatus, ScheduleFilter
from services.web import actions, schemas
from services.web.auth import Principal, actor, api_viewer
from services.web.dashboard import Dashboard

Viewer = Annotated[Principal, Depends(api_viewer)]
Actor = Annotated[Principal, Depends(actor)]
Name = Annotated[str, Path(min_length=1, max_length=64)]
FireId = Annotated[int, Path(ge=1, le=2**62)]
Limit = Annotated[int, Query(ge=1, le=200)]
#: RFC 3339, as the document's ``date-time`` says: pydantic alone also takes a number
#: (seconds since the epoch) or a bare date, which the document calls invalid.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def rfc3339(value: Any) -> Any:
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("expected an RFC 3339 time like 2026-11-01T00:00:00Z")
    return value


Before = Annotated[int | None, Query(ge=1, le=2**62, description="an id from the last page")]

REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.Problem, "description": "no token or session"},
    403: {"model": schemas.Problem, "description": "read-only, or a bad CSRF token or Origin"},
}


def known_query(request: Request) -> None:
    """Refuse a query parameter the route does not declare (the document allows none).

    A misspelt filter (``?stauts=failed``) would otherwise be ignored, and the page
    answered unfiltered as if it were the one asked for."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    declared = _query_names(dependant)
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        raise HTTPException(422, f"unknown query parameter(s): {', '.join(map(repr, unknown))}")


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


router = APIRouter(
    prefix="/api",
    dependencies=[Depends(known_query)],
    # One error shape for every refusal, invalid input included: {"detail": "what"}.
    responses={
        400: {"model": schemas.Problem, "description": "a body that is not JSON"},
        401: REFUSALS[401],
        422: {"model": schemas.Problem, "description": "invalid parameters or body"},
    },
)


def dash_of(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


@router.get("/schedules", response_model=schemas.SchedulesPage)
def list_schedules(
    request: Request,
    _: Viewer,
    q: Annotated[str, Query(max_length=64, description="part of a name")] = "",
    status: ScheduleFilter | None = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    dash = dash_of(request)
    query = read.SchedulesQuery(q=q, status=status, page=page, per_page=per_page)
    return read.schedules_page(dash.engine, dash.specs, query, dash.settings.lease_ttl)


@router.get(
    "/schedules/{name}",
    response_model=schemas.ScheduleDetail,
    responses={404: {"model": schemas.Problem}},
)
def get_schedule(request: Request, _: Viewer, name: Name) -> dict[str, Any]:
    dash = dash_of(request)
    found = read.schedule_detail(dash.engine, dash.specs, name)
    if found is None:
        raise HTTPException(404, f"no schedule named {name!r} and no fires of it")
    return found


@router.get("/fires", response_model=schemas.FirePage)
def list_fires(
    request: Request,
    _: Viewer,
    schedule: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 20,
    before: Before = None,
    actor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="ad-hoc runs of this actor and fires of the schedules that run it",
        ),
    ] = None,
    status: FireStatus | None = None,
    kind: FireKind | None = None,
    since: Annotated[
        datetime | None,
        BeforeValidator(rfc3339),
        Query(description="scheduled at or after this RFC 3339 time, e.g. 2026-11-01T00:00:00Z"),
    ] = None,
) -> dict[str, Any]:
    """Newest first, each with its attempts (the shape of ``cronwork history --json``)."""
    dash = dash_of(request)
    found = history(
        dash.engine,
        schedule,
        limit,
        before,
        actor=actor,
        actor_schedules=schedules_of(dash.specs.values(), actor) if actor else (),
        status=status,
        kind=kind,
        since=since,
    )
    return {"fires": found, "next_before": found[-1]["id"] if len(found) == limit else None}


@router.get(
    "/fires/{fire_id}",
    response_model=schemas.FireDetail,
    responses={404: {"model": schemas.Problem}},
)
def get_fire(request: Request, _: Viewer, fire_id: FireId) -> dict[str, Any]:
    dash = dash_of(request)
    found = read.fire_detail(dash.engine, dash.specs, fire_id)
    if found is None:
        raise HTTPException(404, f"no fire {fire_id}")
    return found


@router.get("/incidents", response_model=list[schemas.IncidentOut])
def list_incidents(
    request: Request,
    _: Viewer,
    resolved: Annotated[bool | None, Query(description="omit for both")] = None,
    limit: Limit = 50,
    before: Before = None,
) -> list[dict[str, Any]]:
    return read.incidents_list(
        dash_of(request).engine, resolved=resolved, limit=limit, before=before
    )


@router.get("/audit", response_model=list[schemas.AuditEntry])
def list_audit(
    request: Request,
    _: Viewer,
    schedule: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    before: Before = None,
) -> list[dict[str, Any]]:
    """Newest first (the shape of ``cronwork audit --json``)."""
    return audit_entries(dash_of(request).engine, schedule=schedule, limit=limit, before_id=before)


ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: REFUSALS[403],
    404: {"model": schemas.Problem},
}


@router.post(
    "/schedules/{name}/trigger",
    response_model=schemas.ManualFireOut,
    status_code=201,
    responses=ACTION_RESPONSES,
)
def trigger(
    request: Request, who: Actor, name: Name, body: schemas.ReasonIn | None = None
) -> dict[str, Any]:
    """Fire now, with the schedule's configured arguments (kind ``manual``; runs even
    while paused)."""
    fire = actions.trigger(dash_of(request), name, who.who, body.reason if body else None)
    return _manual(fire)


@router.post(
    "/schedules/{name}/pause",
    response_model=schemas.Done,
    responses=ACTION_RESPONSES,
)
def pause(request: Request, who: Actor, name: Name, body: schemas.PauseIn) -> dict[str, Any]:
    dash = dash_of(request)
    actions.pause(dash, name, who.who, body.reason, body.until)
    row = read.schedule_detail(dash.engine, dash.specs, name)
    pause_ = (row or {}).get("schedule", {}).get("pause") or {}
    return {"schedule": name, "paused": True, "until": pause_.get("until")}


@router.post("/schedules/{name}/resume", response_model=schemas.Done, responses=ACTION_RESPONSES)
def resume(
    request: Request, who: Actor, name: Name, body: schemas.ReasonIn | None = None
) -> dict[str, Any]:
    actions.resume(dash_of(request), name, who.who, body.reason if body else None)
    return {"schedule": name, "paused": False}


@router.post(
    "/fires/{fire_id}/rerun",
    response_model=schemas.ManualFireOut,
    status_code=201,
    responses={**ACTION_RESPONSES, 409: {"model": schemas.Problem}},
)
def rerun(
    request: Request, who: Actor, fire_id: FireId, body: schemas.ReasonIn | None = None
) -> dict[str, Any]:
    """A new manual fire for a failed, timed-out, abandoned or missed one; the new fire's
    ``rerun_of`` names it."""
    fire = actions.rerun_fire(dash_of(request), fire_id, who.who, body.reason if body else None)
    return _manual(fire)


def _manual(fire: Any) -> dict[str, Any]:
    return {
        "fire_id": fire.id,
        "schedule": fire.schedule,
        "scheduled_for": iso(fire.scheduled_for),
        "enqueued": fire.enqueued,
    }
