"""OpenAIProvider against a fake OpenAI server that checks the wire format of every call."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.worker.provider_fakes import (
    AUDIO_BYTES,
    HTTP_STATUS_ERRORS,
    OPENAI_AUDIO,
    OPENAI_SEGMENTS,
    OPENAI_SPEECH_FIELDS,
    OPENAI_TRANSCRIPT,
    TRANSPORT_FAILURES,
    Answer,
    RecordingServer,
    Upload,
    answering,
    assert_connection_refused,
    assert_status_classes,
    assert_status_error,
    assert_transport_error,
    check_openai_speech,
    check_openai_transcription,
    openai_transcription_answer,
    parse_multipart,
    provider_factory,
    raising,
    serve_recording,
    standalone_provider,
    unused_port,
)
from worker.providers.base import SynthesisRequest, TranscriptionRequest, TranscriptSegment
from worker.providers.errors import (
    ProviderError,
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


@dataclass
class Call:
    """One request the fake server accepted, already checked and decoded."""

    url: str
    headers: httpx.Headers
    json: dict[str, Any] | None = None
    upload: Upload | None = None
    timeout: dict[str, float | None] = field(default_factory=dict)


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
        call.json = body = check_openai_speech(request)
        audio, content_type = OPENAI_AUDIO[body["response_format"]]
        return httpx.Response(
            200, content=audio, headers={"content-type": content_type, "x-request-id": "req_speech"}
        )

    def answer_transcription(self, request: httpx.Request, call: Call) -> httpx.Response:
        call.upload = upload = check_openai_transcription(request)
        content, content_type = openai_transcription_answer(upload.fields["response_format"])
        return httpx.Response(
            200, content=content, headers={"content-type": content_type, "x-request-id": "req_stt"}
        )


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
def make_provider(fake: FakeOpenAI) -> Iterator[Callable[..., OpenAIProvider]]:
    """Build a provider wired to `fake`; `api_base=None` means OpenAI's default."""
    with provider_factory(
        OpenAIProvider, fake, model="tts-1", api_base=FAKE_BASE, api_key=API_KEY
    ) as create:
        yield create


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
    assert result.audio == OPENAI_AUDIO[audio_format][0]
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
    assert with_instructions.keys() == OPENAI_SPEECH_FIELDS | {"instructions"}


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

    assert result.audio == OPENAI_AUDIO["mp3"][0]
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
    with pytest.raises(ProviderUnavailable, match="expected mp3 audio"):
        make_provider(handler=answering(content, content_type)).synthesize(speech())


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
    assert result.text == OPENAI_TRANSCRIPT
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
    assert result.text == OPENAI_TRANSCRIPT
    assert result.language == "english"
    assert result.duration_seconds == 3.5
    assert result.segments == OPENAI_SEGMENTS
    assert result.request_id == "req_stt"


@pytest.mark.parametrize("wanted", ["srt", "vtt"])
def test_transcribe_audio_subtitles_ask_for_verbose_json(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider], audio_path: Path, wanted: str
) -> None:
    result = make_provider().transcribe(transcription(audio_path, response_format=wanted))

    assert fake.calls[0].upload is not None
    assert fake.calls[0].upload.fields["response_format"] == "verbose_json"
    assert result.segments == OPENAI_SEGMENTS


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
    assert result.text == OPENAI_TRANSCRIPT  # the trailing newline is gone
    assert result.segments == ()


@pytest.mark.parametrize("forced", ["srt", "vtt"])
def test_transcribe_audio_deployment_forced_subtitles(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider], audio_path: Path, forced: str
) -> None:
    result = make_provider(response_format=forced).transcribe(transcription(audio_path))

    assert fake.calls[0].upload is not None
    assert fake.calls[0].upload.fields["response_format"] == forced
    assert result.segments == OPENAI_SEGMENTS
    assert result.text == OPENAI_TRANSCRIPT


def test_transcribe_audio_text_answered_as_json_string(
    make_provider: Callable[..., OpenAIProvider], audio_path: Path
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=f"{OPENAI_TRANSCRIPT}\n")

    provider = make_provider(response_format="text", handler=handler)
    assert provider.transcribe(transcription(audio_path)).text == OPENAI_TRANSCRIPT


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
    provider = make_provider(handler=answering(content, "application/json"))
    with pytest.raises(ProviderUnavailable):
        provider.transcribe(transcription(audio_path))


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
@pytest.mark.parametrize(("status", "error_class"), HTTP_STATUS_ERRORS)
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

    assert_status_error(caught.value, error_class, status, API_KEY)
    assert "Incorrect API key provided: ***. Try again." in str(caught.value)
    assert f"HTTP {status}" in str(caught.value)


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


@pytest.mark.parametrize(("exception", "error_class"), TRANSPORT_FAILURES)
@pytest.mark.parametrize("kind", ["speech", "transcription"])
def test_provider_error_for_transport_failure(
    make_provider: Callable[..., OpenAIProvider],
    audio_path: Path,
    kind: str,
    exception: httpx.TransportError,
    error_class: type[ProviderError],
) -> None:
    with pytest.raises(error_class) as caught:
        call_provider(make_provider(handler=raising(exception)), kind, audio_path)

    assert_transport_error(caught.value, exception, API_KEY)


def test_provider_error_connection_refused_over_real_sockets() -> None:
    provider = standalone_provider(
        OpenAIProvider,
        model="tts-1",
        api_base=f"http://127.0.0.1:{unused_port()}/v1",
        api_key=API_KEY,
        timeout=5,
    )
    assert_connection_refused(provider, speech(), API_KEY)


def test_map_openai_error_every_status_class() -> None:
    assert_status_classes(
        map_openai_error,
        [*HTTP_STATUS_ERRORS, (504, ProviderUnavailable), (302, ProviderUnavailable)],
        url=f"{FAKE_BASE}/audio/speech",
        json={"error": {"message": "m"}},
    )


def test_map_openai_error_label_and_secrets() -> None:
    request = httpx.Request("POST", f"{FAKE_BASE}/audio/speech")
    exc = httpx.ConnectError(f"refused for {API_KEY} and tok-1", request=request)

    error = map_openai_error(exc, label="azure", secrets=[API_KEY, None, "tok-1"])

    assert str(error) == "azure: could not reach the server (ConnectError: refused for *** and ***)"


# Real HTTP: the provider's own httpx client against a tiny server on a socket.


def answer_real_request(path: str, headers: httpx.Headers, body: bytes) -> Answer:
    """A minimal /v1/audio/* server."""
    if path == "/v1/audio/speech":
        content, content_type = OPENAI_AUDIO[json.loads(body)["response_format"]]
    elif path == "/v1/audio/transcriptions":
        content, content_type = openai_transcription_answer("verbose_json")
    else:
        error = b'{"error": {"message": "no such route"}}'
        return 404, {"Content-Type": "application/json"}, error
    return 200, {"Content-Type": content_type, "x-request-id": "req_real"}, content


@pytest.fixture
def real_server() -> Iterator[RecordingServer]:
    with serve_recording(answer_real_request) as server:
        yield server


def real_provider(server: RecordingServer, **params: Any) -> OpenAIProvider:
    host, port = server.server_address[:2]
    api_base = f"http://{host!s}:{port}/v1/"
    return standalone_provider(
        OpenAIProvider, model="tts-1", api_base=api_base, api_key=API_KEY, **params
    )


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
    assert result.audio == OPENAI_AUDIO["pcm"][0]
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
    assert result.segments == OPENAI_SEGMENTS


def test_provider_error_over_real_http(real_server: RecordingServer) -> None:
    api_base = f"http://127.0.0.1:{real_server.server_address[1]}/v2"
    provider = standalone_provider(OpenAIProvider, model="tts-1", api_base=api_base)
    with provider, pytest.raises(UnsupportedFeature) as caught:
        provider.synthesize(speech())

    assert "no such route" in str(caught.value)
    assert "Authorization" not in real_server.records[0][1]
