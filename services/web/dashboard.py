"""What the dashboard needs from the process that serves it, built in the entry point."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import dramatiq
from sqlalchemy import Engine

from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.web.auth import Tokens


@dataclass
class Dashboard:
    settings: Settings
    engine: Engine
    specs: dict[str, ScheduleSpec]
    #: Sends manual fires at once; None leaves them pending for the leader to send
    #: (``cronwork web`` beside an embedded ``cronwork up`` has no queue of its own).
    broker: dramatiq.Broker | None
    tokens: Tokens = field(repr=False)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        engine: Engine,
        specs: dict[str, ScheduleSpec],
        broker: dramatiq.Broker | None,
    ) -> Dashboard:
        return cls(settings, engine, specs, broker, Tokens.from_settings(settings))

    def announce(self, host: str, port: int) -> None:
        """Print the login URL once, when the admin token was made up at start.

        Printed, not logged: the one place a token is shown on purpose, like a notebook
        server's, so `make run` opens the dashboard with one click.
        """
        if not self.tokens.generated:
            return
        shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        if ":" in shown:
            shown = f"[{shown}]"
        print(
            "cronwork dashboard (no CRONWORK_DASHBOARD_TOKEN set; this login works until "
            f"the process stops):\n    http://{shown}:{port}/login?token={self.tokens.admin}",
            file=sys.stderr,
            flush=True,
        )
