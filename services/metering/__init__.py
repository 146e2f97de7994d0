"""Tollgate metering service."""
