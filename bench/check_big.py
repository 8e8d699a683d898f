"""``cronwork check`` on a large valid schedules.yaml: seconds and peak memory.

Writes N schedules (default 150,000, about 6 MB) of mixed triggers into a temporary
folder and runs the real ``cronwork check`` there in a subprocess, so the figures are
what a user's CI sees. Baseline, in the same run: ``yaml.load`` of the same file with
PyYAML's fastest safe loader (parse only, no validation).

    python -m bench.check_big --schedules 150000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from bench._support import table

ACTORS = textwrap.dedent(
    """
    import dramatiq


    @dramatiq.actor
    def tick(*args, **kwargs):
        return None
    """
)

#: One schedule per pattern, in turn: the kinds of schedule a large deployment has.
_PATTERNS = (
    '    actor: tick\n    cron: "{m} {h} * * *"\n',
    "    actor: tick\n    every: {e}m\n",
    '    actor: tick\n    cron: "*/15 * * * mon-fri"\n',
    "    actor: tick\n    every: 1h30m\n",
    '    actor: tick\n    cron: "{m} 9 * * *"\n    timezone: Europe/Berlin\n',
    "    actor: tick\n    every: 1d\n    kwargs: {{n: {i}}}\n",
    "    actor: tick\n    every: 30s\n",
    "    actor: tick\n    every: 2h\n",
)


def write_schedules(folder: Path, count: int) -> Path:
    parts = ["imports: [bench_actors]\nschedules:\n"]
    for i in range(count):
        body = _PATTERNS[i % len(_PATTERNS)].format(m=i % 60, h=i % 24, e=1 + i % 59, i=i)
        parts.append(f"  j{i}:\n{body}")
    path = folder / "schedules.yaml"
    path.write_text("".join(parts))
    (folder / "bench_actors.py").write_text(ACTORS)
    return path


def _run(code: Sequence[str], folder: Path) -> tuple[float, float, str]:
    """Seconds, peak MB and output of one child process (its own rusage only)."""
    started = time.perf_counter()
    wrapper = (
        "import resource, runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_module(sys.argv[0], run_name='__main__')\n"
        "finally:\n"
        "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    print(f'PEAK_KB={peak}', file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *code],
        cwd=folder,
        env={k: v for k, v in os.environ.items() if not k.startswith("CRONWORK_")}
        | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    peak = next(
        (int(line[8:]) for line in out.stderr.splitlines() if line.startswith("PEAK_KB=")), 0
    )
    return seconds, peak / 1024, (out.stdout + out.stderr).strip().splitlines()[0]


def main(argv: Sequence[str]) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, default=150_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_schedules(folder, args.schedules)
        size_mb = path.stat().st_size / 1e6
        loader = "CSafeLoader" if hasattr(__import__("yaml"), "CSafeLoader") else "SafeLoader"
        base_s, base_mb, _ = _run(
            ["bench.yaml_only", str(path), loader],
            folder,
        )
        check_s, check_mb, first_line = _run(["services", "check"], folder)
    rows = [
        ("check", "schedules", "file MB", "seconds", "peak MB", "ratio (s)"),
        (
            f"baseline: yaml.load ({loader}), no validation",
            str(args.schedules),
            f"{size_mb:.1f}",
            f"{base_s:.2f}",
            f"{base_mb:.0f}",
            "1.00",
        ),
        (
            "cronwork check",
            str(args.schedules),
            f"{size_mb:.1f}",
            f"{check_s:.2f}",
            f"{check_mb:.0f}",
            f"{check_s / base_s:.2f}",
        ),
    ]
    return table(rows) + f"\n{first_line}"


if __name__ == "__main__":
    print(main(sys.argv[1:]))
