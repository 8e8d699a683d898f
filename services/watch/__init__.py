"""The watchdog and where its findings go: incidents, Slack, Sentry."""
