"""The dashboard where Kubernetes serves it: on `cronwork scheduler`'s port, and as the
standalone `cronwork web`; never on the worker's. Real CLI, Postgres and Redis."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.acceptance.conftest import Cronwork
from tests.acceptance.test_cli import GOOD
from tests.acceptance.test_probes import free_port
from tests.waiting import wait_for

TOKEN = "k8s-secret-admin-token"


def call(port: int, path: str, method: str = "GET", body: Any = None, token: str = TOKEN) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            is_json = resp.headers.get("content-type", "").startswith("application/json")
            return resp.status, json.loads(raw) if is_json else raw.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


def test_scheduler_and_web_serve_the_dashboard_and_the_worker_does_not(
    cronwork: Cronwork,
) -> None:
    cronwork.write_schedules(GOOD)
    assert cronwork.run("migrate").returncode == 0
    sport, wport, webport = free_port(), free_port(), free_port()
    env = {"CRONWORK_DASHBOARD_TOKEN": TOKEN}
    cronwork.start("scheduler", name="sched", CRONWORK_HTTP_PORT=str(sport), **env)
    cronwork.start("worker", "-p", "1", "-t", "2", name="worker", CRONWORK_HTTP_PORT=str(wport))
    cronwork.start("web", name="web", CRONWORK_HTTP_PORT=str(webport), **env)

    for port in (sport, webport):
        wait_for(
            lambda p=port: call(p, "/healthz", token="")[0] == 200, timeout=30, what=f"port {port}"
        )
        assert call(port, "/api/schedules", token="")[0] == 401
        assert call(port, "/api/schedules", token="wrong")[0] == 401
    wait_for(
        lambda: call(wport, "/healthz", token="")[0] == 200, timeout=30, what="the worker's port"
    )
    assert call(wport, "/api/schedules")[0] == 404  # probes and metrics only

    def ticker_ran() -> bool:
        status, page = call(webport, "/api/schedules?q=ticker")
        return status == 200 and any(
            s["status"] == "succeeded" for s in page["schedules"][0]["strip"]
        )

    wait_for(ticker_ran, timeout=30, what="cronwork web to show ticker's fires")
    # `cronwork web` sends a manual fire itself (Redis is configured) and audits it.
    status, fire = call(webport, "/api/schedules/weekly/trigger", "POST", {"reason": "k8s"})
    assert status == 201 and fire["enqueued"] is True, fire

    def succeeded() -> bool:
        return call(sport, f"/api/fires/{fire['fire_id']}")[1]["fire"]["status"] == "succeeded"

    wait_for(succeeded, timeout=30, what="the manual fire to run")
    status, audit = call(sport, "/api/audit")
    assert status == 200
    assert [(e["action"], e["who"], e["reason"]) for e in audit] == [
        ("trigger", "api:admin", "k8s")
    ]
    for name in ("sched", "web"):
        assert TOKEN not in cronwork.log(name)
        assert "login?token=" not in cronwork.log(name)  # a token was set: no URL printed
