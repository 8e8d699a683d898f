"""An app with the dashboard on a real database, and a browser-like client for it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select

from services.schedules.spec import ScheduleSpec
from services.settings import Settings
from services.store.engines import make_engine
from services.store.fence import Fence, request
from services.store.tables import attempts, audit, fires
from services.timeutil import utcnow
from services.vocabulary import AttemptStatus, FireKind, FireStatus
from services.web.app import create_app
from services.web.dashboard import Dashboard

ADMIN = "admin-token-0123456789"
READONLY = "read-token-0123456789"
#: The test client's own origin (its Host is "testserver").
ORIGIN = "http://testserver"


def specs(n: int = 3) -> dict[str, ScheduleSpec]:
    out = {
        "nightly": ScheduleSpec(
            name="nightly",
            actor="report",
            trigger="cron",
            cron="30 2 * * mon-fri",
            timezone="Europe/Berlin",
            kwargs={"dsn": "postgresql://app:hunter2@db/reports"},
        ),
        "ticker": ScheduleSpec(name="ticker", actor="tick", trigger="every", every=timedelta(1)),
    }
    for i in range(max(n - 2, 0)):
        name = f"batch-{i:03d}"
        out[name] = ScheduleSpec(name=name, actor="tick", trigger="every", every=timedelta(hours=1))
    return out


@dataclass
class Site:
    engine: Engine
    dash: Dashboard
    client: TestClient

    def login(self, token: str = ADMIN, name: str = "alice") -> str:
        """Log in through the form; return the session's CSRF token (from a page)."""
        r = self.client.post(
            "/login",
            data={"token": token, "name": name, "next": "/"},
            headers={"origin": ORIGIN},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return csrf_of(self.client.get("/schedules/nightly").text)

    def post(self, path: str, csrf: str | None, origin: str | None = ORIGIN, **form: str) -> Any:
        data = dict(form)
        if csrf is not None:
            data["csrf"] = csrf
        headers = {"origin": origin} if origin else {}
        return self.client.post(path, data=data, headers=headers, follow_redirects=False)

    def audit_rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(audit).order_by(audit.c.id)).all())

    def fire(self, schedule: str, status: FireStatus, error: str | None = None, **kw: Any) -> int:
        spec = self.dash.specs.get(schedule) or ScheduleSpec(
            name=schedule, actor="gone", trigger="every", every=timedelta(1)
        )
        when: datetime = kw.pop("at", utcnow() - timedelta(minutes=5))
        (won,) = Fence(self.engine, "test").claim([request(spec, when, FireKind.SCHEDULED)])
        start = when + timedelta(seconds=2)
        with self.engine.begin() as conn:
            conn.execute(
                fires.update()
                .where(fires.c.id == won.id)
                .values(
                    status=status,
                    started_at=start,
                    finished_at=start + timedelta(seconds=3),
                    error=error,
                    error_type="RuntimeError" if error else None,
                )
            )
            conn.execute(
                insert(attempts).values(
                    message_id=won.message_id,
                    attempt=0,
                    fire_id=won.id,
                    schedule=schedule,
                    status=AttemptStatus(status)
                    if status in set(AttemptStatus)
                    else AttemptStatus.RUNNING,
                    started_at=start,
                    finished_at=start + timedelta(seconds=3),
                    duration_ms=3000,
                    instance_id="worker-1",
                    error_type="RuntimeError" if error else None,
                    error_message=error,
                    result=kw.get("result"),
                )
            )
        return won.id


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def build(url: str, schedule_specs: dict[str, ScheduleSpec]) -> Iterator[Site]:
    engine = make_engine(url)
    settings = Settings(dashboard_token=ADMIN, dashboard_readonly_token=READONLY)  # type: ignore[arg-type]
    dash = Dashboard.from_settings(settings, engine, schedule_specs, None)
    app = create_app(lambda: (True, "ok"), lambda: (True, "ok"), dash)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Site(engine, dash, client)
    engine.dispose()
