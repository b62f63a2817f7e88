"""The `speechq` command: `up` runs everything on the embedded default; `api`, `worker`,
`beat` and `migrate` run one part each; `keys` manages API keys."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _settings() -> Any:
    # Imported late: `--config` and `up` set environment variables first.
    from speechq.settings import get_settings

    get_settings.cache_clear()
    return get_settings()


def cmd_migrate(_: argparse.Namespace) -> int:
    from storage.migrate import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    print("database schema is up to date", file=sys.stderr)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    from worker.celery_app import celery_app

    argv = [
        "worker",
        "--queues",
        args.queues,
        "--concurrency",
        str(args.concurrency or settings.worker_concurrency),
        "--loglevel",
        settings.log_level,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    if args.pool:
        argv += ["--pool", args.pool]
    if args.pool == "threads":
        _limit_malloc_arenas()
    celery_app.worker_main(argv)
    return 0


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own arena, so a worker of 16 threads held
    ~450 MB where 2 arenas hold ~300 MB at the same speed (docs/benchmarks.md). Set before
    the pool's threads start; elsewhere than glibc this does nothing."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        ctypes.CDLL(name).mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def cmd_beat(_: argparse.Namespace) -> int:
    settings = _settings()
    from worker.celery_app import celery_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.data_dir.resolve() / "celerybeat-schedule"
    celery_app.start(["beat", "--schedule", str(schedule), "--loglevel", settings.log_level])
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from storage import queries
    from storage.db import session_scope

    settings = _settings()
    with session_scope(settings.resolved_database_url) as session:
        if args.keys_command == "create":
            row, plaintext = queries.create_api_key(
                session,
                name=args.name,
                team=args.team,
                budget_usd=args.budget_usd,
                rpm_limit=args.rpm_limit,
                is_admin=args.admin,
            )
            print(
                json.dumps({"id": row.id, "key": plaintext, "webhook_secret": row.webhook_secret})
            )
        elif args.keys_command == "list":
            for row in queries.list_api_keys(session):
                state = "revoked" if row.revoked_at else "active"
                print(f"{row.id}\t{row.name or ''}\t{row.team or ''}\t{state}")
        else:
            if queries.revoke_api_key(session, key_id=args.id) is None:
                print(f"no key with id {args.id}", file=sys.stderr)
                return 1
            print(f"revoked {args.id}")
    return 0


def _master_key(data_dir: Path) -> str:
    """SPEECHQ_MASTER_KEY, else one generated once and kept in the data folder."""
    if os.environ.get("SPEECHQ_MASTER_KEY"):
        return os.environ["SPEECHQ_MASTER_KEY"]
    path = data_dir / "master_key"
    if path.exists():
        return path.read_text().strip()
    key = "sq-master-" + secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def cmd_up(args: argparse.Namespace) -> int:
    os.environ.setdefault("SPEECHQ_WEBHOOK_ALLOW_PRIVATE", "true")
    settings = _settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["SPEECHQ_DATA_DIR"] = str(data_dir)
    os.environ["SPEECHQ_MASTER_KEY"] = _master_key(data_dir)
    cmd_migrate(args)

    me = [sys.executable, "-m", "speechq.cli"]
    children = {
        "api": subprocess.Popen([*me, "api", "--host", args.host, "--port", str(args.port)]),
        "worker": subprocess.Popen([*me, "worker"]),
        "beat": subprocess.Popen([*me, "beat"]),
    }
    url = f"http://{args.host}:{args.port}"
    print(
        f"\nspeechq is starting on the embedded default (data in {data_dir})\n"
        f"  URL:     {url}\n"
        f"  API key: {os.environ['SPEECHQ_MASTER_KEY']}\n"
        f"  try:     curl -s {url}/v1/models -H 'Authorization: Bearer <key>'\n",
        flush=True,
    )
    return _supervise(children)


def _supervise(children: dict[str, subprocess.Popen[bytes]]) -> int:
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                print(f"speechq {name} exited with {child.returncode}; stopping", file=sys.stderr)
                code = child.returncode or 1
                stopping = True
        time.sleep(0.5)
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 20
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="LiteLLM-style YAML (same as SPEECHQ_CONFIG)")
        return p

    up = with_config(sub.add_parser("up", help="run everything on the embedded default"))
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.set_defaults(func=cmd_up)

    api = with_config(sub.add_parser("api", help="run the HTTP API"))
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)
    api.set_defaults(func=cmd_api)

    worker = with_config(sub.add_parser("worker", help="run a Celery worker"))
    worker.add_argument("--queues", default="speech,transcription,audiobook,maintenance,webhooks")
    worker.add_argument("--concurrency", type=int, default=None)
    worker.add_argument("--hostname", default=None)
    # Audiobook segments wait on providers: a worker of threads serves many at once.
    worker.add_argument("--pool", choices=["prefork", "threads", "solo"], default=None)
    worker.set_defaults(func=cmd_worker)

    with_config(sub.add_parser("beat", help="run the periodic scheduler")).set_defaults(
        func=cmd_beat
    )
    with_config(sub.add_parser("migrate", help="apply database migrations")).set_defaults(
        func=cmd_migrate
    )

    keys = with_config(sub.add_parser("keys", help="manage API keys"))
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create")
    create.add_argument("--name")
    create.add_argument("--team")
    create.add_argument("--budget-usd", type=float)
    create.add_argument("--rpm-limit", type=int)
    create.add_argument("--admin", action="store_true")
    keys_sub.add_parser("list")
    revoke = keys_sub.add_parser("revoke")
    revoke.add_argument("id")
    keys.set_defaults(func=cmd_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "config", None):
        os.environ["SPEECHQ_CONFIG"] = str(Path(args.config).resolve())
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
