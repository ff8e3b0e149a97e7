"""Reverie: agents that learn inside world models."""

__version__ = "0.1.0"
