"""Two schedulers on one host, started exactly as the README shows them.

The scheduler lines are read from README.md itself, so the text and the test cannot drift
apart: each ``VAR=value .venv/bin/cronwork scheduler`` line runs as written, with the
test's database and Redis in place of the URLs the reader exported. Each process needs an
HTTP port of its own; one started on a taken port exits at once and says what to set.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import signal
import socket
from pathlib import Path

import redis

from tests.acceptance.conftest import TICKER, Cronwork, get, leader_of
from tests.conftest import REDIS_SERVER
from tests.waiting import wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
#: ``VAR=value ... .venv/bin/cronwork scheduler [args]`` up to a ``#`` comment.
SCHEDULER_LINE = re.compile(r"^((?:[A-Z_]+=\S+ +)*\.venv/bin/cronwork scheduler\b[^#\n]*)", re.M)


def readme_schedulers() -> list[tuple[dict[str, str], list[str]]]:
    """(environment, cronwork arguments) of every scheduler line in the README."""
    commands = []
    for line in SCHEDULER_LINE.findall(README.read_text()):
        words = shlex.split(line)
        assignments = list(itertools.takewhile(lambda word: "=" in word, words))
        program, *args = words[len(assignments) :]
        assert program == ".venv/bin/cronwork", line
        # On top of cronwork's defaults: the acceptance fixture turns HTTP off otherwise.
        env = {"CRONWORK_HTTP_PORT": "8080"} | dict(a.split("=", 1) for a in assignments)
        commands.append((env, args))
    return commands


def bindable(port: int) -> bool:
    """Whether the HTTP server could listen there (it, too, sets SO_REUSEADDR, so a
    previous run's connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def healthz(port: int) -> str:
    status, body = get(port, "/healthz")
    return body.strip() if status == 200 else ""


def test_two_schedulers_on_one_host_as_the_readme_shows(
    cronwork: Cronwork, redis_prefix: str
) -> None:
    (env_1, args_1), (env_2, args_2) = readme_schedulers()
    port_1, port_2 = int(env_1["CRONWORK_HTTP_PORT"]), int(env_2["CRONWORK_HTTP_PORT"])
    assert port_1 != port_2, f"the README runs both schedulers on port {port_1}"
    assert bindable(port_1) and bindable(port_2), (
        f"the README's ports {port_1} and {port_2} are taken on this host by another program"
    )
    cronwork.write_schedules(TICKER)
    assert cronwork.run("migrate").returncode == 0
    client = redis.Redis.from_url(REDIS_SERVER)

    # Terminal 1, then terminal 2: both run, one leads, one stands by.
    first = cronwork.start(*args_1, name="terminal-1", **env_1)
    wait_for(lambda: healthz(port_1) == "ok: leading", timeout=30, what="terminal 1 to lead")
    second = cronwork.start(*args_2, name="terminal-2", **env_2)
    wait_for(lambda: healthz(port_2) == "ok: standby", timeout=30, what="terminal 2 to stand by")
    assert first.poll() is None and second.poll() is None
    assert leader_of(client, redis_prefix) == "terminal-1"
    status = cronwork.run("status", "--json")
    assert json.loads(status.stdout)["leader"]["instance_id"] == "terminal-1", status.stderr

    # A third on a port already served is refused at once, saying what to set; it takes
    # nothing from the other two.
    third = cronwork.run("scheduler", timeout=60, CRONWORK_HTTP_PORT=str(port_1))
    assert third.returncode == 1
    assert f"cannot serve HTTP on 0.0.0.0:{port_1}: Address already in use" in third.stderr
    assert "set CRONWORK_HTTP_PORT to a free port, or to 0" in third.stderr
    assert "Traceback" not in third.stderr
    assert leader_of(client, redis_prefix) == "terminal-1"
    assert healthz(port_1) == "ok: leading" and healthz(port_2) == "ok: standby"

    # Ctrl-C in terminal 1: terminal 2 leads.
    cronwork.stop(first, signal.SIGINT)
    assert first.returncode == 0, cronwork.log("terminal-1")
    wait_for(lambda: healthz(port_2) == "ok: leading", timeout=10, what="terminal 2 to take over")
    assert leader_of(client, redis_prefix) == "terminal-2"
    assert second.poll() is None
