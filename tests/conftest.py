"""Shared fixtures. Session-scoped resources first (moto S3, migrated databases), then the
settings pointing at them, then function-scoped clients and factories."""

from __future__ import annotations

pytest_plugins = ["tests.plugins.s3"]
