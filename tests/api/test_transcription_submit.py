"""What a transcription submit refuses at once, on both routes that take one
(`/v1/jobs/transcriptions` and the OpenAI-compatible `/v1/audio/transcriptions`): a `url`
that may not or cannot be fetched (one answer for every network reason), audio with no
samples, a language Whisper does not know, and `file` with `url`.

The app runs in-process on SQLite. Audio "on the internet" is a server on 127.0.0.1: names
resolve through a faked `socket.getaddrinfo` to a public address, and the dialer under
httpcore carries that address to loopback, so nothing leaves this machine."""

from __future__ import annotations

import io
import math
import socket
import struct
import threading
import wave
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import uploads
from api.app import create_app
from api.uploads import FETCH_FAILED_MESSAGE
from speechq.languages import LANGUAGES
from speechq.settings import Settings
from storage import queries
from storage.db import get_sessionmaker
from storage.migrate import upgrade
from tests.net_fakes import PUBLIC_V4, Dialer, FakeDNS, SystemDNS

MASTER = "master-key-for-transcription-tests"
AUTH = {"Authorization": f"Bearer {MASTER}"}
ROUTES = ["/v1/jobs/transcriptions", "/v1/audio/transcriptions"]
JOBS = "/v1/jobs/transcriptions"

GENERIC_FETCH_ERROR = {
    "error": {
        "message": FETCH_FAILED_MESSAGE,
        "type": "invalid_request_error",
        "param": "url",
        "code": "invalid_request",
    }
}


def make_wav(seconds: float, rate: int = 16_000) -> bytes:
    frames = int(seconds * rate)
    samples = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(frames)
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples)
    return buffer.getvalue()


WAV = make_wav(0.5)
EMPTY_WAV = make_wav(0.0)  # a valid 44-byte header and no frames


# --- the app -------------------------------------------------------------------------------


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """`make_client(fetch_allow_private=..., ...)`: an app on its own SQLite data dir."""
    opened: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        values: dict[str, Any] = {
            "data_dir": tmp_path / f"data{len(opened)}",
            "master_key": MASTER,
            "webhook_allow_private": False,
            "fetch_allow_private": False,
            # No worker runs: a sync route that wrongly accepted would wait this long.
            "sync_timeout_seconds": 2.0,
        }
        settings = Settings(**{**values, **overrides})
        upgrade(settings.resolved_database_url)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def submit(client: TestClient, route: str = JOBS, **fields: Any) -> Any:
    files = fields.pop("files", None)
    return client.post(route, headers=AUTH, data={"model": "whisper-1", **fields}, files=files)


def stored_request(client: TestClient, job_id: str) -> dict[str, Any]:
    state = client.app.state.speechq  # type: ignore[attr-defined]
    with get_sessionmaker(state.database_url)() as session:
        job = queries.get_job(session, job_id=job_id, tenant=None)
        assert job is not None
        return dict(job.request)


# --- audio servers on loopback -------------------------------------------------------------

Route = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: dict[str, Route]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = routes
        self.paths: list[str] = []
        self.release = threading.Event()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the fetcher hangs up early on purpose in some tests

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.paths.append(self.path)
        route = self.server.routes.get(self.path, status_only(404))
        route(self)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(data: bytes, content_type: str = "audio/wav") -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route


def status_only(status: int, **headers: str) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def reset(handler: BaseHTTPRequestHandler) -> None:
    """Drop the connection with a TCP reset, no answer."""
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True


def silent(handler: BaseHTTPRequestHandler) -> None:
    handler.server.release.wait(10)  # type: ignore[attr-defined]


def announce_huge(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "audio/wav")
    handler.send_header("Content-Length", str(500_000_000))
    handler.end_headers()


AUDIO_ROUTES: dict[str, Route] = {
    "/a.wav": serve(WAV),
    "/empty.wav": serve(EMPTY_WAV),
    "/notes.txt": serve(b"not audio at all, " * 20, "text/plain"),
    "/error": status_only(500),
    "/moved": status_only(302, Location="http://169.254.169.254/latest/meta-data/"),
    "/reset": reset,
    "/slow": silent,
    "/huge": announce_huge,
}


@pytest.fixture
def server() -> Iterator[_Server]:
    running = _Server(AUDIO_ROUTES)
    thread = threading.Thread(target=running.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield running
    running.release.set()
    running.shutdown()
    running.server_close()
    thread.join(5)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def internet(monkeypatch: pytest.MonkeyPatch) -> Dialer:
    """`files.example` is a public host (its connections reach 127.0.0.1), `intranet.example`
    resolves to a private address, and any other name does not resolve."""
    SystemDNS(
        monkeypatch,
        {"files.example": FakeDNS([PUBLIC_V4]), "intranet.example": FakeDNS(["10.0.0.7"])},
    )
    return Dialer(monkeypatch, routes={PUBLIC_V4: "127.0.0.1"})


# --- url: which addresses, and one answer for every network failure -----------------------


def test_url_to_loopback_is_refused_though_webhooks_may_go_private(
    make_client: Callable[..., TestClient], server: _Server
) -> None:
    # What `speechq up` runs with: private webhooks allowed, private fetches not.
    client = make_client(webhook_allow_private=True)
    for route in ROUTES:
        refused = submit(client, route, url=f"http://127.0.0.1:{server.port}/a.wav")
        assert refused.status_code == 400, refused.text
        assert refused.json() == GENERIC_FETCH_ERROR
    assert server.paths == []


def test_url_to_loopback_is_fetched_when_fetches_may_go_private(
    make_client: Callable[..., TestClient], server: _Server
) -> None:
    client = make_client(fetch_allow_private=True)
    accepted = submit(client, url=f"http://127.0.0.1:{server.port}/a.wav")
    assert accepted.status_code == 202, accepted.text
    assert server.paths == ["/a.wav"]
    assert stored_request(client, accepted.json()["id"])["bytes"] == len(WAV)


def test_closed_port_and_404_give_the_same_answer(
    make_client: Callable[..., TestClient], server: _Server
) -> None:
    client = make_client(fetch_allow_private=True)  # so both are really tried
    closed = submit(client, url=f"http://127.0.0.1:{closed_port()}/a.wav")
    missing = submit(client, url=f"http://127.0.0.1:{server.port}/missing.wav")
    assert server.paths == ["/missing.wav"]
    assert (closed.status_code, closed.json()) == (400, GENERIC_FETCH_ERROR)
    assert (missing.status_code, missing.json()) == (400, GENERIC_FETCH_ERROR)
    assert closed.content == missing.content


def test_every_network_failure_on_a_public_host_gives_the_same_answer(
    make_client: Callable[..., TestClient],
    server: _Server,
    internet: Dialer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(uploads, "FETCH_TIMEOUT_S", 0.5)
    client = make_client()
    port = server.port
    urls = {
        "private address": f"http://intranet.example:{port}/a.wav",
        "private literal": f"http://10.0.0.7:{port}/a.wav",
        "metadata service": "http://169.254.169.254/latest/meta-data/",
        "no such host": f"http://nowhere.example:{port}/a.wav",
        "closed port": f"http://files.example:{closed_port()}/a.wav",
        "404": f"http://files.example:{port}/missing.wav",
        "500": f"http://files.example:{port}/error",
        "redirect": f"http://files.example:{port}/moved",
        "reset": f"http://files.example:{port}/reset",
        "timeout": f"http://files.example:{port}/slow",
    }
    answers = {what: submit(client, url=url) for what, url in urls.items()}
    for what, answer in answers.items():
        assert (answer.status_code, answer.json()) == (400, GENERIC_FETCH_ERROR), what
    # Only the public host was dialled; the private ones were refused before connecting.
    assert {host for host, _ in internet.dialled} == {PUBLIC_V4}
    assert sorted(server.paths) == ["/error", "/missing.wav", "/moved", "/reset", "/slow"]


def test_url_on_a_public_host_is_fetched(
    make_client: Callable[..., TestClient], server: _Server, internet: Dialer
) -> None:
    client = make_client()
    accepted = submit(client, url=f"http://files.example:{server.port}/a.wav")
    assert accepted.status_code == 202, accepted.text
    assert internet.dialled == [(PUBLIC_V4, server.port)]
    assert stored_request(client, accepted.json()["id"])["filename"] == "input.wav"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://files.example/a.wav", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https://user:secret@files.example/a.wav", "user name or password"),
        ("http:///a.wav", "no host"),
        ("http://files.example:99999/a.wav", "port"),
    ],
)
def test_url_mistakes_of_the_tenant_keep_their_own_message(
    make_client: Callable[..., TestClient], internet: Dialer, url: str, words: str
) -> None:
    client = make_client()
    refused = submit(client, url=url)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", "url")
    assert words in error["message"] and error["message"] != FETCH_FAILED_MESSAGE
    assert "secret" not in error["message"]
    assert internet.dialled == []


def test_url_too_large_is_413_file_too_large(
    make_client: Callable[..., TestClient], server: _Server, internet: Dialer
) -> None:
    client = make_client()
    refused = submit(client, url=f"http://files.example:{server.port}/huge")
    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("file_too_large", "url")
    assert error["message"].startswith("File size is too large.")


def test_url_serving_something_else_than_audio_is_invalid_audio(
    make_client: Callable[..., TestClient], server: _Server, internet: Dialer
) -> None:
    client = make_client()
    refused = submit(client, url=f"http://files.example:{server.port}/notes.txt")
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_audio", "url")


# --- audio with no samples -----------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_wav_without_samples_is_invalid_audio(
    make_client: Callable[..., TestClient], route: str
) -> None:
    client = make_client()
    refused = submit(client, route, files={"file": ("empty.wav", EMPTY_WAV, "audio/wav")})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_audio", "file")
    assert "no samples" in error["message"]


def test_wav_without_samples_by_url_is_invalid_audio(
    make_client: Callable[..., TestClient], server: _Server, internet: Dialer
) -> None:
    client = make_client()
    refused = submit(client, url=f"http://files.example:{server.port}/empty.wav")
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_audio", "url")


def test_short_wav_is_accepted(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    accepted = submit(client, files={"file": ("a.wav", make_wav(0.01), "audio/wav")})
    assert accepted.status_code == 202, accepted.text


# --- language -----------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("language", ["xx-invalid", "english", "e", "xx"])
def test_unknown_language_is_refused(
    make_client: Callable[..., TestClient], route: str, language: str
) -> None:
    client = make_client()
    refused = submit(client, route, language=language, files={"file": ("a.wav", WAV)})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", "language")
    assert f"'{language}' is not one" in error["message"]
    assert "ISO-639-1" in error["message"] and "Accepted codes: af, am," in error["message"]


def test_language_with_a_region_is_refused_with_the_code_to_send(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    refused = submit(client, language="pt-BR", files={"file": ("a.wav", WAV)})
    assert refused.status_code == 400, refused.text
    assert "Send 'pt', without the region" in refused.json()["error"]["message"]


@pytest.mark.parametrize(("language", "stored"), [("de", "de"), ("EN", "en"), ("yue", "yue")])
def test_known_language_is_accepted_in_any_case(
    make_client: Callable[..., TestClient], language: str, stored: str
) -> None:
    client = make_client()
    accepted = submit(client, language=language, files={"file": ("a.wav", WAV)})
    assert accepted.status_code == 202, accepted.text
    assert stored_request(client, accepted.json()["id"])["language"] == stored


def test_language_table_is_whispers() -> None:
    faster_whisper = pytest.importorskip("faster_whisper.tokenizer")
    assert set(LANGUAGES) == set(faster_whisper._LANGUAGE_CODES)


# --- file and url together -----------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_file_and_url_together_are_refused(
    make_client: Callable[..., TestClient], server: _Server, route: str
) -> None:
    client = make_client(fetch_allow_private=True)
    refused = submit(
        client,
        route,
        url=f"http://127.0.0.1:{server.port}/a.wav",
        files={"file": ("a.wav", WAV, "audio/wav")},
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_request"
    assert "'file'" in error["message"] and "'url'" in error["message"]
    assert server.paths == []
