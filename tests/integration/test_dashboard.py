"""The dashboard's routes on real Postgres and on SQLite: who may see, who may act, and
what the pages and the API show. Requests go through the real app (FastAPI's test
client); the database, the audit and the fence are the real ones."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select

from services.adhoc import send_tracked
from services.broker import standard_middleware
from services.store.fence import Fence, request
from services.store.incidents import IncidentStore
from services.store.migrate import upgrade
from services.store.schedule_rows import paused_names, resume_expired, set_paused
from services.store.tables import fires, schedules
from services.store.views import IN_LIST_LIMIT, history, schedule_rows, status
from services.timeutil import utcnow
from services.vocabulary import AuditAction, FireKind, FireStatus, IncidentKind
from services.web.app import CSP
from tests.integration.dashboard_support import (
    ADMIN,
    ORIGIN,
    READONLY,
    Site,
    build,
    specs,
)


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    url = f"sqlite:///{tmp_path / 'cronwork.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def site(db_url: str) -> Iterator[Site]:
    yield from build(db_url, specs())


def test_nothing_without_a_token_but_the_probes(site: Site) -> None:
    for path in ("/", "/schedules/nightly", "/incidents", "/audit", "/fires/1"):
        r = site.client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"] == f"/login?next={path.replace('/', '%2F')}"
    for path in ("/api/schedules", "/api/fires", "/api/audit", "/api/incidents"):
        r = site.client.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert r.json() == {"detail": "a token is required"}
    wrong = site.client.get("/api/schedules", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert site.client.get("/healthz").text == "ok: ok\n"
    assert site.client.get("/readyz").status_code == 200
    metrics = site.client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")


def test_login_url_sets_a_strict_cookie_and_refuses_bad_tokens(site: Site) -> None:
    bad = site.client.get(f"/login?token=x{ADMIN}", follow_redirects=False)
    assert bad.status_code == 401 and "set-cookie" not in bad.headers
    assert ADMIN not in bad.text
    r = site.client.get(f"/login?token={ADMIN}&next=%2Fschedules%2Fnightly", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/schedules/nightly"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert ADMIN not in cookie  # a signed statement of the role, never the token itself
    assert site.client.get("/").status_code == 200
    # Never an open redirect.
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = site.client.get(f"/login?token={ADMIN}&next={target}", follow_redirects=False)
        assert r.headers["location"] == "/", target
    # A tampered cookie is no session.
    site.client.cookies.set("cronwork_session", cookie.split(";")[0].split("=", 1)[1] + "x")
    assert site.client.get("/", follow_redirects=False).status_code == 303


def test_pages_escape_redact_and_carry_a_strict_csp(site: Site) -> None:
    evil = "<script>alert(1)</script> while talking to postgresql://app:hunter2@db:5432/x"
    failed = site.fire("nightly", FireStatus.FAILED, evil, result={"token": "https://k:pw@x"})
    stranger = site.fire("adhoc-from-code", FireStatus.SUCCEEDED)
    site.login()
    pages = {
        "/": "nightly",
        "/schedules/nightly": "RuntimeError",
        f"/fires/{failed}": "worker-1",
        "/incidents": "Incidents",
        "/audit": "Audit",
        "/schedules/adhoc-from-code": "schedules.yaml does not define",
        f"/fires/{stranger}": "adhoc-from-code",
    }
    for path, expected in pages.items():
        r = site.client.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert expected in r.text, path
        assert r.headers["content-security-policy"] == CSP
        assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert "<script>alert" not in r.text, path
        assert "hunter2" not in r.text and ":pw@" not in r.text, path
        assert "style=" not in r.text and "onclick" not in r.text, path
    fire_page = site.client.get(f"/fires/{failed}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fire_page
    assert "postgresql://app:***@db:5432/x" in fire_page
    # The definition is shown, its secrets are not.
    detail = site.client.get("/api/schedules/nightly").json()
    assert detail["definition"]["kwargs"] == {"dsn": "postgresql://app:***@db/reports"}
    assert detail["schedule"]["trigger_text"] == "At 02:30, Monday through Friday"
    assert len(detail["upcoming"]) == 5
    assert site.client.get("/schedules/never-heard-of").status_code == 404
    assert site.client.get("/api/fires/999999").status_code == 404


def test_refused_actions(site: Site) -> None:
    """No token, a read-only token, a wrong CSRF token, a foreign or missing Origin."""
    path, form = "/schedules/nightly/pause", {"reason": "maintenance"}
    # No session at all.
    assert site.post(path, None, **form).status_code == 401
    # Read-only session: may look, not act.
    ro_csrf = site.login(READONLY, "rita")
    assert site.client.get("/").status_code == 200
    r = site.post(path, ro_csrf, **form)
    assert r.status_code == 403 and "may only look" in r.text
    assert "Trigger now" not in site.client.get("/schedules/nightly").text
    # Admin session, but a wrong or missing CSRF token.
    csrf = site.login(ADMIN, "alice")
    assert site.post(path, csrf[:-2] + "xx", **form).status_code == 403
    assert site.post(path, None, **form).status_code == 403
    assert site.post(path, ro_csrf, **form).status_code == 403  # another session's token
    # Right token, but from another origin (another localhost port is another origin),
    # or with no Origin and no Referer at all.
    for origin in ("http://testserver:8081", "http://127.0.0.1:9999", "null", None):
        r = site.post(path, csrf, origin=origin, **form)
        assert r.status_code == 403, origin
    # The API: a read-only bearer may read, not act; nothing at all is 401.
    ro = {"authorization": f"Bearer {READONLY}"}
    assert site.client.get("/api/schedules", headers=ro).status_code == 200
    api = "/api/schedules/nightly/pause"
    assert site.client.post(api, json=form, headers=ro).status_code == 403
    site.client.cookies.clear()
    assert site.client.post(api, json=form).status_code == 401
    assert site.client.post("/api/schedules/nightly/trigger").status_code == 401
    # None of it happened.
    assert site.audit_rows() == []
    assert paused_names(site.engine) == set()
    with site.engine.connect() as conn:
        assert conn.execute(select(fires.c.id)).all() == []


def test_form_actions_are_audited_and_shown(site: Site) -> None:
    csrf = site.login(ADMIN, "alice")
    # A reason is required to pause.
    r = site.post("/schedules/nightly/pause", csrf, reason="  ")
    assert r.status_code == 422 and "reason is required" in r.text
    assert (
        site.post("/schedules/nightly/pause", csrf, reason="x", until="yesterday").status_code
        == 422
    )
    assert paused_names(site.engine) == set()

    r = site.post("/schedules/nightly/pause", csrf, reason="DB maintenance", until="2h")
    assert r.status_code == 303 and r.headers["location"] == "/schedules/nightly#audit"
    assert paused_names(site.engine) == {"nightly"}
    row = next(s for s in status(site.engine, site.dash.specs, 10)["schedules"] if s["paused"])
    assert row["pause"]["reason"] == "DB maintenance" and row["pause"]["by"] == "web:alice"
    assert row["next_run"] is None and row["pause"]["until"] is not None

    # Trigger now: a manual fire with the configured arguments, even while paused.
    assert site.post("/schedules/nightly/trigger", csrf, reason="rerun report").status_code == 303
    (manual,) = history(site.engine, "nightly")
    assert manual["kind"] == FireKind.MANUAL and manual["status"] == FireStatus.PENDING
    assert manual["fired_by"] == "web:alice"
    with site.engine.connect() as conn:
        message = conn.execute(select(fires.c.message).where(fires.c.id == manual["id"])).scalar()
    assert message["kwargs"] == {"dsn": "postgresql://app:hunter2@db/reports"}

    assert site.post("/schedules/nightly/resume", csrf).status_code == 303
    assert paused_names(site.engine) == set()

    # Re-run: only a fire that failed; the new one names it.
    failed = site.fire("ticker", FireStatus.FAILED, "boom")
    succeeded = site.fire("ticker", FireStatus.SUCCEEDED, at=utcnow() - timedelta(minutes=1))
    assert site.post(f"/fires/{succeeded}/rerun", csrf).status_code == 409
    r = site.post(f"/fires/{failed}/rerun", csrf, reason="gateway is back")
    assert r.status_code == 303
    new_id = int(r.headers["location"].rsplit("/", 1)[1])
    detail = site.client.get(f"/api/fires/{new_id}").json()
    assert detail["fire"]["rerun_of"] == failed and detail["fire"]["kind"] == FireKind.MANUAL
    assert site.client.get(f"/api/fires/{failed}").json()["reruns"] == [new_id]

    actions = [(a.action, a.schedule, a.who, a.reason) for a in site.audit_rows()]
    assert actions == [
        (AuditAction.PAUSE, "nightly", "web:alice", "DB maintenance"),
        (AuditAction.TRIGGER, "nightly", "web:alice", "rerun report"),
        (AuditAction.RESUME, "nightly", "web:alice", None),
        (AuditAction.RERUN, "ticker", "web:alice", "gateway is back"),
    ]
    assert site.audit_rows()[1].fire_id == manual["id"]
    page = site.client.get("/schedules/nightly").text
    assert page.count('class="audit-row"') == 3 and "DB maintenance" in page
    assert f'href="/fires/{manual["id"]}"' in page
    api = site.client.get("/api/audit?schedule=nightly").json()
    assert [e["action"] for e in api] == ["resume", "trigger", "pause"]


def test_bearer_api_needs_no_csrf(site: Site) -> None:
    admin = {"authorization": f"Bearer {ADMIN}"}
    r = site.client.post("/api/schedules/ticker/trigger", json={"reason": "smoke"}, headers=admin)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["schedule"] == "ticker" and body["enqueued"] is False  # no broker: pending
    r = site.client.post(
        "/api/schedules/ticker/pause", json={"reason": "noisy", "until": "30m"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["paused"] is True and r.json()["until"]
    assert site.client.post("/api/schedules/nope/trigger", headers=admin).status_code == 404
    assert [a.who for a in site.audit_rows()] == ["api:admin", "api:admin"]
    # A session calling the API must send its CSRF token in a header.
    csrf = site.login()
    site.client.headers.pop("authorization", None)
    path = "/api/schedules/ticker/resume"
    assert site.client.post(path, headers={"origin": ORIGIN}).status_code == 403
    ok = site.client.post(path, headers={"origin": ORIGIN, "X-CSRF-Token": csrf})
    assert ok.status_code == 200 and paused_names(site.engine) == set()


def test_pause_until_runs_out_by_itself_and_is_audited_once(site: Site) -> None:
    spec = site.dash.specs["ticker"]
    until = utcnow() + timedelta(seconds=30)
    set_paused(site.engine, spec, True, who="cli:ops@host", reason="deploy", until=until)
    assert paused_names(site.engine) == {"ticker"}
    later = until + timedelta(seconds=1)
    # Past `until` the leader fires again at once, whether or not the row is cleared yet.
    assert paused_names(site.engine, later) == set()
    assert resume_expired(site.engine, utcnow()) == []  # not yet
    assert resume_expired(site.engine, later) == ["ticker"]
    assert resume_expired(site.engine, later) == []  # once
    auto = [a for a in site.audit_rows() if a.action == AuditAction.AUTO_RESUME]
    assert [(a.schedule, a.who) for a in auto] == [("ticker", "cronwork")]
    with site.engine.connect() as conn:
        row = conn.execute(select(schedules).where(schedules.c.name == "ticker")).one()
    assert (row.paused, row.paused_until, row.paused_reason) == (False, None, None)


def test_search_filter_and_pages_at_many_schedules(db_url: str) -> None:
    for built in build(db_url, specs(130)):
        built.login()
        page = built.client.get("/api/schedules?per_page=50&page=2").json()
        assert (page["total"], page["pages"], page["page"]) == (130, 3, 2)
        assert [s["name"] for s in page["schedules"]][:2] == ["batch-048", "batch-049"]
        found = built.client.get("/api/schedules?q=BATCH-12").json()
        assert [s["name"] for s in found["schedules"]] == [f"batch-12{i}" for i in range(8)]
        set_paused(built.engine, built.dash.specs["batch-007"], True, who="t", reason="r")
        failing = built.fire("batch-003", FireStatus.FAILED, "x")
        IncidentStore(built.engine).record(
            IncidentKind.FAILED, "batch-003", utcnow(), details={}, fire_id=failing
        )
        for wanted, names in (("paused", ["batch-007"]), ("failing", ["batch-003"])):
            got = built.client.get(f"/api/schedules?status={wanted}").json()["schedules"]
            assert [s["name"] for s in got] == names, wanted
        html = built.client.get("/?q=batch-00&status=paused").text
        assert html.count('class="schedule-row"') == 1 and "batch-007" in html
        assert built.client.get("/?status=").status_code == 200  # the form's "all"
        assert built.client.get("/api/schedules?status=bogus").status_code == 422
        row = built.client.get("/api/schedules?q=batch-003").json()["schedules"][0]
        assert row["strip"][0]["status"] == FireStatus.FAILED
        assert row["incidents"] == [{"id": row["incidents"][0]["id"], "kind": "failed"}]


def test_api_and_cli_json_share_their_shapes(site: Site) -> None:
    for i in range(3):
        site.fire("ticker", FireStatus.SUCCEEDED, at=utcnow() - timedelta(minutes=10 - i))
    site.login()
    api_rows = site.client.get("/api/schedules").json()["schedules"]
    cli_rows = status(site.engine, site.dash.specs, 10)["schedules"]
    assert [set(r) for r in api_rows] == [set(r) for r in cli_rows]
    assert [r["strip"] for r in api_rows] == [r["strip"] for r in cli_rows]
    page = site.client.get("/api/fires?limit=2").json()
    assert page["fires"] == history(site.engine, limit=2)
    older = site.client.get(f"/api/fires?limit=2&before={page['next_before']}").json()
    assert [f["id"] for f in older["fires"]] == [f["id"] for f in history(site.engine, limit=3)][2:]
    assert [r["name"] for r in site.client.get("/api/schedules?q=tick").json()["schedules"]] == [
        "ticker"
    ]


def test_api_history_filters_and_the_fire_page_of_an_adhoc_run(site: Site) -> None:
    broker = StubBroker(middleware=standard_middleware())
    report = dramatiq.actor(actor_name="report", broker=broker)(lambda **kw: None)
    failed = site.fire("nightly", FireStatus.FAILED, "boom")
    ticked = site.fire("ticker", FireStatus.SUCCEEDED)
    run = send_tracked(report, key="report-2026-11", broker=broker, engine=site.engine)
    assert run.enqueued
    site.login()

    def ids(query: str) -> list[int]:
        r = site.client.get(f"/api/fires?{query}")
        assert r.status_code == 200, r.text
        return [f["id"] for f in r.json()["fires"]]

    # `report` runs nightly (schedules.yaml) and was sent ad hoc: both are its fires.
    assert ids("actor=report") == [run.fire_id, failed]
    assert ids("actor=report&kind=adhoc") == [run.fire_id]
    assert ids("actor=tick") == [ticked]
    assert ids("status=failed") == [failed]
    assert ids("kind=scheduled&status=succeeded") == [ticked]
    assert ids("since=2999-01-01T00:00:00Z") == []
    assert ids("since=2000-01-01T00:00:00%2B01:00") == [run.fire_id, ticked, failed]
    # A bound with no UTC form means "from the beginning", never a 500.
    assert ids("since=0001-01-01T00:00:00-05:00") == [run.fire_id, ticked, failed]
    for bad in ("kind=cron", "status=late", "since=yesterday", "since=2000-01-01", "actor="):
        assert site.client.get(f"/api/fires?{bad}").status_code == 422, bad
    # A misspelt filter is refused, not ignored (the page would look filtered).
    typo = site.client.get("/api/fires?stauts=failed")
    assert typo.status_code == 422 and "'stauts'" in typo.json()["detail"]

    detail = site.client.get(f"/api/fires/{run.fire_id}").json()
    assert (detail["fire"]["kind"], detail["fire"]["schedule"]) == ("adhoc", "adhoc:report")
    assert (detail["fire"]["actor"], detail["fire"]["idempotency_key"]) == (
        "report",
        "report-2026-11",
    )
    assert detail["message"]["actor"] == "report" and detail["in_schedules_yaml"] is False
    page = site.client.get(f"/fires/{run.fire_id}")
    assert page.status_code == 200 and "adhoc:report" in page.text
    assert "report-2026-11" in page.text and "Re-run" not in page.text


def test_the_strip_writes_times_and_durations_as_history_does(site: Site) -> None:
    """Postgres writes the strip's times and durations itself (services/store/strips.py):
    exactly as the Python of ``history`` writes them, microseconds or none."""
    base = utcnow().replace(second=0, microsecond=0) - timedelta(hours=1)
    for i, at in enumerate(
        (base, base + timedelta(microseconds=1), base + timedelta(seconds=7, microseconds=250000))
    ):
        site.fire("ticker", FireStatus.SUCCEEDED if i else FireStatus.FAILED, at=at)
    ticker = site.dash.specs["ticker"]
    pending = Fence(site.engine, "t").claim(
        [request(ticker, base + timedelta(minutes=1), FireKind.SCHEDULED)]
    )
    assert pending
    [row] = status(site.engine, {"ticker": ticker}, 10)["schedules"]
    by_id = {f["id"]: f for f in history(site.engine, "ticker")}
    assert [(s["id"], s["scheduled_for"]) for s in row["strip"]] == [
        (f["id"], f["scheduled_for"]) for f in by_id.values()
    ]
    assert row["strip"][-1]["scheduled_for"].endswith(":00Z")
    assert row["strip"][-2]["scheduled_for"].endswith(".000001Z")
    newest = by_id[row["last_fire"]["id"]]
    assert row["last_fire"]["duration_ms"] == newest["duration_ms"] is None
    assert row["last_duration_ms"] == by_id[row["strip"][1]["id"]]["duration_ms"] == 3000


def test_a_long_report_reads_its_strips_beside_the_rows_and_shows_the_same(db_url: str) -> None:
    """Above IN_LIST_LIMIT names, Postgres reads the strips in parts on other connections
    (services/store/views.py): every row must come out as it does on its own."""
    for built in build(db_url, specs(IN_LIST_LIMIT + 30)):
        every = list(built.dash.specs.values())
        base = utcnow().replace(microsecond=0) - timedelta(hours=1)
        for i, spec in enumerate(every[::7]):
            for n in range(i % 4 + 1):
                outcome = FireStatus.FAILED if (i + n) % 3 == 0 else FireStatus.SUCCEEDED
                built.fire(spec.name, outcome, at=base + timedelta(minutes=n, microseconds=i))
        now = utcnow()
        together = schedule_rows(built.engine, every, now)
        assert len(together) == len(every) > IN_LIST_LIMIT
        alone = [schedule_rows(built.engine, [spec], now)[0] for spec in every]
        assert together == alone
        with_fires = [r for r in together if r["strip"]]
        assert len(with_fires) == len(every[::7])
        assert all(r["last_fire"]["id"] == r["strip"][0]["id"] for r in with_fires)
        assert {len(r["strip"]) for r in with_fires} == {1, 2, 3, 4}
