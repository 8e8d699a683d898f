"""Schemathesis over the OpenAPI document the app serves: every operation, with the
admin and with the read-only token, on real Postgres holding a little of everything.
No 500s, and every response (status code, content type, headers, body) matches the
document."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine

from services.settings import Settings
from services.store.engines import make_engine
from services.store.incidents import IncidentStore
from services.store.schedule_rows import set_paused
from services.timeutil import utcnow
from services.vocabulary import FireStatus, IncidentKind
from services.web.app import create_app
from services.web.dashboard import Dashboard
from tests.conftest import scratch_database
from tests.integration.dashboard_support import ADMIN, READONLY, Site, specs

SETTINGS = Settings(dashboard_token=ADMIN, dashboard_readonly_token=READONLY)  # type: ignore[arg-type]
#: The app is built at import so schemathesis can read its document while collecting;
#: the module fixture below gives it a real database before any case runs.
APP = create_app(
    lambda: (True, "ok"),
    lambda: (True, "ok"),
    Dashboard.from_settings(SETTINGS, cast(Engine, None), specs(5), None),
)
schema = schemathesis.openapi.from_asgi("/api/openapi.json", APP)

#: A dozen cases per operation and token keeps the whole run near half a minute.
FUZZ = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@pytest.fixture(scope="module")
def served(pg_template: str) -> Iterator[None]:
    with scratch_database("cw_api", pg_template) as url:
        engine = make_engine(url)
        dash = Dashboard.from_settings(SETTINGS, engine, specs(5), None)
        APP.state.dashboard = dash
        site = Site(engine, dash, cast(Any, None))
        failed = site.fire("nightly", FireStatus.FAILED, "boom <b>")
        site.fire("ticker", FireStatus.SUCCEEDED, at=utcnow() - timedelta(minutes=2))
        site.fire("adhoc-job", FireStatus.SUCCEEDED)
        set_paused(engine, dash.specs["ticker"], True, who="t", reason="why")
        IncidentStore(engine).record(
            IncidentKind.FAILED, "nightly", utcnow(), details={"e": "x"}, fire_id=failed
        )
        yield
        engine.dispose()


def check(case: Any, token: str) -> None:
    response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500


def test_the_document_describes_every_api_route() -> None:
    paths = APP.openapi()["paths"]
    assert set(paths) == {
        "/api/schedules",
        "/api/schedules/{name}",
        "/api/fires",
        "/api/fires/{fire_id}",
        "/api/incidents",
        "/api/audit",
        "/api/schedules/{name}/trigger",
        "/api/schedules/{name}/pause",
        "/api/schedules/{name}/resume",
        "/api/fires/{fire_id}/rerun",
    }
    security = APP.openapi()["components"]["securitySchemes"]
    assert security == {
        "HTTPBearer": {
            "type": "http",
            "description": security["HTTPBearer"]["description"],
            "scheme": "bearer",
        }
    }


@schema.parametrize()
@FUZZ
def test_api_with_the_admin_token(case: Any, served: None) -> None:
    check(case, ADMIN)


@schema.parametrize()
@FUZZ
def test_api_with_the_readonly_token(case: Any, served: None) -> None:
    check(case, READONLY)
