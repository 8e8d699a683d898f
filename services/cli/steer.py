"""The commands that steer schedules: trigger, pause, resume; and ``audit``, which lists them.

Every one of them writes an audit row (who, when, what, why), as the dashboard does.
"""

from __future__ import annotations

import argparse
import getpass
import socket
from zoneinfo import ZoneInfo

from services.cli.common import find_spec, masked, open_engine, print_json, print_table
from services.redact import shown
from services.settings import Settings


def cli_actor() -> str:
    """Who a CLI action is credited to in the audit: ``cli:user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def add_steer_options(parsers: dict[str, argparse.ArgumentParser]) -> None:
    """The options of trigger, pause and resume (the parser is built in services.cli)."""
    parsers["pause"].add_argument(
        "--reason", required=True, help="why (required: it is shown in the audit and status)"
    )
    parsers["pause"].add_argument(
        "--until",
        help="resume by itself then: an ISO time (naive = the schedule's zone) or a "
        "duration from now (30m, 2h, 1d)",
    )
    for name in ("trigger", "resume"):
        parsers[name].add_argument("--reason", help="why (shown in the audit)")


def cmd_trigger(settings: Settings, args: argparse.Namespace) -> int:
    from services.runtime import load_schedule_file, prepare_broker
    from services.scheduler.manual import fire_now
    from services.vocabulary import FireStatus

    schedule_file = load_schedule_file(settings)
    spec = find_spec(settings, args.name, schedule_file.schedules)
    engine = open_engine(settings)
    # Embedded: the in-memory queue lives in the running `cronwork up`, which sends it.
    broker = None if settings.embedded else prepare_broker(settings, schedule_file)
    fire = fire_now(engine, spec, who=cli_actor(), broker=broker, reason=args.reason)
    if settings.embedded:
        print(
            f"fired {spec.name} (fire {fire.id}); the running `cronwork up` sends it within seconds"
        )
        return 0
    where = (
        FireStatus.ENQUEUED.value
        if fire.enqueued
        else f"{FireStatus.PENDING.value} (broker unreachable; the leader re-sends it)"
    )
    print(f"fired {spec.name} (fire {fire.id}): {where}")
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from services.adhoc import send_tracked_with
    from services.runtime import load_schedule_file, prepare_broker

    # The actor modules schedules.yaml imports are the ones a run can name.
    broker = prepare_broker(settings, load_schedule_file(settings))
    run = send_tracked_with(
        args.name,
        args.args,
        args.kwargs,
        key=args.key,
        broker=broker,
        engine=open_engine(settings),
        who=cli_actor(),
        # Embedded: the in-memory queue lives in the running `cronwork up`, which sends it.
        send=not settings.embedded,
    )
    if args.json:
        shape = {
            "fire_id": run.fire_id,
            "message_id": run.message_id,
            "actor": run.actor,
            "key": run.key,
            "duplicate": run.duplicate,
            "status": run.status.value,
        }
        print_json(masked(shape))
    elif run.duplicate:
        print(shown(f"duplicate of fire {run.fire_id} ({run.status.value}): key {run.key} is held"))
    else:
        where = run.status.value
        if not run.enqueued:
            where += " (the leader sends it within seconds)"
        print(shown(f"sent {run.actor}: fire {run.fire_id}, message {run.message_id}, {where}"))
    return 0


def cmd_pause(settings: Settings, args: argparse.Namespace) -> int:
    from services.store.schedule_rows import set_paused
    from services.timeutil import iso, parse_until, utcnow

    spec = find_spec(settings, args.name)
    until = parse_until(args.until, utcnow(), ZoneInfo(spec.timezone)) if args.until else None
    set_paused(open_engine(settings), spec, True, who=cli_actor(), reason=args.reason, until=until)
    if until is None:
        print(f"paused {args.name}: it will not fire until `cronwork resume {args.name}`")
    else:
        print(f"paused {args.name} until {iso(until)}; it fires again by itself after that")
    return 0


def cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    from services.store.schedule_rows import set_paused

    spec = find_spec(settings, args.name)
    set_paused(open_engine(settings), spec, False, who=cli_actor(), reason=args.reason)
    print(f"resumed {args.name}")
    return 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from services.store.audit import audit_entries

    entries = audit_entries(open_engine(settings), schedule=args.schedule, limit=args.limit)
    if args.json:
        print_json(entries)
        return 0
    if not entries:
        print("no audited actions")
        return 0
    rows = [("AT", "WHO", "ACTION", "SCHEDULE", "FIRE", "REASON")]
    for e in entries:
        fire = "-" if e["fire_id"] is None else str(e["fire_id"])
        rows.append((e["at"], e["who"], e["action"], e["schedule"], fire, e["reason"] or ""))
    print_table(rows)
    return 0
