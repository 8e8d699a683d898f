"""The worker process: its broker, tracking of every attempt, heartbeats, the alert hook."""
