"""`once` builds one object per process even when threads ask at the same moment."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from worker.once import once


def test_threads_asking_together_get_one_object_built_once() -> None:
    builds: list[object] = []

    @once
    def runtime() -> object:
        time.sleep(0.05)  # long enough for every thread to arrive while it builds
        made = object()
        builds.append(made)
        return made

    barrier = threading.Barrier(16)

    def ask(_: int) -> object:
        barrier.wait()
        return runtime()

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(ask, range(16)))
    assert len(builds) == 1
    assert all(item is builds[0] for item in got)
    assert runtime() is builds[0]
