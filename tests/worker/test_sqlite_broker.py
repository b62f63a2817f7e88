"""The embedded broker when the API, the worker and beat start on a new file together."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from kombu import Connection

from worker import sqlite_broker

QUEUES = ("speech", "transcription", "audiobook", "maintenance", "webhooks")
PROCESSES = 3
ROUNDS = 5


def _start_like_a_process(url: str, barrier: multiprocessing.synchronize.Barrier) -> str:
    sqlite_broker.register()
    try:
        with Connection(url) as connection:
            channel = connection.default_channel
            barrier.wait()
            for queue in QUEUES:
                channel._new_queue(queue)
                channel._put(queue, {"body": queue})
        return "ok"
    except Exception as exc:  # reported to the test, which shows it
        return f"{type(exc).__name__}: {exc}"


def _run(
    url: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue
) -> None:
    results.put(_start_like_a_process(url, barrier))


def test_processes_starting_together_all_get_their_queues(tmp_path: Path) -> None:
    # Before the setup retried, most rounds failed: "table kombu_queue already exists",
    # "database is locked" or a UNIQUE violation on the queue's name.
    context = multiprocessing.get_context("fork")
    for round_ in range(ROUNDS):
        url = f"sqla+sqlite:///{tmp_path}/broker-{round_}.db"
        barrier = context.Barrier(PROCESSES)
        results = context.Queue()
        processes = [
            context.Process(target=_run, args=(url, barrier, results)) for _ in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        assert outcomes == ["ok"] * PROCESSES, f"round {round_}: {outcomes}"
        sqlite_broker.register()
        with Connection(url) as connection:
            channel = connection.default_channel
            for queue in QUEUES:
                assert channel._size(queue) == PROCESSES  # one row per queue, every message on it
