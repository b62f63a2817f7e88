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


# --- a scripted fake for provider faults ------------------------------------------------

HANG_SECONDS = 5.0  # what a `hang` step sleeps before it answers
GARBAGE_AUDIO = b"this is no audio at all, just bytes pretending to be one. " * 64
# Each fault's answers, call by call, for one `input`; the last step repeats.
FAULT_SCRIPTS: dict[str, tuple[str, ...]] = {
    "flaky": ("500", "500", "ok"),  # HTTP 500 twice, then audio
    "rate-limited": ("429", "ok"),  # HTTP 429 with Retry-After: 1, then audio
    # Longer than the router's three tries (num_retries 2) last: 429 three times, then audio.
    "rate-limited-longer": ("429", "429", "429", "ok"),
    "hang": ("hang",),  # answers only after HANG_SECONDS
    "garbage": ("garbage",),  # HTTP 200 with bytes that are not audio
    "down": ("500",),  # HTTP 500 on every call
    # HTTP 500 on every call until the test calls `heal(fault, input)`.
    "down-until-healed": ("500",),
}


@dataclass
class ScriptedOpenAI:
    """An OpenAI speech endpoint that misbehaves on purpose, at `api_base(fault)`.

    Calls are counted per (fault, `input`), so a test that uses its own input text sees
    its script from the first step, whatever ran before it on the same server.
    `refused_url` is an api_base whose port is bound but never listens: connections to
    it are refused, and no other process can take the port meanwhile."""

    url: str
    refused_url: str
    calls: dict[tuple[str, str], int] = field(default_factory=dict)
    # When each call arrived (time.monotonic() in this process), per (fault, input).
    arrivals: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    healed: set[tuple[str, str]] = field(default_factory=set)
    server: ThreadingHTTPServer | None = None
    _refusing: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def api_base(self, fault: str) -> str:
        if fault not in FAULT_SCRIPTS:
            raise KeyError(f"no script for fault {fault!r}")
        return f"{self.url}/fault/{fault}/v1"

    def count(self, fault: str, text: str) -> int:
        with self._lock:
            return self.calls.get((fault, text), 0)

    def arrived(self, fault: str, text: str) -> list[float]:
        with self._lock:
            return list(self.arrivals.get((fault, text), ()))

    def heal(self, fault: str, text: str) -> None:
        """From now on, calls for `text` answer with audio."""
        with self._lock:
            self.healed.add((fault, text))

    def _next_step(self, fault: str, text: str) -> str:
        with self._lock:
            number = self.calls.get((fault, text), 0)
            self.calls[(fault, text)] = number + 1
            self.arrivals.setdefault((fault, text), []).append(time.monotonic())
            if (fault, text) in self.healed:
                return "ok"
        script = FAULT_SCRIPTS[fault]
        return script[min(number, len(script) - 1)]

    def close(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
        if self._refusing is not None:
            self._refusing.close()


def start_scripted_openai() -> ScriptedOpenAI:
    import socket

    audio_cache: dict[str, bytes] = {}
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))  # bound, never listening: connect() is refused
    fake = ScriptedOpenAI(
        url="",
        refused_url=f"http://127.0.0.1:{refusing.getsockname()[1]}/v1",
        _refusing=refusing,
    )

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (a `hang` step past its timeout)

        def _error(self, status: int, message: str, **headers: str) -> None:
            body = json.dumps({"error": {"message": message, "type": "server_error"}}).encode()
            self._reply(status, body, "application/json", **headers)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            parts = self.path.split("/")  # "", "fault", name, "v1", "audio", "speech"
            if len(parts) != 6 or parts[1] != "fault" or parts[3:] != ["v1", "audio", "speech"]:
                self._error(404, f"Unknown path {self.path}")
                return
            if parts[2] not in FAULT_SCRIPTS:
                self._error(404, f"Unknown fault {parts[2]}")
                return
            if self.headers.get("Authorization") != f"Bearer {FAKE_OPENAI_KEY}":
                self._error(401, "Incorrect API key provided.")
                return
            payload = json.loads(body)
            step = fake._next_step(parts[2], str(payload.get("input", "")))
            if step == "500":
                self._error(500, "The server had an error while processing your request.")
            elif step == "429":
                self._error(429, "Rate limit reached for requests.", Retry_After="1")
            elif step == "garbage":
                self._reply(200, GARBAGE_AUDIO, "application/octet-stream")
            else:
                if step == "hang":
                    time.sleep(HANG_SECONDS)
                fmt = payload.get("response_format", "mp3")
                if fmt not in audio_cache:
                    audio_cache[fmt] = encode_pcm(tone_pcm(), 24000, fmt)
                self._reply(200, audio_cache[fmt], "application/octet-stream")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.server = server
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    return fake
