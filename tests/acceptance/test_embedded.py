"""`make run` on a fresh machine: `cronwork up` with no URLs set (SQLite, in-memory queue)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWORK_")}
    env["CRONWORK_HTTP_PORT"] = "0"
    env["PYTHONPATH"] = str(REPO)
    return env


def cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_up_with_the_shipped_schedules_shows_succeeded_fires(
    tmp_path: Path, embedded_env: dict[str, str]
) -> None:
    shutil.copy(REPO / "schedules.yaml", tmp_path / "schedules.yaml")
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "up"],
        cwd=tmp_path,
        env=embedded_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def heartbeat_succeeded() -> bool:
            out = cli(tmp_path, embedded_env, "history", "--schedule", "heartbeat", "--json")
            return out.returncode == 0 and any(
                f["status"] == "succeeded" for f in json.loads(out.stdout)
            )

        # The shipped heartbeat runs every 15 s: a new user sees a success within a minute.
        try:
            wait_for(
                heartbeat_succeeded,
                timeout=60,
                what="the heartbeat schedule to succeed",
                interval=1,
            )
        except AssertionError as exc:
            log.flush()
            raise AssertionError(f"{exc}\n{(tmp_path / 'up.log').read_text()[-3000:]}") from None
        status = cli(tmp_path, embedded_env, "status", "--json")
        data = json.loads(status.stdout)
        assert data["leader"] is not None
        names = [s["name"] for s in data["schedules"]]
        assert names == [
            "weekly-digest",
            "cleanup-expired-sessions",
            "retry-failed-payments",
            "monthly-invoices",
            "heartbeat",
        ]
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    output = (tmp_path / "up.log").read_text()
    assert "single instance only" in output
    # Someone watching the terminal sees each fire sent and each attempt finish.
    assert re.search(r"heartbeat \S+ sent", output), output[-2000:]
    assert re.search(r"heartbeat \S+ attempt 0 succeeded in [0-9.]+s", output), output[-2000:]
    assert (tmp_path / ".cronwork" / "cronwork.sqlite3").exists()
    assert proc.returncode == 0, output[-2000:]


def test_manual_trigger_reaches_the_running_embedded_process(
    tmp_path: Path, embedded_env: dict[str, str]
) -> None:
    (tmp_path / "jobs.py").write_text(
        "import dramatiq\n\n@dramatiq.actor\ndef hello():\n    return 'hi'\n"
    )
    (tmp_path / "schedules.yaml").write_text(
        "imports: [jobs]\nschedules:\n  hello:\n    actor: hello\n    cron: '0 0 1 1 *'\n"
    )
    embedded_env["CRONWORK_RESEND_AFTER"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "up"],
        cwd=tmp_path,
        env=embedded_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: json.loads(cli(tmp_path, embedded_env, "status", "--json").stdout or "{}").get(
                "leader"
            ),
            timeout=30,
            what="cronwork up to lead",
        )
        out = cli(tmp_path, embedded_env, "trigger", "hello")
        assert out.returncode == 0, out.stderr

        def done() -> list[dict[str, object]] | None:
            data = json.loads(cli(tmp_path, embedded_env, "history", "--json").stdout)
            return data if data and data[0]["status"] == "succeeded" else None

        fires = wait_for(done, timeout=30, what="the manual fire to succeed")
        assert isinstance(fires, list) and fires[0]["kind"] == "manual"

        # A tracked ad-hoc run from the shell: written here, sent by the running process.
        run = cli(tmp_path, embedded_env, "run", "hello", "--key", "hello-once")
        assert run.returncode == 0, run.stderr
        assert "pending (the leader sends it within seconds)" in run.stdout

        def adhoc_done() -> bool:
            out = cli(tmp_path, embedded_env, "history", "--kind", "adhoc", "--json")
            return [(f["actor"], f["status"]) for f in json.loads(out.stdout)] == [
                ("hello", "succeeded")
            ]

        wait_for(adhoc_done, timeout=30, what="the ad-hoc run to succeed")
    finally:
        proc.terminate()
        proc.wait(30)
