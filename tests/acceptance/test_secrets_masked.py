"""An actor error holding the configured Sentry DSN is masked where it is stored and shown
(issue 9.6). The DSN's key here is not hex, so no pattern recognises it: on main the logs
masked it (they are handed the configured values) but ``history --json`` and
``incidents --json`` printed it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from services.store.engines import make_engine
from services.store.tables import attempts, fires, incidents
from tests.acceptance.conftest import Cronwork
from tests.integration.alert_servers import SentryServer
from tests.waiting import wait_for

KEY = "cw-public-key-7f3a9c"
LEAKY_ACTORS = """
import os

import dramatiq


@dramatiq.actor
def leak():
    dsn = os.environ["CRONWORK_SENTRY_DSN"]
    raise RuntimeError(f"cannot report to {dsn} (key {dsn.split('//')[1].split('@')[0]})")
"""


@pytest.fixture
def sentry() -> Iterator[SentryServer]:
    server = SentryServer()
    server.key = KEY
    yield server
    server.close()


def test_an_actor_error_with_the_configured_dsn_is_masked_everywhere(
    cronwork: Cronwork, sentry: SentryServer
) -> None:
    cronwork.env["CRONWORK_SENTRY_DSN"] = sentry.dsn
    (cronwork.root / "leaky_actors.py").write_text(LEAKY_ACTORS)
    cronwork.write_schedules(
        """
        imports: [leaky_actors]
        schedules:
          leak:
            actor: leak
            at: "2030-01-01T00:00:00Z"
            max_retries: 0
        """
    )
    engine = make_engine(cronwork.env["CRONWORK_DATABASE_URL"])
    up = cronwork.start("up", name="up-1")
    try:
        wait_for(
            lambda: "took the scheduler lease" in cronwork.log("up-1"),
            timeout=30,
            what="leadership",
        )
        fired = cronwork.run("trigger", "leak")
        assert fired.returncode == 0, fired.stderr

        def failed() -> bool:
            with engine.connect() as conn:
                done = conn.execute(select(fires.c.status).where(fires.c.status == "failed"))
                found = conn.execute(select(incidents.c.id)).first()
                return done.first() is not None and found is not None

        wait_for(failed, timeout=30, what="the failed fire and its incident")
    finally:
        cronwork.stop(up)

    # Stored masked: the worker's tracking and the alert hook redact with the settings.
    with engine.connect() as conn:
        [stored] = conn.execute(select(attempts.c.error_message)).scalars().all()
        [details] = conn.execute(select(incidents.c.details)).scalars().all()
    assert stored == "cannot report to *** (key ***)"  # the URL whole, and its key alone
    assert KEY not in json.dumps(details)

    history = cronwork.run("history", "--json")
    listed = cronwork.run("incidents", "--json")
    assert history.returncode == 0 and listed.returncode == 0, history.stderr + listed.stderr
    [fire] = json.loads(history.stdout)
    assert fire["error"] == "RuntimeError: cannot report to *** (key ***)"
    assert fire["attempts"][0]["error"] == "RuntimeError: cannot report to *** (key ***)"
    [incident] = json.loads(listed.stdout)
    assert incident["kind"] == "failed" and incident["schedule"] == "leak"
    for out in (history, listed):
        assert KEY not in out.stdout + out.stderr

    # Rows stored before masking by value (an older release) are masked on the way out.
    with engine.begin() as conn:
        conn.execute(update(fires).values(error=f"raw {sentry.dsn} and {KEY}"))
        conn.execute(update(attempts).values(error_message=f"raw {KEY}"))
        conn.execute(update(incidents).values(subject=KEY, details={"error": f"raw {KEY}"}))
    engine.dispose()
    # Each output shows where the secret was, masked: errors keep their text around it,
    # the incidents table shows the masked subject.
    for args, masked in (
        (("history", "--json"), "raw ***"),
        (("incidents", "--json"), "raw ***"),
        (("history",), "raw ***"),
        (("incidents",), "  ***"),
    ):
        out = cronwork.run(*args)
        assert out.returncode == 0, out.stderr
        assert masked in out.stdout, (args, out.stdout)
        assert KEY not in out.stdout
