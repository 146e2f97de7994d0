"""Benchmarks: each ``bench/<name>.py`` not starting with ``_`` is an entry point ``make bench`` runs."""
