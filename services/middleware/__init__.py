"""Dramatiq middleware cronwork adds to every broker, one class per module."""
