"""schedules.yaml: the loader, the validated spec, cron, triggers and durations."""
