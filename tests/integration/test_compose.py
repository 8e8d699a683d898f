"""docker-compose.yml against the Compose specification, and the Dockerfile's shape.

No Docker engine is needed: the Compose file is validated with check-jsonschema's
bundled copy of the Compose spec schema, the Dockerfile is read as text and linted with
hadolint.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import yaml
from sqlalchemy import make_url

from services.broker import dramatiq_namespace, sender_broker
from services.settings import Settings
from services.store.engines import normalize_database_url
from tests.servers import ThrowawayRedis, throwaway_redis_fixture  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

#: The only secret values the Compose file may carry: the documented local-dev defaults.
LOCAL_DEV_DEFAULT = "cronwork"
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|DSN|WEBHOOK|AUTH|_KEY$", re.IGNORECASE)
#: `${NAME}` or `${NAME:-default}`.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")
URL_PASSWORD = re.compile(r"://[^:/@\s]*:(?P<password>[^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_file_matches_the_compose_spec() -> None:
    check = Path(sys.executable).parent / "check-jsonschema"
    assert check.exists(), f"{check} missing: pip install -e '.[dev]'"
    result = subprocess.run(
        [str(check), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "scheduler", "worker"} <= set(services)

    postgres, redis = services["postgres"], services["redis"]
    assert postgres["image"].startswith("postgres:16")
    assert redis["image"].startswith("redis:7")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    named_volumes = set(compose.get("volumes") or {})
    pg_sources = {str(v).split(":", 1)[0] for v in postgres["volumes"]}
    assert pg_sources & named_volumes, "postgres data must live in a named volume"

    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"

    for name in ("scheduler", "worker"):
        svc = services[name]
        assert svc["command"] == [name]
        deps = svc["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert "/healthz" in " ".join(svc["healthcheck"]["test"]), name
    assert services["scheduler"]["deploy"]["replicas"] == 2
    # Grace periods: the worker finishes in-flight work after SIGTERM.
    assert services["worker"]["stop_grace_period"] == "60s"


def test_cronwork_services_share_the_anchor_and_mount_schedules(compose: dict[str, Any]) -> None:
    anchor = compose["x-cronwork"]
    assert anchor["build"] == {"context": "."}
    for name in ("migrate", "scheduler", "worker"):
        svc = compose["services"][name]
        assert svc["environment"] == anchor["environment"], name
        assert svc["image"] == anchor["image"], name
        (mount,) = [m for m in svc["volumes"] if "schedules.yaml" in str(m)]
        if isinstance(mount, str):
            source, target, mode = mount.split(":")
            assert mode == "ro"
        else:
            source, target = mount["source"], mount["target"]
            assert mount["read_only"] is True
        assert source == "./schedules.yaml" and target == "/app/schedules.yaml", name
        env = svc["environment"]
        assert env["CRONWORK_SCHEDULES_FILE"] == "/app/schedules.yaml"
        # As compose hands it over (defaults filled in), then as cronwork reads it.
        given = INTERPOLATION.sub(lambda m: m["default"] or "", env["CRONWORK_DATABASE_URL"])
        url = make_url(normalize_database_url(given))
        assert (url.drivername, url.host, url.port, url.database) == (
            "postgresql+psycopg2",
            "postgres",
            5432,
            "cronwork",
        ), name
        assert env["CRONWORK_REDIS_URL"].startswith("redis://")
        assert "@redis:6379/" in env["CRONWORK_REDIS_URL"]


def _environments(compose: dict[str, Any]) -> list[tuple[str, str, Any]]:
    found: list[tuple[str, str, Any]] = []
    for svc_name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
        found.extend((svc_name, key, value) for key, value in env.items())
    return found


def _assert_dev_default(where: str, value: str) -> None:
    match = INTERPOLATION.fullmatch(value)
    assert match, f"{where}: secret must come from the environment: {value!r}"
    assert match["default"] in (None, "", LOCAL_DEV_DEFAULT), f"{where}: {value!r}"


def test_no_plaintext_secrets(compose: dict[str, Any]) -> None:
    for svc_name, key, value in _environments(compose):
        where = f"{svc_name}.{key}"
        if value is None:
            continue  # passed through from the host environment when set there
        value = str(value)
        if SECRETISH.search(key):
            _assert_dev_default(where, value)
        for match in URL_PASSWORD.finditer(value):
            _assert_dev_default(where, match["password"])
    # Command lines (redis --requirepass) follow the same rule.
    for svc_name, svc in compose["services"].items():
        command = svc.get("command") or []
        for flag, arg in itertools.pairwise(command):
            if "pass" in str(flag).lower():
                _assert_dev_default(f"{svc_name}.command {flag}", str(arg))


# -------------------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args.strip()))
    return stages


def test_dockerfile_is_multi_stage_slim_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "builder + runtime stages"
    text = DOCKERFILE.read_text()
    assert re.search(r"python:3\.11-slim", text)
    final = stages[-1]
    final_text = " ".join(args for _, args in final)
    # Only the venv comes from the builder.
    copies_from = [args for ins, args in final if ins == "COPY" and "--from=" in args]
    assert copies_from and all("/opt/venv" in args for args in copies_from)
    for tool in ("build-essential", "gcc", "g++", "make ", "libpq-dev", "python3-dev"):
        assert tool not in final_text, f"{tool} in the final stage"
    users = [args for ins, args in final if ins == "USER"]
    assert users, "final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    assert user.isdigit() and int(user) >= 10000, "numeric uid so runAsNonRoot can verify it"
    assert ("ENTRYPOINT", '["cronwork"]') in final
    assert ("CMD", '["scheduler"]') in final
    assert ("WORKDIR", "/app") in final
    env = " ".join(args for ins, args in final if ins == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    assert any(ins == "EXPOSE" and "8080" in args for ins, args in final)
    assert any(ins == "COPY" and "schedules.yaml" in args for ins, args in final)


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    """hadolint's own rules, every one: no config file, no HADOLINT_* variable and no
    inline ``# hadolint ignore=`` comment can switch a rule off."""
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"{hadolint} missing: make install-dev"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    env |= {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}  # no user config
    result = subprocess.run(
        [str(hadolint), "--format", "json", "--disable-ignore-pragma", str(DOCKERFILE)],
        cwd=tmp_path,  # no .hadolint.yaml of the project either
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.strip(), f"hadolint printed nothing: {result.stderr}"
    findings = [f"{f['line']}: {f['code']} {f['message']}" for f in json.loads(result.stdout)]
    assert findings == []
    assert result.returncode == 0, result.stderr


def test_dockerfile_copies_the_lock_before_the_layer_that_installs_it() -> None:
    """The dependency layer needs only the lock: a code change does not rebuild it.
    (What every ``pip install`` reads is checked in test_lockfiles.py.)"""
    builder = dockerfile_stages()[0]
    steps = [(ins, args) for ins, args in builder if ins in ("COPY", "RUN")]
    locked = next(i for i, (ins, args) in enumerate(steps) if "-r requirements.lock" in args)
    copied = [args for ins, args in steps[:locked] if ins == "COPY"]
    assert copied == ["requirements.lock ./"], copied


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for entry in (".venv", ".git", ".cronwork", ".pytest_cache", ".env"):
        assert entry in ignored, entry
    # The build needs these: they must not be ignored.
    needed = {"services", "actors", "migrations", "pyproject.toml", "requirements.lock"}
    assert not needed & ignored
    assert "schedules.yaml" not in ignored


def _redis_flags(compose: dict[str, Any]) -> tuple[str, ...]:
    """The compose file's redis-server flags, with `${VAR:-default}` resolved to the default."""
    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    return tuple(INTERPOLATION.sub(lambda m: m.group("default") or "", arg) for arg in command[1:])


def test_compose_redis_keeps_queued_and_delayed_messages_through_a_kill(
    compose: dict[str, Any], throwaway_redis: ThrowawayRedis
) -> None:
    """The compose file's own Redis flags, on a real redis-server: a queued message and a
    delayed retry are still there after SIGKILL and restart (append-only file), and
    eviction is off. The same server without those flags comes back empty, so the check
    can fail."""
    flags = _redis_flags(compose)
    server = ThrowawayRedis(throwaway_redis.binary, extra_args=flags)
    try:
        server.start()
        password = flags[flags.index("--requirepass") + 1]
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        settings = Settings(redis_url=url, redis_prefix="compose-aof", instance_id="t")
        broker = sender_broker(settings)
        broker.declare_queue("default")
        now = dramatiq.Message(queue_name="default", actor_name="a", args=(), kwargs={}, options={})
        later = now.copy(message_id="delayed-one")
        broker.enqueue(now)
        broker.enqueue(later, delay=3_600_000)
        client = server.client()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        queued = f"{dramatiq_namespace(settings)}:default.msgs"
        delayed = f"{dramatiq_namespace(settings)}:default.DQ.msgs"

        def ids(key: str) -> set[str]:
            # The broker's hash is keyed by its own redis_message_id; the body has ours.
            return {json.loads(body)["message_id"] for body in client.hvals(key)}

        assert ids(queued) == {now.message_id}
        assert ids(delayed) == {later.message_id}
        client.close()
        broker.close()

        server.kill()
        server.start()
        client = server.client()
        assert ids(queued) == {now.message_id}, "the queued message is gone"
        assert ids(delayed) == {later.message_id}, "the delayed retry is gone"
        client.close()
    finally:
        server.destroy()

    # The control: without the compose flags the same restart loses both.
    throwaway_redis.client().hset("compose-aof-control", "k", "v")
    throwaway_redis.kill()
    throwaway_redis.start()
    assert not throwaway_redis.client().exists("compose-aof-control")
