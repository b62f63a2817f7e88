"""A fake OpenAI audio server over real HTTP, for pipeline tests. It checks the wire
format the way OpenAI documents it and records every request."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from worker.audio import encode_pcm

FAKE_OPENAI_KEY = "sk-fake-openai-test-key"
SLOW_MODEL = "tts-1-hd"  # the fake answers this model after SLOW_SECONDS
SLOW_SECONDS = 6.0


def tone_pcm(seconds: float = 1.0, rate: int = 24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeOpenAI:
    url: str
    requests: list[RecordedRequest] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def close(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def start_fake_openai() -> FakeOpenAI:
    audio_cache: dict[str, bytes] = {}
    fake = FakeOpenAI(url="")

    class Handler(BaseHTTPRequestHandler):
        # Without it each answer waits ~40 ms on Nagle's algorithm and delayed ACKs.
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-request-id", "req_fake")
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            body = json.dumps(
                {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                }
            ).encode()
            self._reply(status, body, "application/json")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            fake.requests.append(RecordedRequest(self.path, dict(self.headers.items()), body))
            if self.headers.get("Authorization") != f"Bearer {FAKE_OPENAI_KEY}":
                self._error(401, "Incorrect API key provided.")
                return
            if self.path != "/v1/audio/speech":
                self._error(404, f"Unknown path {self.path}")
                return
            payload = json.loads(body)
            if set(payload) - {
                "model",
                "input",
                "voice",
                "response_format",
                "speed",
                "instructions",
            }:
                self._error(400, "Unrecognized request argument supplied")
                return
            if not payload.get("input") or not payload.get("voice"):
                self._error(400, "input and voice are required")
                return
            if payload["model"] == SLOW_MODEL:
                time.sleep(SLOW_SECONDS)
            fmt = payload.get("response_format", "mp3")
            if fmt not in audio_cache:
                audio_cache[fmt] = encode_pcm(tone_pcm(), 24000, fmt)
            self._reply(200, audio_cache[fmt], "application/octet-stream")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.server = server
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    return fake
