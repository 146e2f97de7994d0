"""Tollgate billing service."""
