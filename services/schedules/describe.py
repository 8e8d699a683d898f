"""A schedule's trigger in plain words, for the dashboard: "At 08:00, only on Monday".

cron-descriptor words crontab well but reads cronwork's dialect differently: it takes a
sixth field as seconds *first* (cronwork: last), knows no ``@daily``, and always joins a
restricted day of month and day of week with OR, where cronie (and cronwork) ORs them only
when neither field starts with ``*``. So the expression is first checked by cronwork's own
parser, macros expanded, the seconds field moved to the front and names turned into
numbers; when the day rule would be worded wrongly, or anything fails, the raw expression
is shown instead: never a description that is wrong.
"""

from __future__ import annotations

import logging
import re

from cron_descriptor import ExpressionDescriptor, Options

from services.errors import CronError
from services.schedules.cron import DAY_NAMES, MACROS, MONTH_NAMES, parse_crontab
from services.schedules.durations import format_duration
from services.schedules.spec import ScheduleSpec

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z]+")

_OPTIONS = Options()
_OPTIONS.use_24hour_time_format = True


def describe_trigger(spec: ScheduleSpec) -> str:
    """The trigger in words; the raw form where words could mislead."""
    if spec.trigger == "cron":
        assert spec.cron is not None
        return describe_cron(spec.cron)
    if spec.trigger == "every":
        assert spec.every is not None
        return f"Every {format_duration(spec.every)}"
    assert spec.at is not None
    return f"Once, at {spec.at.isoformat()}"


def describe_cron(expr: str) -> str:
    text = expr.strip()
    try:
        parsed = parse_crontab(text)
    except CronError:
        return text
    fields = MACROS.get(text.lower(), text).split()
    if parsed.has_seconds:
        fields = [fields[5], *fields[:5]]
    minute_at = 1 if parsed.has_seconds else 0
    dom, dow = fields[minute_at + 2], fields[minute_at + 4]
    if dom != "*" and dow != "*" and not (parsed.dom_restricted and parsed.dow_restricted):
        # cronie needs BOTH here (one field starts with '*'); cron-descriptor would say "or".
        return text
    month_at = minute_at + 3
    fields[month_at] = _numbers(fields[month_at], MONTH_NAMES)
    fields[minute_at + 4] = _numbers(dow, DAY_NAMES)
    try:
        return str(ExpressionDescriptor(" ".join(fields), _OPTIONS).get_description())
    except Exception:  # the library's own parser disagreeing: show what was written
        logger.debug("cron-descriptor could not word %r", text, exc_info=True)
        return text


def _numbers(field: str, names: dict[str, int]) -> str:
    """``mon-fri`` → ``1-5``: cron-descriptor's names differ from cronwork's."""
    return _NAME.sub(lambda m: str(names[m.group().lower()]), field)
