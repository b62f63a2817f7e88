"""Shared core of speechq: settings, the model registry, pricing and domain types."""

__version__ = "0.1.0"
