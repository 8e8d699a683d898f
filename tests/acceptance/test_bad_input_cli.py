"""The real ``cronwork`` CLI on hostile input: one clean line each, never exit 0 (issue 9).

These need no server: ``check`` and the read commands of an embedded deployment run
against files in a temporary folder. Where memory is the point the CLI runs under an
address-space limit, so a file that expands without bound fails the test instead of
the machine.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Address space a `check` may use: a few times what a small file needs.
MEMORY_LIMIT = 512 * 1024 * 1024
ACTORS = "import dramatiq\n\n\n@dramatiq.actor\ndef tick():\n    return None\n"
PROBLEM_LINE = re.compile(r"^schedules\.yaml:\d+: \S")


def run(
    folder: Path, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    base = {k: v for k, v in os.environ.items() if not k.startswith("CRONWORK_")}
    return subprocess.run(
        [sys.executable, "-m", "services", *args],
        cwd=folder,
        env=base | {"PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit_memory,
    )


def write(folder: Path, text: str) -> None:
    (folder / "check_actors.py").write_text(ACTORS)
    (folder / "schedules.yaml").write_text(text, encoding="utf-8")


def assert_refused(out: subprocess.CompletedProcess[str]) -> list[str]:
    """Exit 1, nothing on stdout, and stderr: problem lines then the one verdict."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr[-2000:])
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert lines[-1] == "cronwork: schedules.yaml refused; nothing applied", lines[-3:]
    for line in lines[:-1]:
        assert PROBLEM_LINE.match(line), line
        assert line.isprintable(), line
    assert "Traceback" not in out.stderr and "Error: " not in out.stderr
    return lines[:-1]


def billion_laughs() -> str:
    lines = ["      a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"      a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


HOOK = "https://hooks.slack.com/services/T0/B0/ZZsecretZZ"
HEAD = "imports: [check_actors]\nschedules:\n  job:\n    actor: tick\n"
HOSTILE = {
    # 9.2: main ran out of 3 GiB.
    "billion laughs": (HEAD + "    every: 1m\n    kwargs:\n" + billion_laughs(), "aliases expand"),
    # 9.3: accepted on main; the leader then fired nothing at all.
    "every 3000000d": (HEAD + "    every: 3000000d\n", "longer than 3650d"),
    "at in year 1": (HEAD + "    at: 0001-01-01T00:00:00\n", "outside the years"),
    # 9.4: "0 schedule(s) OK" on main, and the next deploy removed every schedule.
    "cut off": ("imports: [check_actors]\nschedules:\n", "schedules is empty"),
    # 9.5: the URL was printed back.
    "url under a wrong key": (HEAD + f"    every: 1m\n    alerts: {{slack: {HOOK}}}\n", "URL"),
    # 9.7: the catch-all "cronwork: XError: ...".
    "recursive alias": (HEAD + "    every: 1m\n    args: &a [1, *a]\n", "contains it"),
    "deep nesting": (
        HEAD + "    every: 1m\n    args: " + "[" * 1000 + "]" * 1000 + "\n",
        "nesting",
    ),
    "long integer": (HEAD + "    every: 1m\n    args: [" + "9" * 5000 + "]\n", "64-bit"),
    "zone folder": (HEAD + "    every: 1m\n    timezone: Europe\n", "unknown time zone 'Europe'"),
    "python tag": (
        HEAD + "    every: 1m\n    args: !!python/object/apply:os.system [echo pwned]\n",
        "YAML tag '!!python/object/apply:os.system' is not allowed",
    ),
    # 9.9: at the end of the file on main; raw escapes reached the terminal.
    "unclosed quote": (HEAD + '    every: "1m\n  other:\n    actor: tick\n', "quoted value"),
    "escapes": (HEAD + '    every: 1m\n    queue: "\\e[2J\\r\\0"\n', "\\x1b[2J\\r\\x00"),
}


@pytest.mark.parametrize(("text", "expected"), HOSTILE.values(), ids=list(HOSTILE))
def test_check_refuses_hostile_files_in_bounded_time_and_memory(
    tmp_path: Path, text: str, expected: str
) -> None:
    write(tmp_path, text)
    started = time.monotonic()
    found = assert_refused(run(tmp_path, "check", timeout=30))
    assert time.monotonic() - started < 20
    assert any(expected in line for line in found), found
    assert not any("ZZsecretZZ" in line or "pwned" in line for line in found)


def test_a_five_megabyte_value_is_refused_in_seconds(tmp_path: Path) -> None:
    # 9.1/9.7: main spent minutes on it (quadratic redaction, then difflib).
    write(tmp_path, HEAD + "    every: 1m\n    timezone: Europe/" + "x" * 5_000_000 + "\n")
    started = time.monotonic()
    (line,) = assert_refused(run(tmp_path, "check", timeout=60))
    assert time.monotonic() - started < 15
    assert line.startswith("schedules.yaml:6: schedule 'job': timezone: value is too long")


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_files_that_never_end_are_refused(tmp_path: Path, kind: str) -> None:
    # main: /dev/zero read until memory ran out; a FIFO blocked for ever.
    path = "/dev/zero"
    if kind == "fifo":
        path = str(tmp_path / "pipe.yaml")
        os.mkfifo(path)
    out = run(tmp_path, "check", timeout=20, CRONWORK_SCHEDULES_FILE=path)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"{path}:1: cannot read file: it is a {'named pipe' if kind == 'fifo' else 'device'}, "
        "not a regular file",
        f"cronwork: {path} refused; nothing applied",
    ]


def test_an_imported_module_that_exits_cannot_make_check_pass(tmp_path: Path) -> None:
    # 9.8: main exited 0 with no output at all.
    write(tmp_path, "imports: [quitter]\nschedules:\n  job: {actor: tick, every: 1m}\n")
    (tmp_path / "quitter.py").write_text("import sys\nsys.exit(0)\n")
    found = assert_refused(run(tmp_path, "check"))
    assert (
        found[0] == "schedules.yaml:1: cannot import 'quitter': it calls sys.exit(0) when imported"
    )


def test_bad_settings_and_arguments_are_one_line_and_exit_2(tmp_path: Path) -> None:
    # 9.10: a traceback on main; `history --limit -1` meant "no limit".
    write(tmp_path, "schedules: {}\n")
    out = run(tmp_path, "check", CRONWORK_LOG_LEVEL="LOUD")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        "cronwork: invalid settings: CRONWORK_LOG_LEVEL: must be one of DEBUG, INFO, "
        "WARNING, ERROR, CRITICAL\n"
    )
    out = run(tmp_path, "history", "--limit", "-1")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.count("\n") == 1 and "must be from 1 to 10000, got -1" in out.stderr


# ------------------------------------------------------------ 9.11 read-only places


@pytest.mark.parametrize("command", ["status", "history", "incidents"])
def test_read_commands_in_an_empty_folder_create_nothing(tmp_path: Path, command: str) -> None:
    write(tmp_path, "imports: [check_actors]\nschedules:\n  job: {actor: tick, every: 1m}\n")
    out = run(tmp_path, command)
    assert out.returncode == 1
    assert out.stderr.startswith("cronwork: no cronwork database at ")
    assert "run `cronwork up` in this folder first" in out.stderr
    assert not (tmp_path / ".cronwork").exists()


def _read_only(folder: Path, argv: list[str]) -> list[str]:
    """``argv`` run with ``folder`` read-only: a read-only bind mount in a mount namespace
    of its own when we are root (permissions do not stop root), else permissions."""
    if os.geteuid() != 0:
        for path in (folder, *folder.iterdir()):
            path.chmod(0o555 if path.is_dir() else 0o444)
        return argv
    if shutil.which("unshare") is None:
        pytest.fail("unshare(1) is needed to mount a read-only volume as root")
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, "sh", str(folder), *argv]


def test_a_migrated_database_on_a_read_only_volume_serves_reads(tmp_path: Path) -> None:
    # main: "attempt to write a readonly database" for every read command.
    write(tmp_path, "imports: [check_actors]\nschedules:\n  job: {actor: tick, every: 1m}\n")
    out = run(tmp_path, "migrate")
    assert out.returncode == 0, out.stderr
    data = tmp_path / ".cronwork"
    for name in ("status", "history", "incidents"):
        argv = _read_only(data, [sys.executable, "-m", "services", name, "--json"])
        out = subprocess.run(
            argv,
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if not k.startswith("CRONWORK_")}
            | {"PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, (name, out.stderr)
        assert out.stdout.startswith(("[", "{")), out.stdout
    assert sorted(p.name for p in data.iterdir()) == ["cronwork.sqlite3"]
