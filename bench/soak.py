"""Soak: many speech jobs through faults; nothing may be lost and nothing billed twice.

N jobs (`--jobs`, 10,000) are submitted by 32 concurrent submitters to the production
shape (PostgreSQL, a private Redis, storage on a local folder or `--storage s3` on a moto
server, `speechq api`, `speechq worker --concurrency 2`, `speechq beat`, the zero-latency
fake TTS provider of `_stack.py`). While the submits run:

- at ~1/3 of the submissions the worker (the Celery parent and its children: the whole
  process group) is SIGKILLed and a new one started at once;
- at ~1/2 the soak's Redis (a redis-server of its own on a free port, never the shared
  6379) is SIGKILLed, left down `--redis-down` seconds (2) and started again, empty: every
  message that was in it is gone;
- at ~2/3 the worker is SIGKILLed and replaced again.

Short leases (SPEECHQ_JOB_LEASE_SECONDS=5, SPEECHQ_REQUEUE_AFTER_SECONDS=10) so that work
taken back comes back quickly. A submitter retries a submit that failed with a connection
error or a 5xx (the retries are counted), with the same `Idempotency-Key` so that a retry
can never make a second job; a job counts as accepted on 202 (a 200 is an idempotent
replay of a job a lost answer had created: counted apart, and followed like the others).

Then it waits (at most `--drain-timeout` s) until every job is terminal and reads the
database: succeeded, failed (by error code), still not terminal ("lost"), jobs with more
than one usage row ("duplicated usage rows", which the unique (job_id, call_key) should
make impossible), succeeded jobs without a usage row, usage rows of jobs that did not
succeed, jobs run more than once, jobs the sweeper published again, jobs nobody submitted,
and whether each succeeded job's audio is in the store. Wall time is from the first
submit to the last job's `finished_at`.

Everything it starts is stopped, the database dropped, the Redis killed and the temporary
folder removed, also on Ctrl-C or SIGTERM. Every wait and loop is bounded.

    .venv/bin/python bench/soak.py [--jobs 10000] [--clients 32] [--storage file|s3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _stack import (  # noqa: E402
    SPEECH_BODY,
    Procs,
    Stack,
    describe_run,
    fake_tts_config,
    free_port,
    quantiles_ms,
    run_main,
    start_fake_provider,
    start_s3,
)

TERMINAL = ("succeeded", "failed", "canceled")
LEASE_S = 5
REQUEUE_AFTER_S = 10
MAX_SUBMIT_TRIES = 30
PROGRESS_EVERY_S = 15.0
POLL_S = 1.0
KILL_WAIT_S = 15.0
REDIS_START_TIMEOUT_S = 30.0
WORKER_CONCURRENCY = 2


# --- the stack, on a Redis of its own -------------------------------------------------


class SoakStack(Stack):
    """`Stack` with the broker on the soak's own redis-server (set `redis_url` before
    entering): nothing to flush on the shared Redis, and this one is killed at the end."""

    redis_url: str = ""

    @property
    def broker_url(self) -> str:
        return self.redis_url

    def _flush_redis(self) -> None:
        pass


def kill9(procs: Procs, name: str) -> None:
    """SIGKILL a child's whole process group (a Celery parent and its pool) and reap it."""
    child = procs.children.pop(name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=KILL_WAIT_S)


class SoakRedis:
    """A redis-server subprocess on a free port: no persistence, so a restart is empty."""

    def __init__(self, procs: Procs, tmp: Path) -> None:
        self.procs = procs
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.starts = 0
        self.name = ""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary

    def start(self) -> None:
        self.starts += 1
        self.name = f"redis-{self.starts}"
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        argv += ["--dir", str(self.dir)]
        self.procs.start(self.name, argv, dict(os.environ))
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=1)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        try:
            while True:
                self.procs.check_alive(self.name)
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"redis-server did not answer on {self.port}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        kill9(self.procs, self.name)


# --- submitting ------------------------------------------------------------------------


@dataclass
class Submits:
    total: int
    done: int = 0  # submissions finished, however they ended
    accepted: list[str] = field(default_factory=list)  # 202
    replayed: list[str] = field(default_factory=list)  # 200: an Idempotency-Key replay
    rejected: Counter[int] = field(default_factory=Counter)  # other 4xx
    gave_up: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # cause -> retries
    first_at: float = 0.0
    last_at: float = 0.0


async def submit_all(
    api_url: str,
    headers: dict[str, str],
    submits: Submits,
    clients: int,
    idempotency_prefix: str | None,
    timeout_s: float,
) -> None:
    next_index = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    url = f"{api_url}/v1/jobs/speech"

    async with httpx.AsyncClient(
        headers=headers, limits=limits, timeout=httpx.Timeout(30.0)
    ) as client:

        async def submit_one(index: int) -> None:
            extra = (
                {"Idempotency-Key": f"{idempotency_prefix}-{index}"} if idempotency_prefix else {}
            )
            for attempt in range(MAX_SUBMIT_TRIES):
                if attempt:
                    # Backoff with jitter, at most 2 s: the faults last seconds.
                    await asyncio.sleep(random.uniform(0, min(2.0, 0.1 * 2**attempt)))
                try:
                    response = await client.post(url, json=SPEECH_BODY, headers=extra)
                except httpx.TransportError as exc:
                    submits.retries[type(exc).__name__] += 1
                    continue
                if response.status_code >= 500:
                    submits.retries[f"HTTP {response.status_code}"] += 1
                    continue
                if response.status_code == 202:
                    submits.accepted.append(response.json()["id"])
                elif response.status_code == 200:
                    submits.replayed.append(response.json()["id"])
                else:
                    submits.rejected[response.status_code] += 1
                return
            submits.gave_up += 1

        async def submitter() -> None:
            nonlocal next_index
            while next_index < submits.total:
                index = next_index
                next_index += 1
                if not submits.first_at:
                    submits.first_at = time.time()
                try:
                    await submit_one(index)
                finally:
                    submits.done += 1
                    submits.last_at = time.time()

        await asyncio.wait_for(asyncio.gather(*(submitter() for _ in range(clients))), timeout_s)


# --- faults ----------------------------------------------------------------------------


class Faults:
    def __init__(self, stack: SoakStack, soak_redis: SoakRedis, redis_down_s: float) -> None:
        self.stack = stack
        self.redis = soak_redis
        self.redis_down_s = redis_down_s
        self.workers = 0
        self.worker = ""
        self.events: list[str] = []
        self.t0 = 0.0
        self.db: psycopg.Connection[Any] | None = None  # used from the fault thread only

    def start_worker(self) -> None:
        self.workers += 1
        self.worker = f"worker-{self.workers}"
        argv = [sys.executable, "-m", "speechq.cli", "worker"]
        argv += ["--concurrency", str(WORKER_CONCURRENCY)]
        argv += ["--hostname", f"soak-{self.workers}-{os.getpid()}@%h"]
        self.stack.procs.start(self.worker, argv, self.stack.env())

    def _running(self) -> str:
        if self.db is None:
            self.db = psycopg.connect(self.stack.psycopg_url, autocommit=True)
        row = self.db.execute(
            "SELECT count(*) FILTER (WHERE status = 'running'),"
            " count(*) FILTER (WHERE status = 'queued') FROM jobs"
        ).fetchone()
        assert row is not None
        return f"{row[0]} running, {row[1]} queued"

    def kill_worker(self, done: int) -> None:
        at = time.time() - self.t0
        state = self._running()
        killed = self.worker
        kill9(self.stack.procs, killed)
        self.start_worker()
        self.events.append(
            f"t={at:6.1f} s, after {done} submissions: SIGKILLed {killed} "
            f"({state}), started {self.worker}"
        )

    def restart_redis(self, done: int) -> None:
        at = time.time() - self.t0
        state = self._running()
        self.redis.kill()
        time.sleep(self.redis_down_s)
        self.redis.start()
        up = time.time() - self.t0
        self.events.append(
            f"t={at:6.1f} s, after {done} submissions: SIGKILLed Redis ({state}); "
            f"started again empty at t={up:.1f} s"
        )

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


async def inject_faults(faults: Faults, submits: Submits) -> None:
    n = submits.total
    plan: list[tuple[int, Callable[[int], None]]] = [
        (n // 3, faults.kill_worker),
        (n // 2, faults.restart_redis),
        (2 * n // 3, faults.kill_worker),
    ]
    for threshold, action in plan:
        while submits.done < max(1, threshold):
            await asyncio.sleep(0.02)
        await asyncio.to_thread(action, submits.done)


async def load(
    args: argparse.Namespace, stack: SoakStack, faults: Faults, submits: Submits, prefix: str | None
) -> None:
    faulting = asyncio.create_task(inject_faults(faults, submits))
    try:
        await submit_all(
            stack.api_url, stack.headers, submits, args.clients, prefix, args.submit_timeout
        )
        # Every threshold is reached once all are submitted; the last fault may still run.
        await asyncio.wait_for(faulting, 120)
    finally:
        faulting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await faulting


# --- waiting and reading the outcome ------------------------------------------------------


def check_alive(stack: SoakStack, faults: Faults) -> None:
    """A process that died by itself is a finding: stop with its log's tail."""
    for name in ("api", "beat", faults.worker):
        stack.procs.check_alive(name)
    faults.redis.procs.check_alive(faults.redis.name)


def status_counts(db: psycopg.Connection[Any], ids: list[str]) -> Counter[str]:
    rows = db.execute(
        "SELECT status, count(*) FROM jobs WHERE id = ANY(%s) GROUP BY status", (ids,)
    ).fetchall()
    return Counter({status: int(count) for status, count in rows})


def drain(
    db: psycopg.Connection[Any], ids: list[str], stack: SoakStack, faults: Faults, timeout_s: float
) -> Counter[str]:
    deadline = time.monotonic() + timeout_s
    next_report = time.monotonic() + PROGRESS_EVERY_S
    while True:
        counts = status_counts(db, ids)
        terminal = sum(counts[s] for s in TERMINAL)
        if terminal >= len(ids) or time.monotonic() > deadline:
            return counts
        if time.monotonic() >= next_report:
            at = time.time() - faults.t0
            print(
                f"  t={at:6.1f} s: {terminal}/{len(ids)} terminal "
                f"({counts['queued']} queued, {counts['running']} running)",
                flush=True,
            )
            next_report += PROGRESS_EVERY_S
        check_alive(stack, faults)
        time.sleep(POLL_S)


def grep_log(path: Path, needle: str) -> list[str]:
    if not path.exists():
        return []
    with path.open(errors="replace") as f:
        return [line.rstrip() for line in f if needle in line]


def count_log(path: Path, needle: str) -> int:
    return len(grep_log(path, needle))


def missing_objects(stack: SoakStack, keys: list[str]) -> int:
    """How many of these result objects are not in the store."""
    from storage.objects import open_object_store

    env = stack.env()
    store = open_object_store(
        env["SPEECHQ_STORAGE_URL"], endpoint_url=env.get("SPEECHQ_S3_ENDPOINT_URL")
    )
    return sum(not store.exists(key) for key in keys)


def report(
    args: argparse.Namespace,
    stack: SoakStack,
    db: psycopg.Connection[Any],
    submits: Submits,
    faults: Faults,
    counts: Counter[str],
    warm_up_ids: list[str],
    drained_at: float,
) -> int:
    ids = submits.accepted + submits.replayed
    terminal = sum(counts[s] for s in TERMINAL)
    lost = len(ids) - terminal
    failed_codes = db.execute(
        "SELECT error->>'code', count(*) FROM jobs WHERE id = ANY(%s) AND status = 'failed'"
        " GROUP BY 1 ORDER BY 2 DESC",
        (ids,),
    ).fetchall()
    duplicated = db.execute(
        "SELECT job_id, count(*) FROM usage_records GROUP BY job_id HAVING count(*) > 1"
    ).fetchall()
    row = db.execute(
        "SELECT"
        " (SELECT count(*) FROM usage_records),"
        " (SELECT count(*) FROM jobs j WHERE j.status = 'succeeded' AND NOT EXISTS"
        "   (SELECT 1 FROM usage_records u WHERE u.job_id = j.id)),"
        " (SELECT count(*) FROM usage_records u JOIN jobs j ON j.id = u.job_id"
        "   WHERE j.status <> 'succeeded'),"
        " (SELECT count(*) FROM jobs WHERE NOT (id = ANY(%s)))",
        (ids + warm_up_ids,),
    ).fetchone()
    assert row is not None
    usage_rows, succeeded_unbilled, billed_not_succeeded, orphans = row
    runs = dict(
        db.execute(
            "SELECT runs, count(*) FROM jobs WHERE id = ANY(%s) GROUP BY runs ORDER BY runs",
            (ids,),
        ).fetchall()
    )
    republished = db.execute(
        "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND enqueued_at IS DISTINCT FROM created_at",
        (ids,),
    ).fetchone()
    times = db.execute(
        "SELECT max(finished_at),"
        " array_agg(EXTRACT(EPOCH FROM finished_at - created_at) * 1000)"
        " FILTER (WHERE status = 'succeeded') FROM jobs WHERE id = ANY(%s)",
        (ids,),
    ).fetchone()
    assert times is not None and republished is not None
    last_finish, latencies = times
    keys = [
        k
        for (k,) in db.execute(
            "SELECT result->>'object_key' FROM jobs WHERE id = ANY(%s) AND status = 'succeeded'",
            (ids,),
        ).fetchall()
    ]
    rerun_keys = [
        k
        for (k,) in db.execute(
            "SELECT result->>'object_key' FROM jobs"
            " WHERE id = ANY(%s) AND status = 'succeeded' AND runs > 1",
            (ids,),
        ).fetchall()
    ]
    missing = missing_objects(stack, keys)
    missing_rerun = missing_objects(stack, rerun_keys) if missing else 0

    end = last_finish.timestamp() if last_finish is not None else drained_at
    wall = end - submits.first_at
    submit_s = submits.last_at - submits.first_at
    retries = sum(submits.retries.values())
    causes = ", ".join(f"{c} {n}" for c, n in submits.retries.most_common()) or "none"
    api_log = stack.tmp / "api.log"
    worker_logs = sorted(stack.tmp.glob("worker-*.log"))
    p50, p95, p99, top = quantiles_ms([float(x) for x in latencies or []])

    print("\nfaults:")
    for event in faults.events:
        print(f"  {event}")
    print("\nresults:")
    print(f"  jobs submitted                  {submits.total}")
    print(
        f"  accepted (202)                  {len(submits.accepted)}"
        + (f" (+ {len(submits.replayed)} idempotent replays, 200)" if submits.replayed else "")
    )
    if submits.rejected or submits.gave_up:
        rejected = dict(submits.rejected)
        print(f"  NOT accepted                    {rejected}, gave up {submits.gave_up}")
    print(f"  submit retries                  {retries} ({causes})")
    print(
        "  publishes failed at submit      "
        f"{count_log(api_log, 'broker publish failed')} (left queued for the sweeper)"
    )
    print(f"  succeeded                       {counts['succeeded']}")
    codes = ", ".join(f"{code} {n}" for code, n in failed_codes)
    codes = f" ({codes})" if codes else ""
    print(f"  failed                          {counts['failed']}{codes}")
    if counts["canceled"]:
        print(f"  canceled                        {counts['canceled']}")
    print(
        f"  LOST (not terminal)             {lost}"
        + (f" ({counts['queued']} queued, {counts['running']} running)" if lost else "")
    )
    print(f"  duplicated usage rows           {len(duplicated)} jobs with more than one usage row")
    print(
        f"  usage rows                      {usage_rows} (succeeded without one: "
        f"{succeeded_unbilled}; on jobs that did not succeed: {billed_not_succeeded})"
    )
    rerun = sum(n for r, n in runs.items() if r > 1)
    print(f"  jobs run more than once         {rerun} (runs: {runs})")
    print(f"  jobs published again by sweeper {republished[0]} (at least; enqueued_at moved)")
    print(f"  jobs in the DB not submitted    {orphans}")
    print(
        f"  succeeded, audio missing        {missing} of {len(keys)}"
        + (f" ({missing_rerun} of them run more than once)" if missing else "")
    )
    print(
        f"  job latency created->finished   p50 {p50 / 1000:.1f} s, p95 {p95 / 1000:.1f} s,"
        f" p99 {p99 / 1000:.1f} s, max {top / 1000:.1f} s"
    )
    errors = [line for p in worker_logs for line in grep_log(p, "ERROR/")]
    print(f"  worker ERROR log records        {len(errors)}")
    for line in dict.fromkeys(errors[:3]):
        print(f"    {line[:200]}")
    print(
        f"  submits took                    {submit_s:.1f} s "
        f"({submits.done / submit_s if submit_s else 0:.0f}/s)"
    )
    print(f"  wall time                       {wall:.1f} s (first submit -> last finished_at)")
    print(f"  jobs/s                          {counts['succeeded'] / wall if wall else 0:.1f}")
    if duplicated:
        print(f"  duplicated: {duplicated[:10]}")
    if lost:
        stuck = db.execute(
            "SELECT id, status, runs, created_at, enqueued_at, lease_expires_at FROM jobs"
            " WHERE id = ANY(%s) AND status NOT IN ('succeeded', 'failed', 'canceled')"
            " ORDER BY id LIMIT 10",
            (ids,),
        ).fetchall()
        for job in stuck:
            print(f"  lost: {job}")
    ok = lost == 0 and not duplicated and not missing and not succeeded_unbilled
    ok = ok and not billed_not_succeeded and not submits.gave_up
    print(f"\nverdict: {'0 lost, 0 duplicated' if ok else 'PROBLEMS: see above'}")
    return 0 if ok else 1


# --- main --------------------------------------------------------------------------------


def warm_up(stack: SoakStack, db: psycopg.Connection[Any], timeout_s: float) -> list[str]:
    """One job through the whole stack, so the worker is known to consume."""
    response = httpx.post(
        f"{stack.api_url}/v1/jobs/speech", json=SPEECH_BODY, headers=stack.headers, timeout=30
    )
    response.raise_for_status()
    job_id = response.json()["id"]
    deadline = time.monotonic() + timeout_s
    while status_counts(db, [job_id])["succeeded"] < 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the warm-up job did not succeed within {timeout_s:.0f} s")
        time.sleep(0.2)
    return [job_id]


def keep_logs(target: Path | None, *dirs: Path) -> None:
    if target is None:
        return
    target.mkdir(parents=True, exist_ok=True)
    for folder in dirs:
        for log in folder.glob("*.log"):
            shutil.copy(log, target / log.name)
    print(f"logs kept in {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs to submit (10000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent submitters (32)")
    parser.add_argument("--storage", choices=("file", "s3"), default="file", help="(s3: moto)")
    parser.add_argument("--redis-down", type=float, default=2.0, help="Redis downtime, s (2)")
    parser.add_argument("--drain-timeout", type=float, default=900.0, help="s (900)")
    parser.add_argument("--submit-timeout", type=float, default=1800.0, help="s (1800)")
    parser.add_argument(
        "--no-idempotency-key", action="store_true", help="retry submits without the header"
    )
    parser.add_argument("--keep-logs", type=Path, help="copy the processes' logs here")
    args = parser.parse_args(argv)
    if args.jobs < 3 or args.clients < 1:
        parser.error("--jobs must be at least 3 and --clients at least 1")

    with contextlib.ExitStack() as cleanup:  # unwinds in reverse: every process stopped
        tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="speechq-soak-")))
        procs = Procs(tmp)
        cleanup.callback(procs.stop_all)
        soak_redis = SoakRedis(procs, tmp)
        soak_redis.start()
        provider_port = start_fake_provider(procs)
        extra_env = {
            "SPEECHQ_JOB_LEASE_SECONDS": str(LEASE_S),
            "SPEECHQ_REQUEUE_AFTER_SECONDS": str(REQUEUE_AFTER_S),
        }
        storage_url = None
        if args.storage == "s3":
            s3_url, aws = start_s3(procs, tmp)
            storage_url = "s3://speechq-bench/soak"
            extra_env |= aws | {"SPEECHQ_S3_ENDPOINT_URL": s3_url}
            os.environ.update(aws)  # the final check of the stored audio runs here
        stack = SoakStack(
            redis_db=0,
            config_path=fake_tts_config(tmp / "config.yaml", provider_port),
            storage_url=storage_url,
            extra_env=extra_env,
            label="soak",
        )
        stack.redis_url = soak_redis.url
        cleanup.enter_context(stack)
        # Runs first on the way out: processes stopped, then their logs copied.
        cleanup.callback(lambda: keep_logs(args.keep_logs, stack.tmp, tmp))
        cleanup.callback(stack.procs.stop_all)
        stack.start_api()
        faults = Faults(stack, soak_redis, args.redis_down)
        cleanup.callback(faults.close)
        faults.start_worker()
        stack.procs.start(
            "beat",
            [sys.executable, "-m", "speechq.cli", "beat"],
            stack.env() | {"SPEECHQ_LOG_LEVEL": "INFO"},
        )
        db = psycopg.connect(stack.psycopg_url, autocommit=True)
        cleanup.callback(db.close)
        warm_up_ids = warm_up(stack, db, 120)

        prefix = None if args.no_idempotency_key else f"soak-{secrets.token_hex(4)}"
        print(
            f"soak: {args.jobs} jobs, {args.clients} submitters, storage {args.storage}, "
            f"worker concurrency {WORKER_CONCURRENCY}, lease {LEASE_S} s, requeue after "
            f"{REQUEUE_AFTER_S} s, Idempotency-Key {'on' if prefix else 'off'}; "
            f"faults: worker SIGKILL at 1/3 and 2/3, Redis SIGKILL at 1/2 "
            f"(down {args.redis_down:g} s); {describe_run()}",
            flush=True,
        )
        submits = Submits(args.jobs)
        faults.t0 = time.time()
        asyncio.run(load(args, stack, faults, submits, prefix))
        ids = submits.accepted + submits.replayed
        print(
            f"  t={time.time() - faults.t0:6.1f} s: submissions done "
            f"({len(ids)} accepted); waiting for every job to end",
            flush=True,
        )
        counts = drain(db, ids, stack, faults, args.drain_timeout)
        drained_at = time.time()
        return report(args, stack, db, submits, faults, counts, warm_up_ids, drained_at)


if __name__ == "__main__":
    run_main(main)
