"""OpenAIProvider against a fake OpenAI server that checks the wire format of every call."""

from __future__ import annotations

import email.utils
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import python_multipart

from worker.providers.base import (
    Deployment,
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
from worker.providers.openai import (
    OpenAIProvider,
    choose_transcription_format,
    map_openai_error,
    parse_retry_after_s,
    parse_subtitles,
)

API_KEY = "sk-test"
FAKE_BASE = "http://fake.local/v1"
SPEECH_FIELDS = {"model", "input", "voice", "response_format", "speed"}
TRANSCRIPTION_FIELDS = {"model", "language", "prompt", "temperature", "response_format"}

# A few real magic numbers, so the bytes at least look like what OpenAI sends.
FAKE_AUDIO: dict[str, tuple[bytes, str]] = {
    "mp3": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 8, "audio/mpeg"),
    "opus": (b"OggS\x00\x02" + b"OpusHead" + bytes(16), "audio/opus"),
    "aac": (b"\xff\xf1\x50\x80" + bytes(28), "audio/aac"),
    "flac": (b"fLaC\x00\x00\x00\x22" + bytes(24), "audio/flac"),
    "wav": (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(24), "audio/wav"),
    "pcm": (b"\x00\x00\xff\x7f\x01\x80" * 8, "audio/pcm"),
}
TRANSCRIPT = "Hello there. General Kenobi."
VERBOSE_JSON: dict[str, Any] = {
    "task": "transcribe",
    "language": "english",
    "duration": 3.5,
    "text": TRANSCRIPT,
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
EXPECTED_SEGMENTS = (
    TranscriptSegment(start=0.0, end=1.8, text="Hello there."),
    TranscriptSegment(start=1.8, end=3.5, text="General Kenobi."),
)
# Bytes that trip careless multipart handling: CRLFs, a fake boundary, every byte value.
AUDIO_BYTES = b"RIFF\x00\x00WAVE\r\n--boundary\r\n\r\n" + bytes(range(256)) * 64


@dataclass
class Upload:
    fields: dict[str, str]
    file_field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class Call:
    """One request the fake server accepted, already checked and decoded."""

    url: str
    headers: httpx.Headers
    json: dict[str, Any] | None = None
    upload: Upload | None = None
    timeout: dict[str, float | None] = field(default_factory=dict)


def parse_multipart(headers: Any, body: bytes) -> Upload:
    """Decode a multipart/form-data body with python-multipart, as starlette does."""
    fields: dict[str, str] = {}
    files: list[Any] = []

    def on_field(item: Any) -> None:
        fields[item.field_name.decode()] = (item.value or b"").decode()

    def on_file(item: Any) -> None:
        files.append(item)

    python_multipart.parse_form(
        {
            "Content-Type": headers["content-type"].encode(),
            "Content-Length": str(len(body)).encode(),
        },
        io.BytesIO(body),
        on_field,
        on_file,
    )
    assert len(files) == 1, "exactly one file part"
    part = files[0]
    part.file_object.seek(0)
    data = part.file_object.read()
    part.close()
    content_type = part.content_type or None
    return Upload(fields, part.field_name.decode(), part.file_name.decode(), content_type, data)


def transcription_answer(response_format: str) -> tuple[bytes, str]:
    """What OpenAI answers for each transcription `response_format`."""
    if response_format == "json":
        body = {"text": TRANSCRIPT, "usage": {"type": "duration", "seconds": 4}}
        return json.dumps(body).encode(), "application/json"
    if response_format == "verbose_json":
        return json.dumps(VERBOSE_JSON).encode(), "application/json"
    if response_format == "srt":
        return SRT.encode(), "text/plain; charset=utf-8"
    if response_format == "vtt":
        return VTT.encode(), "text/plain; charset=utf-8"
    return f"{TRANSCRIPT}\n".encode(), "text/plain; charset=utf-8"


class FakeOpenAI:
    """An httpx handler that checks each request like OpenAI would and answers realistically.

    Wire-format mistakes fail the test right here, with an AssertionError in the handler.
    Set `failure` to answer every call with that response instead.
    """

    def __init__(self, *, base: str = FAKE_BASE, api_key: str | None = API_KEY) -> None:
        self.base = base.rstrip("/")
        self.api_key = api_key
        self.calls: list[Call] = []
        self.failure: httpx.Response | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        if self.api_key is None:
            assert "authorization" not in request.headers
        else:
            assert request.headers["authorization"] == f"Bearer {self.api_key}"
        call = Call(
            str(request.url), request.headers, timeout=request.extensions.get("timeout", {})
        )
        self.calls.append(call)
        if self.failure is not None:
            return self.failure
        if str(request.url) == f"{self.base}/audio/speech":
            return self.answer_speech(request, call)
        if str(request.url) == f"{self.base}/audio/transcriptions":
            return self.answer_transcription(request, call)
        raise AssertionError(f"unexpected URL {request.url}")

    def answer_speech(self, request: httpx.Request, call: Call) -> httpx.Response:
        assert request.headers["content-type"] == "application/json"
        body = json.loads(request.content)
        assert SPEECH_FIELDS <= body.keys() <= SPEECH_FIELDS | {"instructions"}
        assert isinstance(body["input"], str) and isinstance(body["speed"], float)
        call.json = body
        audio, content_type = FAKE_AUDIO[body["response_format"]]
        return httpx.Response(
            200, content=audio, headers={"content-type": content_type, "x-request-id": "req_speech"}
        )

    def answer_transcription(self, request: httpx.Request, call: Call) -> httpx.Response:
        assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
        upload = parse_multipart(request.headers, request.content)
        assert upload.file_field == "file"
        assert {"model", "response_format"} <= upload.fields.keys() <= TRANSCRIPTION_FIELDS
        call.upload = upload
        content, content_type = transcription_answer(upload.fields["response_format"])
        return httpx.Response(
            200, content=content, headers={"content-type": content_type, "x-request-id": "req_stt"}
        )


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
def make_provider(fake: FakeOpenAI) -> Iterator[Callable[..., OpenAIProvider]]:
    """Build a provider wired to `fake`; `api_base=None` means OpenAI's default."""
    providers: list[OpenAIProvider] = []

    def create(
        *,
        model: str = "tts-1",
        api_base: str | None = FAKE_BASE,
        api_key: str | None = API_KEY,
        handler: Callable[[httpx.Request], httpx.Response] | None = None,
        **params: Any,
    ) -> OpenAIProvider:
        if api_base is not None:
            params["api_base"] = api_base
        params["api_key"] = api_key
        deployment = Deployment(
            model_name="speech", provider="openai", model=model, params=params, id="speech#0"
        )
        http = httpx.Client(transport=httpx.MockTransport(handler or fake))
        provider = OpenAIProvider(deployment, http=http)
        providers.append(provider)
        return provider

    yield create
    for provider in providers:
        provider.http.close()


@pytest.fixture
def audio_path(tmp_path: Path) -> Path:
    path = tmp_path / "clip.wav"
    path.write_bytes(AUDIO_BYTES)
    return path


def speech(**overrides: Any) -> SynthesisRequest:
    values: dict[str, Any] = {"model": "tts-1", "text": "Hello, world.", "voice": "alloy"}
    return SynthesisRequest(**(values | overrides))


def transcription(audio_path: Path, **overrides: Any) -> TranscriptionRequest:
    values: dict[str, Any] = {
        "model": "whisper-1",
        "audio_path": audio_path,
        "filename": "clip.wav",
    }
    return TranscriptionRequest(**(values | overrides))


# Text to speech.


@pytest.mark.parametrize("audio_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_synthesize_speech_each_format(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider], audio_format: str
) -> None:
    provider = make_provider()
    result = provider.synthesize(speech(response_format=audio_format, speed=1.25, voice="nova"))

    (call,) = fake.calls
    assert call.url == "http://fake.local/v1/audio/speech"
    assert call.json == {
        "model": "tts-1",
        "input": "Hello, world.",
        "voice": "nova",
        "response_format": audio_format,
        "speed": 1.25,
    }
    assert result.audio == FAKE_AUDIO[audio_format][0]
    assert result.audio_format == audio_format
    assert result.sample_rate == (24000 if audio_format == "pcm" else None)
    assert result.characters == len("Hello, world.")
    assert result.request_id == "req_speech"


def test_synthesize_speech_other_client_format_asks_for_wav(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    result = make_provider().synthesize(speech(response_format="ogg"))

    assert fake.calls[0].json is not None and fake.calls[0].json["response_format"] == "wav"
    assert result.audio_format == "wav" and result.sample_rate is None


def test_synthesize_speech_instructions_only_when_set(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    provider = make_provider(model="gpt-4o-mini-tts")
    provider.synthesize(speech(model="gpt-4o-mini-tts"))
    provider.synthesize(speech(model="gpt-4o-mini-tts", instructions="Speak like a pirate."))

    without, with_instructions = (call.json or {} for call in fake.calls)
    assert "instructions" not in without
    assert with_instructions["instructions"] == "Speak like a pirate."
    assert with_instructions.keys() == SPEECH_FIELDS | {"instructions"}


@pytest.mark.parametrize(
    ("api_base", "expected_url"),
    [
        ("http://fake.local/v1", "http://fake.local/v1/audio/speech"),
        ("http://fake.local/v1/", "http://fake.local/v1/audio/speech"),
        (None, "https://api.openai.com/v1/audio/speech"),
    ],
)
def test_synthesize_speech_url_from_api_base(
    make_provider: Callable[..., OpenAIProvider], api_base: str | None, expected_url: str
) -> None:
    fake = FakeOpenAI(base=expected_url.removesuffix("/audio/speech"))
    make_provider(api_base=api_base, handler=fake).synthesize(speech())

    assert [call.url for call in fake.calls] == [expected_url]


def test_synthesize_speech_without_api_key_sends_no_authorization(
    make_provider: Callable[..., OpenAIProvider],
) -> None:
    fake = FakeOpenAI(api_key=None)  # asserts the header is absent
    result = make_provider(api_key=None, handler=fake).synthesize(speech())

    assert result.audio == FAKE_AUDIO["mp3"][0]
    assert len(fake.calls) == 1


def test_synthesize_speech_organization_and_timeout(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    make_provider(organization="org-123", timeout=7).synthesize(speech())

    (call,) = fake.calls
    assert call.headers["openai-organization"] == "org-123"
    assert call.timeout == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}


def test_synthesize_speech_default_timeout_is_the_clients(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    provider = make_provider()
    provider.synthesize(speech())

    assert "openai-organization" not in fake.calls[0].headers
    assert fake.calls[0].timeout == provider.http.timeout.as_dict()


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"error": {"message": "oops"}}', "application/json"),
        (b"<html>proxy says hi</html>", "text/html"),
        (b"", "audio/mpeg"),
    ],
)
def test_synthesize_speech_non_audio_answer_is_unavailable(
    make_provider: Callable[..., OpenAIProvider], content: bytes, content_type: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=content, headers={"content-type": content_type})

    with pytest.raises(ProviderUnavailable, match="expected mp3 audio"):
        make_provider(handler=handler).synthesize(speech())


# Speech to text.


def test_transcribe_audio_json(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider], audio_path: Path
) -> None:
    result = make_provider().transcribe(transcription(audio_path))

    (call,) = fake.calls
    assert call.url == "http://fake.local/v1/audio/transcriptions"
    assert call.upload is not None
    assert call.upload.fields == {"model": "whisper-1", "response_format": "json"}
    assert call.upload.filename == "clip.wav"
    assert call.upload.content_type in {"audio/x-wav", "audio/wav"}
    assert call.upload.data == AUDIO_BYTES
    assert result.text == TRANSCRIPT
    assert result.segments == ()
    assert result.language is None and result.duration_seconds is None
    assert result.request_id == "req_stt"


@pytest.mark.parametrize(("temperature", "sent"), [(0.2, "0.2"), (0.0, "0.0")])
def test_transcribe_audio_optional_fields(
    fake: FakeOpenAI,
    make_provider: Callable[..., OpenAIProvider],
    audio_path: Path,
    temperature: float,
    sent: str,
) -> None:
    # 0 is a real choice for Whisper (greedy, with fallback), not "unset".
    request = transcription(audio_path, language="en", prompt="Star Wars.", temperature=temperature)
    make_provider().transcribe(request)

    upload = fake.calls[0].upload
    assert upload is not None
    assert upload.fields == {
        "model": "whisper-1",
        "language": "en",
        "prompt": "Star Wars.",
        "temperature": sent,
        "response_format": "json",
    }


def test_transcribe_audio_verbose_json(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider], audio_path: Path
) -> None:
    result = make_provider().transcribe(transcription(audio_path, response_format="verbose_json"))

    assert fake.calls[0].upload is not None
    assert fake.calls[0].upload.fields["response_format"] == "verbose_json"
    assert result.text == TRANSCRIPT
    assert result.language == "english"
    assert result.duration_seconds == 3.5
    assert result.segments == EXPECTED_SEGMENTS
    assert result.request_id == "req_stt"


@pytest.mark.parametrize("wanted", ["srt", "vtt"])
def test_transcribe_audio_subtitles_ask_for_verbose_json(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider], audio_path: Path, wanted: str
) -> None:
    result = make_provider().transcribe(transcription(audio_path, response_format=wanted))

    assert fake.calls[0].upload is not None
    assert fake.calls[0].upload.fields["response_format"] == "verbose_json"
    assert result.segments == EXPECTED_SEGMENTS


@pytest.mark.parametrize("wanted", ["text", "json"])
def test_transcribe_audio_plain_formats_ask_for_json(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider], audio_path: Path, wanted: str
) -> None:
    make_provider().transcribe(transcription(audio_path, response_format=wanted))

    assert fake.calls[0].upload is not None
    assert fake.calls[0].upload.fields["response_format"] == "json"


def test_transcribe_audio_deployment_forced_text(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider], audio_path: Path
) -> None:
    provider = make_provider(response_format="text")
    result = provider.transcribe(transcription(audio_path, response_format="srt"))

    assert fake.calls[0].upload is not None
    assert fake.calls[0].upload.fields["response_format"] == "text"
    assert result.text == TRANSCRIPT  # the trailing newline is gone
    assert result.segments == ()


@pytest.mark.parametrize("forced", ["srt", "vtt"])
def test_transcribe_audio_deployment_forced_subtitles(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider], audio_path: Path, forced: str
) -> None:
    result = make_provider(response_format=forced).transcribe(transcription(audio_path))

    assert fake.calls[0].upload is not None
    assert fake.calls[0].upload.fields["response_format"] == forced
    assert result.segments == EXPECTED_SEGMENTS
    assert result.text == TRANSCRIPT


def test_transcribe_audio_text_answered_as_json_string(
    make_provider: Callable[..., OpenAIProvider], audio_path: Path
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=f"{TRANSCRIPT}\n")

    provider = make_provider(response_format="text", handler=handler)
    assert provider.transcribe(transcription(audio_path)).text == TRANSCRIPT


def test_transcribe_audio_filename_borrows_the_file_extension(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider], audio_path: Path
) -> None:
    make_provider().transcribe(transcription(audio_path, filename="audio"))

    assert fake.calls[0].upload is not None
    assert fake.calls[0].upload.filename == "audio.wav"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"transcript": "wrong key"}',
        b'{"text": "hi", "segments": [{"start": 0.0}]}',
        b'{"text": "hi", "duration": "long"}',
    ],
)
def test_transcribe_audio_unexpected_json_is_unavailable(
    make_provider: Callable[..., OpenAIProvider], audio_path: Path, content: bytes
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=content, headers={"content-type": "application/json"})

    with pytest.raises(ProviderUnavailable):
        make_provider(handler=handler).transcribe(transcription(audio_path))


def test_choose_transcription_format() -> None:
    assert choose_transcription_format("json") == "json"
    assert choose_transcription_format("text") == "json"
    assert choose_transcription_format("srt") == "verbose_json"
    assert choose_transcription_format("vtt") == "verbose_json"
    assert choose_transcription_format("verbose_json") == "verbose_json"
    assert choose_transcription_format("srt", "json") == "json"


def test_parse_subtitles_vtt_without_hours_and_cue_settings() -> None:
    body = "WEBVTT\r\n\r\nintro\r\n01:02.500 --> 01:04.000 align:start\r\nOne\r\ntwo\r\n"

    assert parse_subtitles(body) == (TranscriptSegment(start=62.5, end=64.0, text="One two"),)


# Errors: one mapper, every status class, both calls.

STATUS_ERRORS: list[tuple[int, type[ProviderError]]] = [
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


def openai_error(status: int, message: str, **headers: str) -> httpx.Response:
    """An error in OpenAI's envelope."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None}}
    body["error"]["code"] = "rate_limit_exceeded" if status == 429 else None
    return httpx.Response(status, json=body, headers={"x-request-id": "req_err", **headers})


def call_provider(provider: OpenAIProvider, kind: str, audio_path: Path) -> None:
    if kind == "speech":
        provider.synthesize(speech())
    else:
        provider.transcribe(transcription(audio_path))


@pytest.mark.parametrize("kind", ["speech", "transcription"])
@pytest.mark.parametrize(("status", "error_class"), STATUS_ERRORS)
def test_provider_error_for_status(
    fake: FakeOpenAI,
    make_provider: Callable[..., OpenAIProvider],
    audio_path: Path,
    kind: str,
    status: int,
    error_class: type[ProviderError],
) -> None:
    # Some servers echo the key; OpenAI itself masks it, but we must not rely on that.
    fake.failure = openai_error(status, f"Incorrect API key provided: {API_KEY}. Try again.")

    with pytest.raises(error_class) as caught:
        call_provider(make_provider(), kind, audio_path)

    assert type(caught.value) is error_class
    assert caught.value.status_code == status
    assert "Incorrect API key provided: ***. Try again." in str(caught.value)
    assert f"HTTP {status}" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.HTTPStatusError)
    assert_no_key(caught.value)


@pytest.mark.parametrize(
    ("headers", "expected_s"),
    [
        ({"retry-after": "20"}, 20.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "20"}, 0.25),
        ({}, None),
        ({"retry-after": "soon"}, None),
    ],
)
def test_provider_error_rate_limited_retry_after(
    fake: FakeOpenAI,
    make_provider: Callable[..., OpenAIProvider],
    headers: dict[str, str],
    expected_s: float | None,
) -> None:
    fake.failure = openai_error(429, "Rate limit reached for tts-1.", **headers)

    with pytest.raises(RateLimited) as caught:
        make_provider().synthesize(speech())

    assert caught.value.retry_after_s == expected_s
    assert "Rate limit reached for tts-1." in caught.value.message


def test_provider_error_rate_limited_retry_after_http_date(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    fake.failure = openai_error(429, "Slow down.", **{"retry-after": when})

    with pytest.raises(RateLimited) as caught:
        make_provider().synthesize(speech())

    assert caught.value.retry_after_s is not None
    assert 25.0 <= caught.value.retry_after_s <= 30.0


def test_parse_retry_after_s_date_in_the_past_is_zero() -> None:
    assert parse_retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"), "502 Bad Gateway"),
        (httpx.Response(422, json={"detail": "Unsupported voice"}), "Unsupported voice"),
        (httpx.Response(400, json={"error": "model not loaded"}), "model not loaded"),
        (httpx.Response(503), "Service Unavailable"),
    ],
)
def test_provider_error_message_from_non_openai_bodies(
    make_provider: Callable[..., OpenAIProvider], response: httpx.Response, expected: str
) -> None:
    with pytest.raises(ProviderError, match=expected):
        make_provider(handler=lambda request: response).synthesize(speech())


@pytest.mark.parametrize(
    ("exception", "error_class"),
    [
        (httpx.ReadTimeout("timed out"), ProviderTimeout),
        (httpx.ConnectTimeout("timed out"), ProviderTimeout),
        (httpx.PoolTimeout("timed out"), ProviderTimeout),
        (httpx.ConnectError("[Errno 111] Connection refused"), ProviderUnavailable),
        (httpx.RemoteProtocolError("peer closed connection"), ProviderUnavailable),
        (httpx.ReadError("connection reset"), ProviderUnavailable),
    ],
)
@pytest.mark.parametrize("kind", ["speech", "transcription"])
def test_provider_error_for_transport_failure(
    make_provider: Callable[..., OpenAIProvider],
    audio_path: Path,
    kind: str,
    exception: httpx.TransportError,
    error_class: type[ProviderError],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exception

    with pytest.raises(error_class) as caught:
        call_provider(make_provider(handler=handler), kind, audio_path)

    assert caught.value.__cause__ is exception
    assert caught.value.status_code is None
    assert_no_key(caught.value)


def test_provider_error_connection_refused_over_real_sockets() -> None:
    with socket.socket() as sock:  # bind a port, then release it: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    deployment = Deployment(
        model_name="speech",
        provider="openai",
        model="tts-1",
        params={"api_base": f"http://127.0.0.1:{port}/v1", "api_key": API_KEY, "timeout": 5},
    )
    with OpenAIProvider(deployment) as provider, pytest.raises(ProviderUnavailable) as caught:
        provider.synthesize(speech())

    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert_no_key(caught.value)


def test_map_openai_error_every_status_class() -> None:
    request = httpx.Request("POST", f"{FAKE_BASE}/audio/speech")
    for status, error_class in [
        *STATUS_ERRORS,
        (504, ProviderUnavailable),
        (302, ProviderUnavailable),
    ]:
        response = httpx.Response(status, json={"error": {"message": "m"}}, request=request)
        exc = httpx.HTTPStatusError("status", request=request, response=response)
        assert type(map_openai_error(exc)) is error_class, status


def assert_no_key(error: BaseException) -> None:
    """The key is in no message along the chain: not ours, not httpx's."""
    seen: BaseException | None = error
    while seen is not None:
        assert API_KEY not in str(seen)
        assert API_KEY not in repr(seen)
        assert API_KEY not in getattr(seen, "message", "")
        seen = seen.__cause__


# Real HTTP: the provider's own httpx client against a tiny server on a socket.


class RecordingHandler(BaseHTTPRequestHandler):
    """A minimal /v1/audio/* server. It only records; the test thread asserts."""

    server: RecordingServer

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        self.server.records.append((self.path, dict(self.headers.items()), body))
        if self.path == "/v1/audio/speech":
            audio_format = json.loads(body)["response_format"]
            content, content_type = FAKE_AUDIO[audio_format]
        elif self.path == "/v1/audio/transcriptions":
            content, content_type = transcription_answer("verbose_json")
        else:
            content, content_type = b'{"error": {"message": "no such route"}}', "application/json"
            self.send_response(404)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("x-request-id", "req_real")
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.records: list[tuple[str, dict[str, str], bytes]] = []


@pytest.fixture
def real_server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def real_provider(server: RecordingServer, **params: Any) -> OpenAIProvider:
    host, port = server.server_address[:2]
    deployment = Deployment(
        model_name="speech",
        provider="openai",
        model="tts-1",
        params={"api_base": f"http://{host!s}:{port}/v1/", "api_key": API_KEY, **params},
    )
    return OpenAIProvider(deployment)  # its default httpx client


def test_synthesize_speech_over_real_http(real_server: RecordingServer) -> None:
    with real_provider(real_server, timeout=10) as provider:
        result = provider.synthesize(speech(response_format="pcm", instructions="Calmly."))

    (path, headers, body) = real_server.records[0]
    assert path == "/v1/audio/speech"
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "model": "tts-1",
        "input": "Hello, world.",
        "voice": "alloy",
        "response_format": "pcm",
        "speed": 1.0,
        "instructions": "Calmly.",
    }
    assert result.audio == FAKE_AUDIO["pcm"][0]
    assert result.sample_rate == 24000
    assert result.request_id == "req_real"


def test_transcribe_audio_over_real_http(real_server: RecordingServer, audio_path: Path) -> None:
    with real_provider(real_server) as provider:
        result = provider.transcribe(transcription(audio_path, response_format="srt"))

    (path, headers, body) = real_server.records[0]
    assert path == "/v1/audio/transcriptions"
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert int(headers["Content-Length"]) == len(body)  # sized up front, not chunked
    upload = parse_multipart(httpx.Headers(headers), body)
    assert upload.fields == {"model": "whisper-1", "response_format": "verbose_json"}
    assert (upload.file_field, upload.filename, upload.data) == ("file", "clip.wav", AUDIO_BYTES)
    assert result.segments == EXPECTED_SEGMENTS


def test_provider_error_over_real_http(real_server: RecordingServer) -> None:
    deployment = Deployment(
        model_name="speech",
        provider="openai",
        model="tts-1",
        params={"api_base": f"http://127.0.0.1:{real_server.server_address[1]}/v2"},
    )
    with OpenAIProvider(deployment) as provider, pytest.raises(UnsupportedFeature) as caught:
        provider.synthesize(speech())

    assert "no such route" in str(caught.value)
    assert "Authorization" not in real_server.records[0][1]
