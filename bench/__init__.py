"""Benchmarks: each ``bench/<name>.py`` not starting with ``_`` is one ``make bench`` runs."""
