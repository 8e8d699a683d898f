"""The scheduler process: lease, APScheduler made crash-safe, sync, catch-up, dispatch."""
