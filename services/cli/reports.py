"""The commands that show what cronwork did and will do: next, status, history, incidents."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from services.cli.common import (
    find_spec,
    load_specs,
    masked,
    open_engine,
    print_json,
    print_table,
)
from services.errors import CronworkError
from services.redact import shown
from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.timeutil import iso


def cmd_next(settings: Settings, args: argparse.Namespace) -> int:
    from services.schedules.triggers import build_trigger

    spec = find_spec(settings, args.name)
    after: datetime = args.after or datetime.now(UTC)
    if after.tzinfo is None:
        after = after.replace(tzinfo=ZoneInfo(spec.timezone))
    times: list[datetime] = []
    try:
        trigger = build_trigger(spec)
        t = trigger.get_next_fire_time(None, after)
        while t is not None and len(times) < args.n:
            times.append(t)
            t = trigger.get_next_fire_time(t, t)
    except (OverflowError, ValueError) as exc:
        # Past year 9999, or a trigger `check` let through: say so, with what was found.
        if not times:
            raise CronworkError(f"cannot compute fire times of '{spec.name}': {exc}") from None
    if args.json:
        print_json([iso(t) for t in times])
        return 0
    zone = ZoneInfo(spec.timezone)
    for t in times:
        local = t.astimezone(zone)
        print(f"{iso(t)}  {local:%Y-%m-%d %H:%M:%S %Z} ({spec.timezone})")
    if not times:
        print(f"{spec.name} has no fire times after {iso(after)}")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from services.store.views import STRIP_LENGTH, status

    # The table shows each schedule's newest fire only: reading 20 of them for every one
    # of 1,000 schedules was three quarters of the command's time.
    strip_length = STRIP_LENGTH if args.json else 1
    engine = open_engine(settings, read_only=True)
    data = status(engine, load_specs(settings), settings.lease_ttl, strip_length=strip_length)
    if args.json:
        print_json(data)
        return 0
    lead = data["leader"]
    print(f"leader: {lead['instance_id']} since {lead['since']}" if lead else "leader: none")
    rows = [("SCHEDULE", "TRIGGER", "ZONE", "NEXT RUN", "LAST", "DURATION")]
    for s in data["schedules"]:
        state = (
            "paused" if s["paused"] else ("disabled" if not s["enabled"] else s["next_run"] or "-")
        )
        if s.get("broken"):
            state = "broken (see cronwork incidents)"
        last = s["last_fire"] or {}
        dur = last.get("duration_ms")
        rows.append(
            (
                s["name"],
                s["trigger"],
                s["timezone"],
                state,
                last.get("status", "-"),
                "-" if dur is None else f"{dur}ms",
            )
        )
    print_table(rows)
    return 0


def cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    from services.store.views import history, schedules_of

    specs = _specs_for_history(settings, args)
    since: datetime | None = args.since
    if since is not None and since.tzinfo is None:
        spec = specs.get(args.schedule or "")
        since = since.replace(tzinfo=ZoneInfo(spec.timezone) if spec else UTC)
    found = history(
        open_engine(settings, read_only=True),
        args.schedule,
        args.limit,
        actor=args.actor,
        actor_schedules=schedules_of(specs.values(), args.actor) if args.actor else (),
        status=args.status,
        kind=args.kind,
        since=since,
    )
    # Masked again on the way out: rows stored before a secret was configured (or
    # before masking by value existed) still hold it.
    data = masked(found)
    if args.json:
        print_json(data)
        return 0
    keyed = any(f["idempotency_key"] for f in data)
    header: tuple[str, ...] = ("SCHEDULED FOR", "SCHEDULE", "KIND", "STATUS", "ATTEMPTS", "ERROR")
    rows: list[tuple[str, ...]] = [header + (("KEY",) if keyed else ())]
    for f in data:
        err = (f["error"] or "").splitlines()[0][:60] if f["error"] else ""
        row = (
            f["scheduled_for"],
            f["schedule"],
            f["kind"],
            f["status"],
            str(len(f["attempts"])),
            err,
        )
        rows.append(row + ((f["idempotency_key"] or "",) if keyed else ()))
    print_table(rows)
    return 0


def _specs_for_history(settings: Settings, args: argparse.Namespace) -> dict[str, ScheduleSpec]:
    """The schedules, when a filter needs them (--actor: which schedules run it; a naive
    --since: the schedule's zone). History stays readable without a valid schedules.yaml:
    then --actor finds ad-hoc runs only, and says so."""
    if not args.actor and not (args.since is not None and args.schedule):
        return {}
    try:
        return load_specs(settings)
    except (CronworkError, OSError) as exc:
        print(
            f"cronwork: {shown(str(settings.schedules_file))} unreadable ({type(exc).__name__}):"
            " --actor finds ad-hoc runs only",
            file=sys.stderr,
        )
        return {}


def cmd_incidents(settings: Settings, args: argparse.Namespace) -> int:
    from services.store.incidents import IncidentStore

    store = IncidentStore(open_engine(settings, read_only=True))
    found = store.list(include_resolved=args.all, limit=args.limit)
    if args.json:
        print_json(masked([inc.to_json() for inc in found]))
        return 0
    if not found:
        print("no open incidents" if not args.all else "no incidents")
        return 0
    rows = [("ID", "KIND", "SCHEDULE", "OPENED", "RESOLVED", "COUNT", "SUBJECT")]
    for inc in found:
        rows.append(
            (
                str(inc.id),
                inc.kind,
                inc.schedule,
                iso(inc.opened_at) or "-",
                iso(inc.resolved_at) or "open",
                str(inc.count),
                inc.subject or "",
            )
        )
    print_table(rows)
    return 0
