"""Throwaway Postgres and Redis servers a test may stop, kill and restart.

Tests that kill or restart a server start one of their own from the installed binaries
(never the shared servers on 5432/6379): Postgres via initdb/pg_ctl as the ``postgres``
OS user (it refuses to run as root), Redis via ``redis-server`` without persistence.
Each runs on a free port on 127.0.0.1 in a temporary directory removed afterwards.
Test modules import the fixtures ``throwaway_pg`` and ``throwaway_redis`` from here.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import require
from tests.waiting import wait_for


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory that has everything we run."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda d: float(d.parent.name) if d.parent.name.replace(".", "").isdigit() else 0.0,
    )
    for bindir in reversed(found):
        if all((bindir / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


class ThrowawayPostgres:
    """A private PostgreSQL cluster (trust auth, fsync off) that a test may stop and start."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cw-fault-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        # initdb and postgres refuse root: run them as the postgres user when we are root.
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        proc = subprocess.run(
            [*self.as_user, *args],
            cwd=self.root,  # the postgres user must be able to stat its working directory
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            output = f"{proc.stdout}{proc.stderr}"
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {output}\n{self.log_tail()}")

    def log_tail(self) -> str:
        with suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        # fsync off: what a commit wrote survives the process being killed (the kernel
        # holds it), not the machine crashing, and the tests kill processes. Never
        # synchronous_commit off: that acknowledges a commit before its WAL is written, so
        # an immediate stop loses it, and a job whose claim was acknowledged ran with no
        # attempt row in a chaos run (seed 404).
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with suppress(Exception):
            self.stop("immediate")
        # If pg_ctl could not stop it, kill the postmaster by its pid file.
        with suppress(Exception):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


class ThrowawayRedis:
    """A private redis-server that a test may SIGKILL and restart: no persistence unless
    ``extra_args`` ask for it (later arguments override earlier ones)."""

    def __init__(self, binary: str, extra_args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.extra_args = extra_args
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cw-fault-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with open(self.root / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.root),
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = self.client()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.root / "redis.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"redis-server exited ({self.proc.returncode}):\n{log}")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_for(up, timeout=10, what=f"redis-server on port {self.port}")
        finally:
            client.close()

    def client(self) -> redis.Redis:
        password = None
        if "--requirepass" in self.extra_args:
            password = self.extra_args[self.extra_args.index("--requirepass") + 1]
        return redis.Redis(
            port=self.port, password=password, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing is answered."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; the data in it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def destroy(self) -> None:
        with suppress(Exception):
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(name="throwaway_pg")
def throwaway_pg_fixture() -> Iterator[ThrowawayPostgres]:
    bindir = _pg_bindir()
    require(bindir is not None, "PostgreSQL binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl)")
    assert bindir is not None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            require(False, "the 'postgres' OS user (initdb refuses root)")
        require(shutil.which("runuser") is not None, "runuser (to run initdb as postgres)")
    server = ThrowawayPostgres(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(name="throwaway_redis")
def throwaway_redis_fixture() -> Iterator[ThrowawayRedis]:
    binary = shutil.which("redis-server")
    require(binary is not None, "the redis-server binary")
    assert binary is not None
    server = ThrowawayRedis(binary)
    try:
        server.start()
        yield server
    finally:
        server.destroy()
