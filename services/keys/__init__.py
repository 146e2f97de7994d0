"""Tollgate keys service."""
