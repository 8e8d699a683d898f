"""cronwork: recurring work on time, exactly once, visibly, across many instances."""

__version__ = "0.1.0"
