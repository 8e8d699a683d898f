"""``make bench``: every benchmark, each against its own same-run baseline."""

from __future__ import annotations

import logging

from bench import burst, dashboard, history, retention, tracking

logging.basicConfig(level=logging.WARNING)

print(burst.main([]))
print()
print(tracking.main([]))
print()
print(dashboard.main([]))
print()
print(retention.main([]))
print()
print(history.main([]))
