"""Every limit schedules.yaml is held to, in one place (README: "Bad input is refused whole").

Each keeps a file from exhausting ``check`` (size, nesting, aliases, numbers) or keeps a
value that ``check`` accepts from failing later, at run time, in the scheduler (ranges).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# --- The file and its YAML

#: Largest schedules file read: 150,000 schedules take about 6 MB.
MAX_FILE_BYTES = 32 * 1024 * 1024
#: Deepest nesting of lists and mappings (the root mapping is level 1, a schedule 3).
MAX_DEPTH = 64
#: Most values (keys, values, list items) in one file: about 300,000 plain schedules.
#: Read into a tree of about 300 bytes a value, so it bounds memory as the size can not
#: (a file of "1," items packs sixteen million into 32 MB).
MAX_NODES = 2_000_000
#: Values that aliases add to a file, over all schedules (a "billion laughs" file
#: expands nine aliases nine levels deep into 387 million values).
MAX_ALIAS_VALUES = 100_000
#: Integers (in args too) fit in 64 bits: they travel as JSON to any actor. Longer
#: spellings are refused before conversion (a 5,000-digit one costs seconds, and more
#: than 4,300 digits raise in Python itself).
MAX_INT_CHARS = 100

# --- Values

#: Longest setting value (a cron expression, an actor or queue name, a time zone...);
#: they are stored in columns of 200-300 characters. args and kwargs are not limited.
MAX_VALUE_CHARS = 200
#: Longest duration of any key (every, backoffs, limits, windows, jitter, margins):
#: about ten years. Longer ones push fire times past what datetimes can hold.
MAX_DURATION = timedelta(days=3650)
#: Most fires of one status group ``keep:`` may keep per schedule (a year of one a minute
#: is about 525,000): more is what ``max_age`` is for.
MAX_KEEP_COUNT = 1_000_000
#: ``at``, ``start`` and ``end`` lie in [EARLIEST_TIME, LATEST_TIME): every fire time,
#: plus an interval, a zone offset or a catch-up window, stays a representable datetime.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC)
