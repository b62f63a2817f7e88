"""Pipeline throughput: speech jobs/s end to end, against bare Celery no-op tasks.

In one run, on the same Redis and the same machine:

- bare Celery: a minimal Celery app (the `bare_app` below, with speechq's worker settings:
  acks_late, prefetch 1, ignore results, the same time limits and worker flags) and a
  `celery -A pipeline_throughput:bare_app worker --concurrency 2` subprocess. M no-op
  tasks are sent; each bumps a Redis counter and records when it finished. Rate: M over
  the time from the first send until the last task finished.
- speechq: PostgreSQL, Redis, S3 (a moto server subprocess; `--storage file` for a local
  folder), `speechq api`, `speechq worker --concurrency 2`, and a zero-latency fake
  OpenAI-compatible TTS server (`_stack.py`, as a subprocess) that answers
  POST /v1/audio/speech with 0.2 s of pre-encoded silence. M speech jobs (mp3, so no
  transcode) are submitted by 16 concurrent clients; rate: M over the time from the first
  submit until the last job's `finished_at`, all of them `succeeded`.

Completion is polled from Redis (bare) and from the jobs table (speechq) rather than
through the API, so that polling does not load the process under test; the exact end
is the last task's own timestamp or the last job's `finished_at`.

The two alternate for `--rounds` rounds (default 2) so that the noise of a shared machine
falls on both; the ratio is of the totals. Target: speechq >= 66% of bare Celery.

    .venv/bin/python bench/pipeline_throughput.py [--jobs 500] [--rounds 2] [--storage s3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import redis
from celery import Celery

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _stack import (  # noqa: E402
    REDIS_HOST,
    REDIS_PORT,
    SPEECH_BODY,
    CpuMeter,
    Procs,
    Stack,
    describe_run,
    run_load,
    run_main,
    start_fake_tts_stack,
)

TARGET_RATIO = 0.66
WARM_UP_JOBS = 20
POLL_S = 0.05

# --- bare Celery: imported by the worker subprocess as `pipeline_throughput:bare_app` ---

BARE_BROKER_ENV = "SPEECHQ_BENCH_BARE_BROKER"
BARE_QUEUE = "bench-noop"
BARE_COUNTER = "speechq-bench:done"
BARE_LAST = "speechq-bench:last"
# Count the task and keep the latest finish time, in one round trip.
_DONE_SCRIPT = """
redis.call('INCR', KEYS[1])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > last then redis.call('SET', KEYS[2], ARGV[1]) end
return 1
"""

bare_app = Celery(
    "speechq_bench_bare", broker=os.environ.get(BARE_BROKER_ENV, "redis://127.0.0.1:6379/14")
)
# What worker/celery_app.py sets for speechq's own tasks, so only the work differs.
bare_app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_time_limit=900,
    task_soft_time_limit=870,
    task_default_queue=BARE_QUEUE,
    broker_transport_options={"visibility_timeout": 1800},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
)
_bare_redis: redis.Redis | None = None


@bare_app.task(name="speechq_bench.noop")
def noop() -> None:
    global _bare_redis
    if _bare_redis is None:  # one connection per worker process, made after the fork
        _bare_redis = redis.Redis.from_url(bare_app.conf.broker_url)
    _bare_redis.eval(_DONE_SCRIPT, 2, BARE_COUNTER, BARE_LAST, repr(time.time()))


# --- measurements ---------------------------------------------------------------------


@dataclass
class Run:
    name: str
    jobs: int
    seconds: float
    failed: int = 0
    note: str = ""

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


class Bare:
    def __init__(self, procs: Procs, redis_db: int, loglevel: str) -> None:
        self.broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"
        self.redis = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db)
        self.redis.flushdb()
        bare_app.conf.broker_url = self.broker
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHQ_")}
        env.update({BARE_BROKER_ENV: self.broker, "PYTHONPATH": str(BENCH_DIR)})
        argv = [sys.executable, "-m", "celery", "-A", "pipeline_throughput:bare_app", "worker"]
        argv += ["--concurrency", "2", "--pool", "prefork", "--loglevel", loglevel]
        argv += ["--queues", BARE_QUEUE, "--without-gossip", "--without-mingle"]
        argv += ["--without-heartbeat", "--hostname", f"bench-bare-{os.getpid()}@%h"]
        self.procs = procs
        procs.start("bare-worker", argv, env)

    def run(self, count: int, timeout_s: float) -> Run:
        self.redis.delete(BARE_COUNTER, BARE_LAST)
        started = time.time()
        for _ in range(count):
            bare_app.send_task("speechq_bench.noop", queue=BARE_QUEUE)
        deadline = time.monotonic() + timeout_s
        while int(self.redis.get(BARE_COUNTER) or 0) < count:
            self.procs.check_alive("bare-worker")
            if time.monotonic() > deadline:
                done = int(self.redis.get(BARE_COUNTER) or 0)
                raise TimeoutError(f"bare Celery: {done}/{count} tasks done after {timeout_s} s")
            time.sleep(POLL_S)
        last = float(self.redis.get(BARE_LAST) or 0)
        return Run("bare Celery no-op", count, last - started)

    def close(self) -> None:
        self.redis.flushdb()
        self.redis.close()
        bare_app.close()


class Pipeline:
    def __init__(self, stack: Stack, client: str) -> None:
        self.stack = stack
        self.client = client
        self.db = psycopg.connect(stack.psycopg_url, autocommit=True)

    def run(self, count: int, timeout_s: float) -> Run:
        started = time.time()
        submitted = run_load(
            "submit",
            f"{self.stack.api_url}/v1/jobs/speech",
            method="POST",
            body=SPEECH_BODY,
            headers=self.stack.headers,
            requests=count,
            clients=16,
            expect=202,
            keep_bodies=True,
            client=self.client,
            timeout_s=timeout_s,
        )
        submit_s = time.time() - started
        ids = [body["id"] for body in submitted.bodies]
        if submitted.errors:
            raise RuntimeError(f"{submitted.errors} submits failed: {submitted.statuses}")
        deadline = time.monotonic() + timeout_s
        while True:
            row = self.db.execute(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'),"
                " count(*) FILTER (WHERE status IN ('failed', 'canceled')),"
                " min(started_at), max(finished_at) FROM jobs WHERE id = ANY(%s)",
                (ids,),
            ).fetchone()
            assert row is not None
            succeeded, failed, first_start, last_finish = row
            if succeeded + failed >= len(ids):
                break
            self.stack.procs.check_alive("worker")
            if time.monotonic() > deadline:
                raise TimeoutError(f"speechq: {succeeded}/{len(ids)} succeeded after {timeout_s} s")
            time.sleep(POLL_S)
        seconds = last_finish.timestamp() - started
        busy = last_finish.timestamp() - first_start.timestamp()
        note = (
            f"submits took {submit_s:.2f} s ({count / submit_s:.0f}/s); worker busy "
            f"{busy:.2f} s from first start to last finish ({succeeded / busy:.0f} jobs/s)"
        )
        return Run("speechq speech jobs", succeeded, seconds, failed=failed, note=note)

    def check_one(self, job_id: str) -> str:
        """The API's view of one job and its audio: a sanity check, not timed."""
        with httpx.Client(base_url=self.stack.api_url, headers=self.stack.headers) as client:
            job = client.get(f"/v1/jobs/{job_id}").json()
            content = client.get(f"/v1/jobs/{job_id}/content")
        from worker.audio import sniff_audio_format

        ok = (
            job["status"] == "succeeded"
            and content.status_code == 200
            and len(content.content) == job["result"]["bytes"]
            and sniff_audio_format(content.content[:16]) == "mp3"
        )
        return "ok" if ok else f"UNEXPECTED: {job['status']}, {content.status_code}"

    def last_job_id(self) -> str:
        row = self.db.execute("SELECT id FROM jobs ORDER BY id DESC LIMIT 1").fetchone()
        assert row is not None
        return str(row[0])

    def close(self) -> None:
        self.db.close()


def _total(name: str, runs: list[Run]) -> Run:
    return Run(name, sum(r.jobs for r in runs), sum(r.seconds for r in runs))


def measure(
    args: argparse.Namespace, bare: Bare, pipeline: Pipeline, procs: tuple[Procs, ...]
) -> None:
    # Warm-up: worker processes forked, imports done, pools and clients open.
    bare.run(WARM_UP_JOBS, args.timeout)
    pipeline.run(WARM_UP_JOBS, args.timeout)
    bare_runs: list[Run] = []
    pipe_runs: list[Run] = []
    bare_cpu, pipe_cpu = CpuMeter(*procs), CpuMeter(*procs)
    for round_no in range(1, args.rounds + 1):
        with bare_cpu.measure():
            bare_runs.append(bare.run(args.jobs, args.timeout))
        with pipe_cpu.measure():
            pipe_runs.append(pipeline.run(args.jobs, args.timeout))
        b, p = bare_runs[-1], pipe_runs[-1]
        print(
            f"round {round_no}: bare Celery {b.rate:7.1f} tasks/s ({b.seconds:.2f} s) | "
            f"speechq {p.rate:6.1f} jobs/s ({p.seconds:.2f} s, {p.failed} failed) | "
            f"ratio {p.rate / b.rate:.1%}\n         {p.note}",
            flush=True,
        )
    print(f"content check of the last job: {pipeline.check_one(pipeline.last_job_id())}")
    total_b, total_p = _total("bare", bare_runs), _total("speechq", pipe_runs)
    ratio = total_p.rate / total_b.rate if total_b.rate else float("nan")
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(f"bare Celery no-op: {total_b.rate:.1f} tasks/s")
    print(f"speechq pipeline:  {total_p.rate:.1f} jobs/s")
    print(f"ratio {ratio:.1%} vs target {TARGET_RATIO:.0%}: {verdict}")
    print(f"bare    {bare_cpu.report(total_b.jobs, 'task')}")
    print(f"speechq {pipe_cpu.report(total_p.jobs, 'job')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs (and tasks) per round (500)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (2)")
    parser.add_argument("--storage", choices=("s3", "file"), default="s3", help="(s3: moto)")
    parser.add_argument("--client", choices=("httpx", "raw"), default="httpx")
    parser.add_argument("--loglevel", default="INFO", help="both workers' log level (INFO)")
    parser.add_argument("--redis-db", type=int, default=13, help="speechq's Redis db (13)")
    parser.add_argument("--bare-redis-db", type=int, default=14, help="bare Celery's db (14)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per round and phase (s)")
    args = parser.parse_args(argv)
    if 0 in (args.redis_db, args.bare_redis_db) or args.redis_db == args.bare_redis_db:
        parser.error("use two different Redis dbs other than 0: both are flushed")

    with contextlib.ExitStack() as cleanup:  # unwinds in reverse: every process stopped
        procs, stack, _ = start_fake_tts_stack(
            cleanup,
            storage=args.storage,
            redis_db=args.redis_db,
            loglevel=args.loglevel,
            label="pipeline",
        )
        bare = Bare(procs, args.bare_redis_db, args.loglevel)
        cleanup.callback(bare.close)
        pipeline = Pipeline(stack, args.client)
        cleanup.callback(pipeline.close)
        print(
            f"pipeline throughput: {args.jobs} per round, {args.rounds} rounds, "
            f"storage {args.storage}, worker concurrency 2 (both), "
            f"log level {args.loglevel}; {describe_run()}",
            flush=True,
        )
        measure(args, bare, pipeline, (procs, stack.procs))
    return 0


if __name__ == "__main__":
    run_main(main)
