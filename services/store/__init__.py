"""Postgres (and embedded SQLite): the tables and every SQL statement cronwork runs."""
