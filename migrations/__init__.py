"""Alembic migrations for cronwork's schema (see services/models.py)."""
