"""Hostile input against the real API process, on the embedded default and on PostgreSQL +
Redis + S3: huge bodies with and without a key, deep JSON, a burst of identical submits.
Each answer is a 4xx in the envelope, given without reading what the client still sends."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

MB = 1_000_000
HUGE = 300 * MB


def _address(stack: Stack) -> tuple[str, int]:
    url = urlsplit(stack.base_url)
    assert url.hostname and url.port
    return url.hostname, url.port


def send_huge(
    stack: Stack, path: str, headers: dict[str, str], *, chunked: bool
) -> tuple[int, dict[str, Any], int]:
    """POST a 300 MB body a megabyte at a time, stopping as soon as an answer arrives.
    Returns the status, the JSON answer and how many bytes had been sent by then."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}")
    chunk = b"[" + b" " * (MB - 1)
    piece = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
    sent = 0
    with socket.create_connection(_address(stack), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.setblocking(False)
        answer = b""
        while sent < HUGE:
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            if b"\r\n\r\n" in answer:
                break
            try:
                sock.setblocking(True)
                sock.sendall(piece)
                sent += len(chunk)
                sock.setblocking(False)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        while b"}}" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body[body.index(b"{") : body.rindex(b"}") + 1]), sent


@pytest.mark.parametrize("path", ["/v1/jobs/speech", "/v1/audiobooks", "/v1/keys"])
def test_a_huge_body_without_a_key_is_401_unread(bare_stack: Stack, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer sk-not-a-key"}):
        status, answer, sent = send_huge(bare_stack, path, headers, chunked=False)
        assert status == 401, answer
        assert answer["error"]["code"] == "unauthorized"
        # Answered long before the body could have been read (the socket buffers some).
        assert sent < 50 * MB


@pytest.mark.parametrize("chunked", [False, True])
def test_a_huge_body_with_a_key_is_413_at_the_cap(bare_stack: Stack, chunked: bool) -> None:
    headers = {"Authorization": f"Bearer {bare_stack.master_key}"}
    status, answer, sent = send_huge(bare_stack, "/v1/jobs/speech", headers, chunked=chunked)
    assert status == 413, answer
    assert answer["error"]["code"] == "request_too_large"
    assert sent < 80 * MB


def test_deep_json_is_400(bare_stack: Stack) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with bare_stack.client() as client:
        for path in ("/v1/jobs/speech", "/v1/audio/speech", "/v1/keys"):
            answer = client.post(path, content=deep, headers={"Content-Type": "application/json"})
            assert answer.status_code == 400, (path, answer.text)
            assert answer.json()["error"]["code"] == "invalid_request"


def test_identical_submits_released_together_make_one_job(bare_stack: Stack) -> None:
    key = bare_stack.make_key(name="burst")["key"]
    body = {"model": "tts-1", "input": "Once, and only once."}
    barrier = threading.Barrier(20)
    answers: list[httpx.Response] = []

    def submit() -> None:
        with bare_stack.client(key) as client:
            barrier.wait()
            answers.append(
                client.post("/v1/jobs/speech", json=body, headers={"Idempotency-Key": "burst-1"})
            )

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(a.status_code for a in answers)
    assert len(answers) == 20
    assert all(s in (200, 202) for s in statuses), [a.text for a in answers]
    assert statuses.count(202) == 1, statuses
    assert len({a.json()["id"] for a in answers}) == 1
