"""What every request meets before a route: the key checked before any body is read, body
caps, text no database can store, and errors that stay answers (counted, connection kept).

The app runs in-process on SQLite and on PostgreSQL (the database is where NUL and range
errors used to turn into 500s)."""

from __future__ import annotations

import io
import socket
import sqlite3
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from speechq.settings import Settings
from storage.db import get_engine
from storage.migrate import upgrade
from tests.services import temporary_postgres_database
from tests.worker.test_book import make_epub

MASTER = "master-key-for-edge-tests"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    def make(database_url: str | None) -> Settings:
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url=database_url,
            master_key=MASTER,
            max_json_body_mb=1,
            max_book_expanded_mb=5,
        )
        upgrade(settings.resolved_database_url)
        return settings

    if request.param == "sqlite":
        yield make(None)
    else:
        with temporary_postgres_database() as url:
            yield make(url)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def tenant_key(client: TestClient) -> str:
    created = client.post("/v1/keys", headers=AUTH, json={"name": "tenant"})
    assert created.status_code == 200, created.text
    return str(created.json()["key"])


# --- the key before the body ---------------------------------------------------------------


class CountingReceive:
    """An ASGI `receive` that would hand out a huge body, counting what was asked for."""

    def __init__(self, chunk: bytes, chunks: int) -> None:
        self.chunk = chunk
        self.left = chunks
        self.bytes_read = 0

    async def __call__(self) -> dict[str, Any]:
        if self.left == 0:
            return {"type": "http.disconnect"}
        self.left -= 1
        self.bytes_read += len(self.chunk)
        return {"type": "http.request", "body": self.chunk, "more_body": self.left > 0}


async def call(
    app: FastAPI, method: str, path: str, headers: dict[str, str], receive: CountingReceive
) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def body_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every /v1 route that may take a body (from the OpenAPI schema), path filled in."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if path.startswith("/v1/") and method in ("post", "put", "patch", "delete"):
                filled = path.replace("{index}", "0")
                for name in ("{job_id}", "{book_id}", "{key_id}"):
                    filled = filled.replace(name, "x_1")
                found.append((method.upper(), filled))
    assert len(found) >= 10, found
    return found


@pytest.mark.anyio
@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=x"])
async def test_no_key_is_401_before_any_body_is_read(app: FastAPI, content_type: str) -> None:
    for method, path in body_routes(app):
        for headers in ({}, {"Authorization": "Bearer not-a-key"}):
            receive = CountingReceive(b"x" * 1_000_000, chunks=300)
            status, body = await call(
                app,
                method,
                path,
                {**headers, "content-type": content_type, "content-length": "300000000"},
                receive,
            )
            assert status == 401, (method, path, body)
            assert b'"unauthorized"' in body
            assert receive.bytes_read == 0, (method, path)


@pytest.mark.anyio
async def test_declared_body_over_the_cap_is_413_unread(app: FastAPI) -> None:
    receive = CountingReceive(b"x" * 1_000_000, chunks=300)
    status, body = await call(
        app,
        "POST",
        "/v1/jobs/speech",
        {**AUTH, "content-type": "application/json", "content-length": "300000000"},
        receive,
    )
    assert status == 413
    assert b'"request_too_large"' in body
    assert receive.bytes_read == 0


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/v1/jobs/speech", "/v1/audiobooks", "/v1/audio/speech"])
async def test_streamed_body_over_the_cap_stops_at_the_cap(app: FastAPI, path: str) -> None:
    # No Content-Length (chunked): read until the cap (1 MB here) is passed, no further.
    receive = CountingReceive(b"x" * 256_000, chunks=1200)
    status, body = await call(
        app, "POST", path, {**AUTH, "content-type": "application/json"}, receive
    )
    assert status == 413, body
    assert b'"request_too_large"' in body
    assert receive.bytes_read <= 1_000_000 + 256_000


def test_a_body_under_the_cap_reaches_the_route(client: TestClient) -> None:
    submitted = client.post(
        "/v1/jobs/speech", headers=AUTH, json={"model": "tts-1", "input": "Hi."}
    )
    assert submitted.status_code == 202, submitted.text


def test_a_form_field_over_its_cap_is_413(client: TestClient) -> None:
    answer = client.post(
        "/v1/jobs/transcriptions",
        headers=AUTH,
        data={"model": "whisper-1", "prompt": "p" * 100_000},
        files={"file": ("a.wav", b"RIFF....WAVE", "audio/wav")},
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "request_too_large"


# --- 400 at the edge, never 500 ------------------------------------------------------------

NUL, SURROGATE = "\x00", "\ud800"


def test_text_no_database_can_store_is_400(client: TestClient) -> None:
    key = {"Authorization": f"Bearer {tenant_key(client)}"}
    speech = {"model": "tts-1", "input": "Hello."}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/jobs/speech", {"json": {**speech, "input": f"Hi{NUL}there."}}),
        ("POST", "/v1/jobs/speech", {"json": {**speech, "user": f"u{NUL}"}}),
        ("POST", "/v1/jobs/speech", {"json": {**speech, "metadata": {f"k{NUL}": "v"}}}),
        ("POST", "/v1/audio/speech", {"json": {**speech, "voice": f"alloy{NUL}"}}),
        ("POST", "/v1/keys", {"json": {"name": f"name{NUL}"}}),
        ("POST", "/v1/audiobooks", {"json": {"title": f"T{NUL}", "model": "tts-1", "text": "x"}}),
        (
            "POST",
            "/v1/audiobooks/quote",
            {"json": {"model": "tts-1", "chapters": [{"title": "One", "text": f"A{NUL}b."}]}},
        ),
        ("GET", "/v1/jobs/job_%00abc", {}),
        ("GET", "/v1/jobs/job_%00abc/content", {}),
        ("GET", "/v1/jobs?after=job_%00", {}),
        ("GET", "/v1/audiobooks?after=book_%00", {}),
        ("GET", "/v1/jobs/x?wait=%00", {}),
    ]
    for method, path, kwargs in cases:
        for headers in (key, AUTH) if path != "/v1/keys" else (AUTH,):
            answer = client.request(method, path, headers=headers, **kwargs)
            assert answer.status_code == 400, (path, kwargs, answer.text)
            assert answer.json()["error"]["code"] == "invalid_request"
    # A lone surrogate can only come as a JSON escape; and in a form field.
    raw = b'{"model": "tts-1", "input": "Hi \\ud800 there."}'
    for path in ("/v1/jobs/speech", "/v1/audio/speech"):
        answer = client.post(path, headers={**key, "content-type": "application/json"}, content=raw)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == "input"
    form = client.post(
        "/v1/jobs/transcriptions",
        headers=key,
        data={"model": "whisper-1", "user": f"u{NUL}"},
        files={"file": ("a.wav", b"RIFF....WAVE", "audio/wav")},
    )
    assert form.status_code == 400, form.text
    assert form.json()["error"]["param"] == "user"


def test_dates_and_indexes_out_of_range_are_400(client: TestClient) -> None:
    for query in ("end=9999-12-31", "start=0001-01-01", "start=9999-12-31&end=9999-12-31"):
        answer = client.get(f"/v1/usage?{query}", headers=AUTH)
        assert answer.status_code == 400, (query, answer.text)
    assert client.get("/v1/usage?end=9998-12-31", headers=AUTH).status_code == 200
    for index in (2**31, 2**63, 2**64, -1):
        content = client.get(f"/v1/audiobooks/book_x/chapters/{index}/content", headers=AUTH)
        rerender = client.post(f"/v1/audiobooks/book_x/chapters/{index}/rerender", headers=AUTH)
        for answer in (content, rerender):
            assert answer.status_code == 400, (index, answer.text)
            assert answer.json()["error"]["param"] == "index"


# --- errors that stay answers ----------------------------------------------------------------


@pytest.fixture
def served(app: FastAPI) -> Iterator[tuple[str, int]]:
    """The app on a real socket (uvicorn in a thread), with a route that crashes."""

    def crash() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/v1/crash", crash)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(10)


def _exchange(sock: socket.socket, path: str) -> bytes:
    """One request on an open keep-alive connection; the whole response (Content-Length)."""
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER}\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_crash_is_a_counted_500_and_the_connection_stays_open(
    served: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_connection(served, timeout=20) as sock:
        crashed = _exchange(sock, "/v1/crash")
        assert crashed.startswith(b"HTTP/1.1 500")
        assert b'"internal_error"' in crashed
        assert b"a bug" not in crashed
        # The same connection answers the next request.
        after = _exchange(sock, "/healthz")
        assert after.startswith(b"HTTP/1.1 200")
        metrics = _exchange(sock, "/metrics").decode()
    assert 'route="/v1/crash",status="500",status_class="5xx"' in metrics
    # Refused before any route (no key, no such route): counted too.
    with socket.create_connection(served, timeout=20) as sock:
        sock.sendall(b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while sock.recv(65536):
            pass
    with socket.create_connection(served, timeout=20) as sock:
        metrics = _exchange(sock, "/metrics").decode()
    assert 'route="unmatched",status="401",status_class="4xx"' in metrics


def test_a_waiting_request_holds_no_database_connection(
    client: TestClient, settings: Settings
) -> None:
    key = {"Authorization": f"Bearer {tenant_key(client)}"}
    job = client.post("/v1/jobs/speech", headers=key, json={"model": "tts-1", "input": "Hi."})
    assert job.status_code == 202
    pool = get_engine(settings.resolved_database_url).pool
    waiting = threading.Thread(
        target=client.get, args=(f"/v1/jobs/{job.json()['id']}?wait=3",), kwargs={"headers": key}
    )
    waiting.start()
    seen = []
    for _ in range(10):
        time.sleep(0.2)
        seen.append(pool.checkedout())  # type: ignore[attr-defined]
    waiting.join()
    # A poll of the job may hold one for a moment; the wait itself must not.
    assert sum(1 for n in seen if n) <= 2, seen


def test_a_busy_database_is_503_with_retry_after(app: FastAPI, tmp_path: Path) -> None:
    """A pool with no free connection, and a SQLite file whose write lock another holds:
    both are real exceptions of a busy database, answered 503 (try again), never 500."""
    tiny = create_engine(
        f"sqlite:///{tmp_path / 'tiny.db'}", pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    locked_path = tmp_path / "locked.db"
    holder = sqlite3.connect(locked_path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    held = tiny.connect()

    def exhausted_pool() -> None:
        with tiny.connect():
            pass

    def locked_file() -> None:
        engine = create_engine(f"sqlite:///{locked_path}", connect_args={"timeout": 0.1})
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))

    app.add_api_route("/v1/exhausted", exhausted_pool)
    app.add_api_route("/v1/locked", locked_file)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            for path in ("/v1/exhausted", "/v1/locked"):
                answer = client.get(path, headers=AUTH)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json()["error"]["code"] == "service_unavailable"
                assert int(answer.headers["retry-after"]) > 0
    finally:
        held.close()
        holder.close()


# --- books: refused before they are read or planned ------------------------------------------


def zip_bomb_epub(expanded_bytes: int) -> bytes:
    """A real EPUB with one more entry of zeros that deflates a thousandfold."""
    buffer = io.BytesIO(make_epub())
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_DEFLATED) as book:
        with book.open("OEBPS/bomb.xhtml", "w", force_zip64=True) as entry:
            for _ in range(expanded_bytes // 1_000_000):
                entry.write(b"\0" * 1_000_000)
    return buffer.getvalue()


def test_books_over_their_limits_are_refused_at_the_edge(client: TestClient) -> None:
    def quote(**kwargs: Any) -> dict[str, Any]:
        answer = client.post("/v1/audiobooks/quote", headers=AUTH, **kwargs)
        return {"status": answer.status_code, **answer.json().get("error", {})}

    bomb = zip_bomb_epub(10_000_000)  # the cap here is 5 MB unpacked
    assert len(bomb) < 100_000
    refused = quote(files={"file": ("b.epub", bomb)}, data={"model": "tts-1"})
    assert (refused["status"], refused["code"]) == (413, "request_too_large"), refused
    normal = quote(files={"file": ("b.epub", make_epub())}, data={"model": "tts-1"})
    assert normal["status"] == 200, normal
    # Over the character limit: one giant paragraph, refused before it is planned.
    giant = ("word " * 1_200_001).encode()
    refused = quote(files={"file": ("g.txt", giant)}, data={"model": "tts-1"})
    assert (refused["status"], refused["code"]) == (400, "input_too_long"), refused
    # One chapter cap, on every path.
    headings = "\n\n".join(f"# Chapter {n}\n\nText of chapter {n}." for n in range(2001))
    for kwargs in (
        {"json": {"model": "tts-1", "text": headings}},
        {"files": {"file": ("h.md", headings.encode())}, "data": {"model": "tts-1"}},
        {"json": {"model": "tts-1", "chapters": [{"title": "t", "text": "x"}] * 2001}},
    ):
        refused = quote(**kwargs)
        assert (refused["status"], refused["code"]) == (400, "invalid_request"), refused
        assert "2,000" in refused["message"] or "2000" in refused["message"], refused
    # A quote checks its webhook_url as a submit does.
    book = {"model": "tts-1", "chapters": [{"title": "One", "text": "Hello."}]}
    refused = quote(json={**book, "webhook_url": "http://127.0.0.1:9/hook"})
    assert (refused["status"], refused["code"]) == (400, "invalid_webhook_url"), refused
    # JSON nested too deep to parse is a bad request, not a crash.
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("/v1/audiobooks", "/v1/audiobooks/quote"):
        answer = client.post(
            path, headers={**AUTH, "content-type": "application/json"}, content=deep
        )
        assert answer.status_code == 400, answer.text
