"""Tollgate gateway service."""
