"""What the provider tests share: building providers on a fake server, decoding what they
sent, the error cases every HTTP provider must map, and the wire formats two providers speak
(OpenAI's for openai and azure, Gemini's generateContent for gemini and vertex_ai).

Each test module keeps its own fake server, which checks that provider's wire format."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import python_multipart

from worker.providers.base import (
    Deployment,
    SpeechProvider,
    SynthesisRequest,
    TranscriptionRequest,
    TranscriptSegment,
)
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)

P = TypeVar("P", bound=SpeechProvider)
Handler = Callable[[httpx.Request], httpx.Response]

OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
)  # fmt: skip
# Bytes that trip careless multipart handling: CRLFs, a fake boundary, every byte value.
AUDIO_BYTES = b"RIFF\x00\x00WAVE\r\n--boundary\r\n\r\n" + bytes(range(256)) * 64


# Providers on a fake server.


@contextmanager
def provider_factory(
    provider_class: type[P], default_handler: Handler, **defaults: Any
) -> Iterator[Callable[..., P]]:
    """Yield `create(handler=None, model_info=None, **params)`: a `provider_class` on an
    httpx MockTransport that answers with `handler`, else `default_handler`.

    `params` override `defaults` (which must name the `model`); a None param is left unset.
    Every provider's client is closed on exit.
    """
    providers: list[P] = []

    def create(
        *, handler: Handler | None = None, model_info: dict[str, Any] | None = None, **params: Any
    ) -> P:
        values = defaults | params
        model = values.pop("model")
        deployment = Deployment(
            model_name="speech",
            provider=provider_class.name,
            model=model,
            params={name: value for name, value in values.items() if value is not None},
            model_info=model_info or {},
            id="speech#0",
        )
        http = httpx.Client(transport=httpx.MockTransport(handler or default_handler))
        provider = provider_class(deployment, http=http)
        providers.append(provider)
        return provider

    try:
        yield create
    finally:
        for provider in providers:
            provider.http.close()


def standalone_provider(provider_class: type[P], *, model: str, **params: Any) -> P:
    """A provider with its own default httpx client, for calls over real sockets."""
    deployment = Deployment(
        model_name="speech", provider=provider_class.name, model=model, params=params
    )
    return provider_class(deployment)


def unused_port() -> int:
    """A local port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# What the provider sent.


@dataclass
class Upload:
    fields: dict[str, str]
    file_field: str
    filename: str
    content_type: str | None
    data: bytes


def parse_multipart(headers: Any, body: bytes) -> Upload:
    """Decode a multipart/form-data body with python-multipart, as starlette does."""
    fields: dict[str, str] = {}
    files: list[Any] = []

    def on_field(item: Any) -> None:
        fields[item.field_name.decode()] = (item.value or b"").decode()

    python_multipart.parse_form(
        {
            "Content-Type": headers["content-type"].encode(),
            "Content-Length": str(len(body)).encode(),
        },
        io.BytesIO(body),
        on_field,
        files.append,
    )
    assert len(files) == 1, "exactly one file part"
    part = files[0]
    part.file_object.seek(0)
    data = part.file_object.read()
    part.close()
    content_type = part.content_type or None
    return Upload(fields, part.field_name.decode(), part.file_name.decode(), content_type, data)


def single_query(url: httpx.URL | str) -> dict[str, str]:
    """The query of `url` as a dict, insisting that no parameter is repeated."""
    query = parse_qs(urlsplit(str(url)).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values()), f"repeated parameter in {url}"
    return {key: values[0] for key, values in query.items()}


# Errors every HTTP provider must map.

# The statuses each mapper must class alike (worker/providers/_http.py), with 429 and 5xx.
HTTP_STATUS_ERRORS: list[tuple[int, type[ProviderError]]] = [
    (400, InvalidInput),
    (401, AuthenticationFailed),
    (403, AuthenticationFailed),
    (404, UnsupportedFeature),
    (408, ProviderTimeout),
    (409, ProviderUnavailable),
    (413, InvalidInput),
    (415, InvalidInput),
    (422, InvalidInput),
    (429, RateLimited),
    (500, ProviderUnavailable),
    (502, ProviderUnavailable),
    (503, ProviderUnavailable),
]
# httpx failures before any answer: every timeout is ProviderTimeout, the rest Unavailable.
TRANSPORT_FAILURES: list[tuple[httpx.TransportError, type[ProviderError]]] = [
    (httpx.ReadTimeout("timed out"), ProviderTimeout),
    (httpx.ConnectTimeout("timed out"), ProviderTimeout),
    (httpx.WriteTimeout("timed out"), ProviderTimeout),
    (httpx.PoolTimeout("timed out"), ProviderTimeout),
    (httpx.ConnectError("[Errno 111] Connection refused"), ProviderUnavailable),
    (httpx.ConnectError("[Errno -2] Name or service not known"), ProviderUnavailable),
    (httpx.RemoteProtocolError("peer closed connection"), ProviderUnavailable),
    (httpx.ReadError("connection reset"), ProviderUnavailable),
    (httpx.WriteError("broken pipe"), ProviderUnavailable),
]


def answering(content: bytes, content_type: str) -> Handler:
    """A MockTransport handler that answers every request 200 with this body."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=content, headers={"content-type": content_type})

    return handler


def raising(exception: Exception) -> Handler:
    """A MockTransport handler that fails every request with `exception`."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise exception

    return handler


def assert_status_classes(
    map_error: Callable[[httpx.HTTPStatusError], ProviderError],
    cases: Iterable[tuple[int, type[ProviderError]]],
    *,
    url: str,
    **response: Any,
) -> None:
    """`map_error` gives exactly the listed class for an answer of each status."""
    request = httpx.Request("POST", url)
    for status, error_class in cases:
        answer = httpx.Response(status, request=request, **response)
        exc = httpx.HTTPStatusError("status", request=request, response=answer)
        assert type(map_error(exc)) is error_class, status


def assert_status_error(
    error: ProviderError, error_class: type[ProviderError], status: int, *secrets: str
) -> None:
    """`error` is exactly `error_class` for `status`, raised from httpx's status error."""
    assert type(error) is error_class
    assert error.status_code == status
    assert isinstance(error.__cause__, httpx.HTTPStatusError)
    assert_no_secret(error, *secrets)


def assert_transport_error(error: ProviderError, exception: Exception, *secrets: str) -> None:
    """`error` was raised from `exception` itself, before any status."""
    assert error.__cause__ is exception
    assert error.status_code is None
    assert_no_secret(error, *secrets)


def assert_connection_refused(
    provider: SpeechProvider, request: SynthesisRequest | TranscriptionRequest, *secrets: str
) -> None:
    """`provider`, pointed where nothing listens, fails `request` as ProviderUnavailable raised
    from httpx's ConnectError; the provider is closed after."""
    with provider, pytest.raises(ProviderUnavailable) as caught:
        if isinstance(request, SynthesisRequest):
            provider.synthesize(request)
        else:
            provider.transcribe(request)

    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert_no_secret(caught.value, *secrets)


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    """No secret in any message along the chain: not ours, not the client library's."""
    seen: BaseException | None = error
    while seen is not None:
        for secret in secrets:
            assert secret not in str(seen)
            assert secret not in repr(seen)
            assert secret not in getattr(seen, "message", "")
        seen = seen.__cause__


def check_azure_auth(
    headers: httpx.Headers, *, key_header: str, api_key: str | None, ad_token: str | None
) -> None:
    """Azure's rule for both its speech services: the key in `key_header`, or an Entra token
    as Bearer, which wins; never both."""
    if ad_token is not None:
        assert headers["authorization"] == f"Bearer {ad_token}"
        assert key_header not in headers
    elif api_key is not None:
        assert headers[key_header] == api_key
        assert "authorization" not in headers
    else:
        assert key_header not in headers and "authorization" not in headers


# A real server on a socket, for the provider's own httpx client.

# (status, headers, body) for one request; Content-Length is added.
Answer = tuple[int, Mapping[str, str], bytes]
# What to answer for (path, headers, body).
Responder = Callable[[str, httpx.Headers, bytes], Answer]


class _RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = dict(self.headers.items())
        self.server.records.append((self.path, headers, body))
        status, answer_headers, content = self.server.respond(
            self.path, httpx.Headers(headers), body
        )
        self.send_response(status)
        for name, value in answer_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean


class RecordingServer(ThreadingHTTPServer):
    """A tiny HTTP server on 127.0.0.1. It records each POST as `(path, headers, body)` and
    answers what `respond(path, headers, body)` says; the test thread asserts."""

    daemon_threads = True

    def __init__(self, respond: Responder) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.respond = respond
        self.records: list[tuple[str, dict[str, str], bytes]] = []


@contextmanager
def serve_recording(
    respond: Responder,
) -> Iterator[RecordingServer]:
    """A running `RecordingServer`, shut down on exit."""
    server = RecordingServer(respond)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# OpenAI's audio API, spoken by openai.py and azure.py.

OPENAI_SPEECH_FIELDS = {"model", "input", "voice", "response_format", "speed"}
OPENAI_TRANSCRIPTION_FIELDS = {"model", "language", "prompt", "temperature", "response_format"}
# A few real magic numbers, so the bytes at least look like what OpenAI sends.
OPENAI_AUDIO: dict[str, tuple[bytes, str]] = {
    "mp3": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 8, "audio/mpeg"),
    "opus": (b"OggS\x00\x02" + b"OpusHead" + bytes(16), "audio/opus"),
    "aac": (b"\xff\xf1\x50\x80" + bytes(28), "audio/aac"),
    "flac": (b"fLaC\x00\x00\x00\x22" + bytes(24), "audio/flac"),
    "wav": (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(24), "audio/wav"),
    "pcm": (b"\x00\x00\xff\x7f\x01\x80" * 8, "audio/pcm"),
}
OPENAI_TRANSCRIPT = "Hello there. General Kenobi."
VERBOSE_JSON: dict[str, Any] = {
    "task": "transcribe",
    "language": "english",
    "duration": 3.5,
    "text": OPENAI_TRANSCRIPT,
    "segments": [
        {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": 1.8,
            "text": " Hello there.",
            "tokens": [50364, 2425, 456, 13, 50454],
            "temperature": 0.0,
            "avg_logprob": -0.21,
            "compression_ratio": 0.82,
            "no_speech_prob": 0.01,
        },
        {
            "id": 1,
            "seek": 0,
            "start": 1.8,
            "end": 3.5,
            "text": " General Kenobi.",
            "tokens": [50454, 6996, 8273, 996, 13, 50539],
            "temperature": 0.0,
            "avg_logprob": -0.35,
            "compression_ratio": 0.82,
            "no_speech_prob": 0.02,
        },
    ],
    "usage": {"type": "duration", "seconds": 4},
}
SRT = (
    "1\n00:00:00,000 --> 00:00:01,800\nHello there.\n\n"
    "2\n00:00:01,800 --> 00:00:03,500\nGeneral Kenobi.\n\n"
)
VTT = (
    "WEBVTT\n\n"
    "00:00:00.000 --> 00:00:01.800\nHello there.\n\n"
    "00:00:01.800 --> 00:00:03.500\nGeneral Kenobi.\n\n"
)
OPENAI_SEGMENTS = (
    TranscriptSegment(start=0.0, end=1.8, text="Hello there."),
    TranscriptSegment(start=1.8, end=3.5, text="General Kenobi."),
)


def openai_transcription_answer(response_format: str) -> tuple[bytes, str]:
    """What OpenAI answers for each transcription `response_format`."""
    if response_format == "json":
        body = {"text": OPENAI_TRANSCRIPT, "usage": {"type": "duration", "seconds": 4}}
        return json.dumps(body).encode(), "application/json"
    if response_format == "verbose_json":
        return json.dumps(VERBOSE_JSON).encode(), "application/json"
    if response_format == "srt":
        return SRT.encode(), "text/plain; charset=utf-8"
    if response_format == "vtt":
        return VTT.encode(), "text/plain; charset=utf-8"
    return f"{OPENAI_TRANSCRIPT}\n".encode(), "text/plain; charset=utf-8"


def check_openai_speech(request: httpx.Request) -> dict[str, Any]:
    """The body of an /audio/speech request, checked as OpenAI would."""
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert OPENAI_SPEECH_FIELDS <= body.keys() <= OPENAI_SPEECH_FIELDS | {"instructions"}
    assert isinstance(body["input"], str) and isinstance(body["speed"], float)
    return body


def check_openai_transcription(request: httpx.Request) -> Upload:
    """The upload of an /audio/transcriptions request, checked as OpenAI would."""
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    upload = parse_multipart(request.headers, request.content)
    assert upload.file_field == "file"
    assert {"model", "response_format"} <= upload.fields.keys() <= OPENAI_TRANSCRIPTION_FIELDS
    return upload


# Gemini's generateContent for speech, spoken by gemini.py and vertex_ai.py.

# Two seconds would be 96,000 bytes; a few hundred samples of a real-looking ramp will do.
PCM = b"".join(int(v).to_bytes(2, "little", signed=True) for v in range(-3000, 3000, 25))


def gemini_answer(
    pcm: bytes = PCM, *, mime_type: str = "audio/L16;codec=pcm;rate=24000", parts: int = 1
) -> dict[str, Any]:
    """A generateContent answer as the Gemini API gives it for a TTS model."""
    size = len(pcm) // parts
    chunks = [pcm[i * size : (i + 1) * size if i < parts - 1 else None] for i in range(parts)]
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {
                            "inlineData": {
                                "mimeType": mime_type,
                                "data": base64.b64encode(chunk).decode(),
                            }
                        }
                        for chunk in chunks
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 8,
            "candidatesTokenCount": 48,
            "totalTokenCount": 56,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
            "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 48}],
        },
        "modelVersion": "gemini-2.5-flash-preview-tts",
        "responseId": "TPBPaOzJEdaY1MkPy5fzkQ0",
    }


def check_speech_body(body: dict[str, Any]) -> None:
    """The generateContent shape of the speech-generation guide, and nothing else."""
    assert body.keys() == {"contents", "generationConfig"}
    (content,) = body["contents"]
    assert content.keys() == {"role", "parts"} and content["role"] == "user"
    (part,) = content["parts"]
    assert part.keys() == {"text"} and isinstance(part["text"], str) and part["text"]
    config = body["generationConfig"]
    assert config.keys() == {"responseModalities", "speechConfig"}
    assert config["responseModalities"] == ["AUDIO"]
    speech = config["speechConfig"]
    assert speech.keys() <= {"voiceConfig", "languageCode"}
    voice = speech["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"]
    assert isinstance(voice, str) and voice


def google_error(
    status: int,
    grpc_status: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """An error in Google's envelope."""
    error: dict[str, Any] = {"code": status, "message": message, "status": grpc_status}
    if details is not None:
        error["details"] = details
    return httpx.Response(status, json={"error": error}, headers=headers)
