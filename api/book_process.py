"""Books are read and planned in a process of their own.

Reading a 5-million-character book and cutting it into sentences is a second of pure
Python: in the API process it would hold the GIL that every other request needs (a plain
submit's p99 went from 20 ms to 200 ms while one ran), and leave the allocator tens of MB
it keeps. Here it runs in a small pool of spawned processes; the API's thread only waits
for the answer. The functions sent are pure (text in, chapters or a plan out), and what
they raise (BookError, ValueError) comes back as itself.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = ["in_book_process", "shutdown_book_processes"]

Result = TypeVar("Result")

# Two: a book waits for another only when two are already being read on a 2-core box.
BOOK_PROCESSES = 2
# A child is replaced after this many books, so what its allocator keeps is returned.
BOOKS_PER_PROCESS = 50

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            # Spawned, not forked: the API has threads, and a fork copies their locks.
            _pool = ProcessPoolExecutor(
                max_workers=BOOK_PROCESSES,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=BOOKS_PER_PROCESS,
            )
        return _pool


def in_book_process(fn: Callable[..., Result], /, *args: Any, **kwargs: Any) -> Result:
    """`fn(*args, **kwargs)` in a book process; blocks the calling thread (call it from a
    worker thread, never the event loop) and raises what `fn` raised."""
    return _get_pool().submit(fn, *args, **kwargs).result()


def shutdown_book_processes() -> None:
    global _pool
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
