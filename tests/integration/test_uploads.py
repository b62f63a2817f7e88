"""Uploads: the size limit holds while the file streams in, with flat memory."""

from __future__ import annotations

import json
import select as io_select
import socket
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from api.uploads import FETCH_FAILED_MESSAGE
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


def _serve_file(data: bytes) -> tuple[str, object]:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/fox.wav", server


def test_transcription_by_url(stack: Stack) -> None:
    with stack.client() as client:
        speech = client.post(
            "/v1/jobs/speech",
            json={
                "model": "tts-1",
                "input": "The quick brown fox jumped over the lazy dog.",
                "response_format": "wav",
            },
        ).json()
        wav = client.get(stack.wait_for_job(client, speech["id"])["result"]["content_url"])
        url, server = _serve_file(wav.content)
        try:
            job = client.post("/v1/jobs/transcriptions", data={"model": "whisper-1", "url": url})
            assert job.status_code == 202, job.text
            done = stack.wait_for_job(client, job.json()["id"])
        finally:
            server.shutdown()  # type: ignore[attr-defined]
    assert done["status"] == "succeeded", done
    assert "fox" in done["result"]["text"].lower()


def test_url_to_a_private_address_is_refused(bare_api: Stack) -> None:
    url, server = _serve_file(b"RIFF")
    try:
        with bare_api.client() as client:
            response = client.post(
                "/v1/jobs/transcriptions", data={"model": "whisper-1", "url": url}
            )
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "url"
    # The same words as any failed fetch: nothing about what is at the address.
    assert error["message"] == FETCH_FAILED_MESSAGE


def test_audio_is_judged_by_content_and_duration(stack: Stack) -> None:
    from tests.fakes import tone_pcm
    from worker.audio import encode_pcm

    two_seconds = tone_pcm(2.0, 24000)
    with stack.client() as client:
        # Decodable audio of a kind not accepted (raw ADTS AAC), even when named .mp3.
        aac = encode_pcm(two_seconds, 24000, "aac")
        refused = client.post(
            "/v1/jobs/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("speech.mp3", aac, "audio/mpeg")},
        )
        # A wav named .txt with a text content type is still a wav.
        wav = encode_pcm(two_seconds, 24000, "wav")
        accepted = client.post(
            "/v1/jobs/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("notes.txt", wav, "text/plain")},
        )
        too_long = client.post(
            "/v1/jobs/transcriptions",
            data={"model": "short-stt"},
            files={"file": ("a.wav", wav, "audio/wav")},
        )
    assert refused.status_code == 415
    assert refused.json()["error"]["code"] == "unsupported_format"
    assert accepted.status_code == 202, accepted.text
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "audio_too_long"
