"""requirements.lock and requirements-dev.lock against pyproject.toml, and who installs them.

`make lock` writes both locks from pyproject.toml; these tests, reading files only, catch a
dependency edited in pyproject.toml without it, a lock that stops being exact, and an
install (make, CI, the Dockerfile) that resolves versions of its own instead of the lock's.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
#: Files that install Python packages, and the locks each installs from (CI runs `make`).
INSTALLERS = {
    "Makefile": {LOCK.name, DEV_LOCK.name},
    "Dockerfile": {LOCK.name},
}

#: One locked package: ``name==version``, an optional environment marker, ``\\`` before
#: its hashes.
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?: ;[^\\]*)? \\$")
HASH = re.compile(r"^    --hash=sha256:[0-9a-f]{64}( \\)?$")


def pins(lock: Path) -> dict[str, str]:
    """{canonical name: version}; fails on any line that is not a pin, a hash or a comment."""
    found: dict[str, str] = {}
    hashes: dict[str, int] = {}
    current = ""
    for number, line in enumerate(lock.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if match := PIN.match(line):
            current = canonicalize_name(match["name"])
            assert current not in found, f"{lock.name}:{number}: {current} locked twice"
            found[current] = match["version"]
            hashes[current] = 0
        elif HASH.match(line) and current:
            hashes[current] += 1
        else:
            pytest.fail(f"{lock.name}:{number}: not an exact pin or a hash: {line!r}")
    unhashed = sorted(name for name, count in hashes.items() if count == 0)
    assert not unhashed, f"{lock.name}: no hash for {unhashed}"
    return found


def requirements(*groups: str) -> list[Requirement]:
    """The runtime dependencies, the build backend, and the named optional groups."""
    specs = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"]]
    for group in groups:
        specs += PYPROJECT["project"]["optional-dependencies"][group]
    return [Requirement(spec) for spec in specs]


def assert_locked(lock: Path, wanted: list[Requirement]) -> None:
    locked = pins(lock)
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is not in {lock.name}: run `make lock`"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"{lock.name} pins {name}=={locked[name]}, outside {req}: run `make lock`"
        )


def test_runtime_lock_holds_every_dependency_and_the_build_backend() -> None:
    assert_locked(LOCK, requirements())


def test_dev_lock_holds_the_dev_tools_too() -> None:
    assert_locked(DEV_LOCK, requirements("dev"))


def test_dev_lock_runs_the_runtime_versions() -> None:
    """Tests run on exactly what the image ships: the dev lock is resolved within the other."""
    runtime, dev = pins(LOCK), pins(DEV_LOCK)
    assert {name: dev.get(name) for name in runtime} == runtime


def pip_installs(path: Path) -> list[str]:
    """Every ``pip install`` command in a Makefile, Dockerfile or shell script, with
    continuation lines joined and Make variables such as ``$(LOCK)`` filled in."""
    text = re.sub(r"\\\n", " ", path.read_text())
    variables = dict(re.findall(r"^([A-Z_]+) :?= (\S+)$", text, re.MULTILINE))
    text = re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables.get(m[1], m[0]), text)
    commands = re.split(r"&&|;|\n", text)
    return [" ".join(cmd.split()) for cmd in commands if re.search(r"\bpip install\b", cmd)]


@pytest.mark.parametrize("installer", sorted(INSTALLERS))
def test_every_install_takes_its_versions_from_a_lock(installer: str) -> None:
    commands = pip_installs(ROOT / installer)
    read: set[str] = set()
    for command in commands:
        if locks := set(re.findall(r"(?:-r|--requirement)[ =](\S+)", command)):
            assert "--require-hashes" in command, f"{installer}: {command}"
            read |= locks
        else:
            # The project itself: no dependency resolved, no unlocked build backend fetched.
            assert "--no-deps" in command and "--no-build-isolation" in command, (
                f"{installer}: {command}"
            )
    assert read == INSTALLERS[installer], commands
