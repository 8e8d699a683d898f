"""The schedule page's two SVG charts (durations, start delay), laid out here so the
template only draws rectangles: no script, no inline style (the CSP allows neither)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDTH = 600
HEIGHT = 120


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    status: str
    title: str
    fire_id: int


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    top: str  # the value of the top line, for the axis label
    width: int = WIDTH
    height: int = HEIGHT


def bar_chart(recent: list[dict[str, Any]], key: str) -> Chart | None:
    """Bars of ``recent[i][key]`` (milliseconds), oldest left; None when nothing to draw."""
    values = [(f, f[key]) for f in recent if f.get(key) is not None]
    if not values:
        return None
    top = max(max(v for _, v in values), 1)
    step = WIDTH / max(len(values), 1)
    bars = []
    for i, (fire, value) in enumerate(values):
        h = max(HEIGHT * max(value, 0) / top, 1.0)
        bars.append(
            Bar(
                x=round(i * step + 1, 1),
                y=round(HEIGHT - h, 1),
                width=round(max(step - 2, 1), 1),
                height=round(h, 1),
                status=str(fire["status"]),
                title=f"{fire['scheduled_for']}: {human_ms(value)} ({fire['status']})",
                fire_id=int(fire["id"]),
            )
        )
    return Chart(bars=bars, top=human_ms(top))


def human_ms(value: int | float | None) -> str:
    """1234 → "1.2s"; 95000 → "1m35s"; None → "-"."""
    if value is None:
        return "-"
    ms = int(value)
    if abs(ms) < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if abs(seconds) < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
