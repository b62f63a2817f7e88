"""Submit latency: POST /v1/jobs/speech against GET /healthz, 16 concurrent clients.

Starts its own stack and removes it afterwards:

- production shape (default): a fresh PostgreSQL database, a Redis db (flushed before
  and after), the API as `speechq api` in its own process. No worker runs: the queue
  just fills, which does not change what a submit costs.
- `--embedded`: also the embedded default (SQLite database, Celery over kombu's SQLAlchemy
  transport on SQLite) in a temporary data folder. `--no-production` skips the first.

Both endpoints are driven the same way in the same run (asyncio + httpx.AsyncClient,
closed loop, 16 clients on keep-alive connections), in alternating blocks, so that the
noise of a shared 2-core machine lands on both alike. /healthz is the floor: what the
client, uvicorn and FastAPI cost with no database or broker behind them.

The stack, process, load and measurement helpers are in `_stack.py`.

    .venv/bin/python bench/submit_latency.py [--requests 2000] [--clients 16] [--embedded]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _stack import (  # noqa: E402
    SPEECH_BODY,
    CpuMeter,
    LoadResult,
    Stack,
    describe_run,
    fake_tts_config,
    free_port,
    quantiles_ms,
    run_load,
    run_main,
    server_histogram,
    server_view,
    summarize,
)

SUBMIT_TARGET_P99_MS = 25.0


def bench_stack(stack: Stack, args: argparse.Namespace) -> None:
    api = stack.start_api()
    print(
        f"\n== {stack.label}: API at {api} (1 uvicorn process, no worker), client {args.client}",
        flush=True,
    )
    common: dict[str, Any] = {
        "headers": stack.headers,
        "clients": args.clients,
        "client": args.client,
    }
    # Warm-up: connections, imports, pools, prepared plans.
    run_load("warm-up", f"{api}/healthz", requests=200, **common)
    run_load(
        "warm-up",
        f"{api}/v1/jobs/speech",
        method="POST",
        body=SPEECH_BODY,
        expect=202,
        requests=200,
        **common,
    )
    health, submit = LoadResult("GET /healthz"), LoadResult("POST /v1/jobs/speech")
    blocks = max(1, args.blocks)
    per_block = [args.requests // blocks + (i < args.requests % blocks) for i in range(blocks)]
    health_cpu, submit_cpu = CpuMeter(stack.procs), CpuMeter(stack.procs)
    hist_before = server_histogram(api)
    for n in per_block:
        with health_cpu.measure():
            health.merge(run_load("h", f"{api}/healthz", requests=n, **common))
        with submit_cpu.measure():
            submit.merge(
                run_load(
                    "s",
                    f"{api}/v1/jobs/speech",
                    method="POST",
                    body=SPEECH_BODY,
                    expect=202,
                    requests=n,
                    **common,
                )
            )
    hist_after = server_histogram(api)
    print(summarize([health, submit]))
    print(server_view(hist_before, hist_after))
    print(f"healthz {health_cpu.report(health.count, 'request')}")
    print(f"submit  {submit_cpu.report(submit.count, 'request')}")
    p99 = quantiles_ms(submit.latencies_ms)[2]
    h99 = quantiles_ms(health.latencies_ms)[2]
    verdict = "met" if p99 <= SUBMIT_TARGET_P99_MS else "MISSED"
    print(
        f"submit p99 {p99:.1f} ms vs target {SUBMIT_TARGET_P99_MS:.0f} ms: {verdict}; "
        f"healthz p99 {h99:.1f} ms; submit/healthz req/s ratio "
        f"{submit.rate / health.rate if health.rate else float('nan'):.2f}",
        flush=True,
    )
    if submit.errors or health.errors:
        print(f"statuses: healthz {health.statuses}, submit {submit.statuses}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per endpoint (2000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument(
        "--blocks", type=int, default=4, help="alternating healthz/submit blocks (4)"
    )
    parser.add_argument(
        "--client",
        choices=("httpx", "raw"),
        default="httpx",
        help="httpx.AsyncClient (default) or a minimal asyncio HTTP/1.1 client (less CPU)",
    )
    parser.add_argument("--redis-db", type=int, default=13, help="Redis db to use (13)")
    parser.add_argument(
        "--embedded", action="store_true", help="also the embedded default (SQLite)"
    )
    parser.add_argument(
        "--no-production", action="store_true", help="skip the PostgreSQL + Redis stack"
    )
    args = parser.parse_args(argv)
    if args.redis_db == 0:
        parser.error("--redis-db 0 is not flushed by this benchmark; pick another")

    with tempfile.TemporaryDirectory(prefix="speechq-bench-cfg-") as cfg_dir:
        # The model must exist for the submit to be accepted; nothing calls it here.
        config = fake_tts_config(Path(cfg_dir) / "config.yaml", free_port())
        print(
            f"submit latency: {args.requests} requests per endpoint, {args.clients} clients, "
            f"{args.blocks} alternating blocks; {describe_run()}",
            flush=True,
        )
        if not args.no_production:
            with Stack(redis_db=args.redis_db, config_path=config, label="production") as stack:
                bench_stack(stack, args)
        if args.embedded:
            with Stack(embedded=True, config_path=config, label="embedded") as stack:
                bench_stack(stack, args)
    return 0


if __name__ == "__main__":
    run_main(main)
