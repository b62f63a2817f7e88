"""Uploads: the size limit holds while the file streams in, with flat memory."""

from __future__ import annotations

import json
import select as io_select
import socket
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from storage.models import Job
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

MB = 1_000_000
CHUNK = b"\0" * (1024 * 1024)


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _stream_upload(stack: Stack, total_bytes: int, *, declare_length: bool) -> tuple[int, bytes]:
    """Send a multipart upload over a raw socket, stopping as soon as the server answers.
    Returns (file bytes sent, raw response)."""
    boundary = "speechqboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    url = urlsplit(stack.base_url)
    request = [
        "POST /v1/jobs/transcriptions HTTP/1.1",
        f"Host: {url.netloc}",
        f"Authorization: Bearer {stack.master_key}",
        f"Content-Type: multipart/form-data; boundary={boundary}",
    ]
    request.append(
        f"Content-Length: {len(head) + total_bytes + len(tail)}"
        if declare_length
        else "Transfer-Encoding: chunked"
    )
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    sent = 0
    response = b""

    def send(data: bytes) -> None:
        if declare_length:
            sock.sendall(data)
        else:
            sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    try:
        sock.sendall(("\r\n".join(request) + "\r\n\r\n").encode())
        send(head + b"RIFF" + b"\0" * 4 + b"WAVE")
        while sent < total_bytes:
            if io_select.select([sock], [], [], 0)[0]:
                break  # the server has answered: stop sending
            try:
                send(CHUNK)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(CHUNK)
        sock.settimeout(30)
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            response += part
    finally:
        sock.close()
    return sent, response


@pytest.mark.parametrize("declare_length", [False, True], ids=["chunked", "content-length"])
def test_upload_over_the_limit_is_refused_early_with_flat_memory(
    stack: Stack, declare_length: bool
) -> None:
    api_pid = stack.processes["api"].pid
    jobs_before = _transcription_jobs(stack)
    uploads_before = stack.stored_keys("tenants/admin/uploads")
    before = _rss_bytes(api_pid)
    sent, response = _stream_upload(stack, 200 * MB, declare_length=declare_length)
    growth = _rss_bytes(api_pid) - before
    status_line, _, rest = response.partition(b"\r\n")
    assert b" 413 " in status_line, response[:500]
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1].split(b"\r\n")[-1] or b"{}")
    assert body["error"]["code"] == "file_too_large"
    assert body["error"]["message"].startswith(
        "File size is too large. Please check your file size. Passed file size:"
    )
    assert body["error"]["message"].endswith("Max file size: 25 MB")
    # Refused near the limit (socket buffers hold a few MB more), not after 200 MB.
    assert sent < 60 * MB
    assert growth < 50 * 1024 * 1024
    # Nothing partial stays behind: no job, no stored upload.
    assert _transcription_jobs(stack) == jobs_before
    assert stack.stored_keys("tenants/admin/uploads") == uploads_before


def _transcription_jobs(stack: Stack) -> int:
    with stack.db_session() as session:
        return int(session.scalar(select(func.count()).where(Job.type == "transcription")) or 0)
