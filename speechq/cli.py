"""The `speechq` command: `up` runs everything on the embedded default; `api`, `worker`,
`beat` and `migrate` run one part each; `keys` manages API keys."""

from __future__ import annotations

import argparse
import errno
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails
    from sqlalchemy.orm import Session

    from speechq.apikeys import NewKey

__all__ = ["CliError", "main"]

# Commands that keep state in the data folder (the embedded database holds webhook
# secrets and transcripts; blobs hold audio): whatever they create is for this user only.
_PRIVATE_COMMANDS = frozenset({"up", "api", "worker", "beat", "migrate", "keys"})
_PRIVATE_UMASK = 0o077


class CliError(Exception):
    """One line for stderr, and the exit code: 2 bad usage or config, 1 otherwise."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _settings() -> Any:
    # Imported late: `--config` and `up` set environment variables first.
    from pydantic import ValidationError

    from speechq.settings import get_settings

    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "SPEECHQ_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
        raise CliError(f"invalid {name}: {_describe(error)}", 2) from None


def _private_data_dir(settings: Any, *, create: bool = False) -> Path:
    """The data folder, 0700: made so if `create`, tightened if it exists and is looser.
    (The umask makes what goes in it 0600; `storage` sets its files' modes itself.)"""
    data_dir = Path(settings.data_dir).resolve()
    try:
        if create:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = data_dir.stat().st_mode
        if mode & 0o077:
            data_dir.chmod(mode & 0o700)
    except FileNotFoundError:
        pass  # not made yet: storage makes it 0700 when it is needed
    except OSError as exc:
        if create and not data_dir.is_dir():
            raise CliError(f"cannot make the data folder {data_dir}: {exc.strerror}") from None
        print(
            f"speechq: warning: cannot make the data folder {data_dir} private (0700): "
            f"{exc.strerror}",
            file=sys.stderr,
        )
    return data_dir


def _check_config(settings: Any) -> None:
    """Load the config (models, guardrails) once, here, before anything starts: a bad one
    is then one line and exit 2, not a traceback from every process."""
    from speechq.guardrails import parse_guardrails
    from speechq.registry import ConfigError, load_registry

    try:
        registry = load_registry(settings.config)
        parse_guardrails(registry.raw.get("guardrails"), resolve_model=registry.resolve).close()
    except ConfigError as exc:
        message = _one_line(exc)
        if str(settings.config) not in message:  # load errors name the file already
            message = f"config {settings.config or '(built-in)'}: {message}"
        raise CliError(message, 2) from None


def _check_port(host: str, port: int) -> None:
    """Bind `host:port` the way uvicorn will (and let go), so a port in use is found
    before anything starts or a URL pointing at someone else's server is printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(
                    f"port {port} on {host} is in use; choose another with --port"
                ) from None
            reason = exc.strerror or _one_line(exc)
            raise CliError(f"cannot listen on {host} port {port}: {reason}", 2) from None


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (1-65535)")
    return port


def _describe(error: ErrorDetails) -> str:
    """A pydantic error as a short phrase: "must match ^[a-z]+$", "must be at least 1"."""
    ctx = error.get("ctx") or {}
    phrases = {
        "string_pattern_mismatch": "must match {pattern}",
        "greater_than_equal": "must be at least {ge}",
        "greater_than": "must be more than {gt}",
        "less_than_equal": "must be at most {le}",
        "less_than": "must be less than {lt}",
        "string_too_short": "must be at least {min_length} characters",
        "string_too_long": "must be at most {max_length} characters",
    }
    if error["type"] in phrases:
        return phrases[error["type"]].format(**ctx)
    if error["type"] == "value_error" and "error" in ctx:
        return str(ctx["error"])
    message = error["msg"]
    return message[:1].lower() + message[1:]


def cmd_migrate(_: argparse.Namespace) -> int:
    from storage.db import prepare_sqlite_file
    from storage.migrate import upgrade

    settings = _settings()
    _private_data_dir(settings)
    prepare_sqlite_file(settings.resolved_database_url)
    upgrade(settings.resolved_database_url)
    print("database schema is up to date", file=sys.stderr)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    _check_config(settings)
    _check_port(args.host, args.port)
    _private_data_dir(settings)
    # Its 40 request threads would each get an arena that keeps what a large request
    # freed (a book, a 16 MB body): two arenas give it back to the next request.
    _limit_malloc_arenas()
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
    _check_config(settings)
    _private_data_dir(settings)
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
    ~450 MB where 2 arenas hold ~300 MB at the same speed (docs/benchmarks.md); the API's
    threads likewise. Set before the threads start; elsewhere than glibc this does nothing."""
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

    schedule = _private_data_dir(settings, create=True) / "celerybeat-schedule"
    celery_app.start(["beat", "--schedule", str(schedule), "--loglevel", settings.log_level])
    return 0


_KEY_OPTIONS = {"is_admin": "--admin", "budget_usd": "--budget-usd", "rpm_limit": "--rpm-limit"}


def _new_key(args: argparse.Namespace) -> NewKey:
    """The key `keys create` asks for, checked by the rules `POST /v1/keys` uses."""
    from pydantic import ValidationError

    from speechq.apikeys import NewKey

    try:
        return NewKey(
            name=args.name,
            team=args.team,
            budget_usd=args.budget_usd,
            rpm_limit=args.rpm_limit,
            is_admin=args.admin,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        option = _KEY_OPTIONS.get(field, f"--{field}")
        raise CliError(f"invalid {option}: {_describe(error)}", 2) from None


@contextmanager
def _keys_session(database_url: str) -> Iterator[Session]:
    """A session on an existing, migrated database; anything else is one line."""
    from sqlalchemy import inspect, make_url
    from sqlalchemy.exc import SQLAlchemyError

    from storage.db import session_scope, sqlite_path

    path = sqlite_path(database_url)
    if path is not None and not path.is_file():
        # Connecting would leave an empty database file behind.
        raise CliError(f"no database at {path}; run `speechq migrate` or set SPEECHQ_DATA_DIR")
    where = str(path or make_url(database_url).render_as_string(hide_password=True))
    try:
        with session_scope(database_url) as session:
            if not inspect(session.connection()).has_table("api_keys"):
                raise CliError(f"the database at {where} has no tables; run `speechq migrate`")
            yield session
    except SQLAlchemyError as exc:
        reason = _one_line(getattr(exc, "orig", None) or exc)
        raise CliError(f"cannot use the database at {where}: {reason}") from None


def cmd_keys(args: argparse.Namespace) -> int:
    from storage import queries

    settings = _settings()
    new_key = _new_key(args) if args.keys_command == "create" else None
    with _keys_session(settings.resolved_database_url) as session:
        if new_key is not None:
            row, plaintext = queries.create_api_key(session, **new_key.model_dump())
            print(
                json.dumps({"id": row.id, "key": plaintext, "webhook_secret": row.webhook_secret})
            )
        elif args.keys_command == "list":
            for row in queries.list_api_keys(session):
                state = "revoked" if row.revoked_at else "active"
                print(f"{row.id}\t{row.name or ''}\t{row.team or ''}\t{state}")
        else:
            if queries.revoke_api_key(session, key_id=args.id) is None:
                raise CliError(f"no key with id {args.id}")
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
    # Before anything is made or started: a bad config or a taken port is one line.
    _check_config(settings)
    _check_port(args.host, args.port)
    data_dir = _private_data_dir(settings, create=True)
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
    up.add_argument("--port", type=_port, default=8000)
    up.set_defaults(func=cmd_up)

    api = with_config(sub.add_parser("api", help="run the HTTP API"))
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=_port, default=8000)
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
    if args.command in _PRIVATE_COMMANDS:
        # Every file these make (SQLite's, the broker's, blobs, beat's schedule, temp
        # files) is 0600 and every folder 0700; `up`'s children inherit it.
        os.umask(_PRIVATE_UMASK)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"speechq: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
