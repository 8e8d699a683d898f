"""The HTTP surface: health endpoints, metrics and the dashboard."""
