"""The commands that steer schedules: trigger, pause, resume."""

from __future__ import annotations

import argparse

from services.cli.common import find_spec, open_engine
from services.errors import CronworkError
from services.settings import Settings


def cmd_trigger(settings: Settings, args: argparse.Namespace) -> int:
    from services.runtime import load_schedule_file, prepare_broker
    from services.scheduler.dispatch import Dispatcher
    from services.store.fence import Fence, request
    from services.timeutil import utcnow
    from services.vocabulary import FireKind, FireStatus

    schedule_file = load_schedule_file(settings)
    spec = find_spec(settings, args.name, schedule_file.schedules)
    engine = open_engine(settings)
    fence = Fence(engine, f"cli:{settings.instance_id}")
    won = fence.claim([request(spec, utcnow(), FireKind.MANUAL)])
    if not won:
        raise CronworkError(f"could not record a manual fire of '{spec.name}'")
    fire = won[0]
    if settings.embedded:
        print(
            f"fired {spec.name} (fire {fire.id}); the running `cronwork up` sends it within seconds"
        )
        return 0
    broker = prepare_broker(settings, schedule_file)
    sent = Dispatcher(broker, fence).send(won)
    where = (
        FireStatus.ENQUEUED.value
        if sent
        else f"{FireStatus.PENDING.value} (broker unreachable; the leader re-sends it)"
    )
    print(f"fired {spec.name} (fire {fire.id}): {where}")
    return 0


def _set_paused(settings: Settings, name: str, paused: bool) -> None:
    from services.store.schedule_rows import set_paused

    set_paused(open_engine(settings), find_spec(settings, name), paused)


def cmd_pause(settings: Settings, args: argparse.Namespace) -> int:
    _set_paused(settings, args.name, True)
    print(f"paused {args.name}: it will not fire until `cronwork resume {args.name}`")
    return 0


def cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    _set_paused(settings, args.name, False)
    print(f"resumed {args.name}")
    return 0
