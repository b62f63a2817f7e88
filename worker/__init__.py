"""Celery worker: tasks, providers, the router and audio processing.

Only this package calls providers.
"""
