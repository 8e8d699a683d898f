"""The dashboard's actions, shared by the HTML forms and the JSON API.

Each is the same function the CLI calls (services/scheduler/manual.py,
services/store/schedule_rows.py), so a trigger, pause, resume or re-run is fenced and
audited the same way wherever it comes from. Refusals are HTTP errors that say why.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from fastapi import HTTPException

from services.errors import TimeInputError, UnknownSchedule
from services.scheduler.manual import FireNotFound, ManualFire, NotRerunnable, fire_now, rerun
from services.schedules.spec import ScheduleSpec
from services.store.audit import MAX_REASON_CHARS
from services.store.schedule_rows import set_paused
from services.timeutil import parse_until, utcnow
from services.web.dashboard import Dashboard


def spec_of(dash: Dashboard, name: str) -> ScheduleSpec:
    spec = dash.specs.get(name)
    if spec is None:
        raise HTTPException(404, f"no schedule named {name!r} in schedules.yaml")
    return spec


def _reason(reason: str | None, *, required: bool) -> str | None:
    text = (reason or "").strip()
    if required and not text:
        raise HTTPException(422, "a reason is required")
    if len(text) > MAX_REASON_CHARS:
        raise HTTPException(422, f"the reason is longer than {MAX_REASON_CHARS} characters")
    return text or None


def trigger(dash: Dashboard, name: str, who: str, reason: str | None) -> ManualFire:
    spec = spec_of(dash, name)
    return fire_now(
        dash.engine,
        spec,
        who=who,
        broker=dash.broker,
        reason=_reason(reason, required=False),
    )


def pause(dash: Dashboard, name: str, who: str, reason: str | None, until: str | None) -> None:
    spec = spec_of(dash, name)
    why = _reason(reason, required=True)
    end = None
    if until and until.strip():
        try:
            end = parse_until(until, utcnow(), ZoneInfo(spec.timezone))
        except TimeInputError as exc:
            raise HTTPException(422, str(exc)) from None
    set_paused(dash.engine, spec, True, who=who, reason=why, until=end)


def resume(dash: Dashboard, name: str, who: str, reason: str | None) -> None:
    spec = spec_of(dash, name)
    set_paused(dash.engine, spec, False, who=who, reason=_reason(reason, required=False))


def rerun_fire(dash: Dashboard, fire_id: int, who: str, reason: str | None) -> ManualFire:
    try:
        return rerun(
            dash.engine,
            dash.specs,
            fire_id,
            who=who,
            broker=dash.broker,
            reason=_reason(reason, required=False),
        )
    except FireNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except (NotRerunnable, UnknownSchedule) as exc:
        raise HTTPException(409, str(exc)) from None
