"""`once`: a lazily built object per process, safe under a worker of threads."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["once"]

T = TypeVar("T")


def once(build: Callable[[], T]) -> Callable[[], T]:
    """`build()` runs at most once per process, however many threads ask at the same time
    (`functools.cache` would let each of them build its own: a `--pool threads` worker
    opened one object store, router state and engine set per thread)."""
    lock = threading.Lock()
    built: list[T] = []

    @functools.wraps(build)
    def get() -> T:
        if not built:
            with lock:
                if not built:
                    built.append(build())
        return built[0]

    return get
