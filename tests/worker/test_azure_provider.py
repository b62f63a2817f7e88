"""AzureOpenAIProvider against a fake Azure OpenAI resource that checks every call's wire
format: method, deployment path, `api-version` query, `api-key` (or Entra bearer) header, body."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.worker.provider_fakes import (
    AUDIO_BYTES,
    OPENAI_AUDIO,
    OPENAI_SEGMENTS,
    OPENAI_TRANSCRIPT,
    OPENAI_VOICES,
    TRANSPORT_FAILURES,
    Answer,
    RecordingServer,
    Upload,
    answering,
    assert_connection_refused,
    assert_no_secret,
    assert_status_error,
    assert_transport_error,
    check_azure_auth,
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
from worker.providers.azure import DEFAULT_API_VERSION, AzureOpenAIProvider
from worker.providers.base import Deployment, SynthesisRequest, TranscriptionRequest
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)

API_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # Azure keys are 32 hex characters
AD_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra-test-token.c2lnbmF0dXJl"
RESOURCE = "https://contoso-audio.openai.azure.com"
DEPLOYMENT = "tts-prod"
QUERY = f"api-version={DEFAULT_API_VERSION}"
SECRETS = (API_KEY, AD_TOKEN)
AZURE_HEADERS = {
    "apim-request-id": "6f1c2d3e-0000-4000-8000-0123456789ab",
    "x-ms-region": "Sweden Central",
}


@dataclass
class Call:
    """One request the fake accepted, already checked and decoded."""

    url: str
    headers: httpx.Headers
    operation: str  # "speech" or "transcriptions"
    json: dict[str, Any] | None = None
    upload: Upload | None = None
    timeout: dict[str, float | None] = field(default_factory=dict)


class FakeAzureOpenAI:
    """An httpx handler that checks each request like Azure OpenAI would.

    Wire-format mistakes fail the test here, with an AssertionError in the handler.
    Set `failure` to answer every call with that response instead.
    """

    def __init__(
        self,
        *,
        resource: str = RESOURCE,
        deployment: str = DEPLOYMENT,
        api_version: str = DEFAULT_API_VERSION,
        api_key: str | None = API_KEY,
        ad_token: str | None = None,
    ) -> None:
        self.resource = resource
        self.deployment_path = f"/openai/deployments/{deployment}/audio/"
        self.api_version = api_version
        self.api_key = api_key
        self.ad_token = ad_token
        self.calls: list[Call] = []
        self.failure: httpx.Response | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        url = request.url
        assert f"{url.scheme}://{url.host}" == self.resource
        assert list(url.params.multi_items()) == [("api-version", self.api_version)]
        assert url.raw_path.decode().startswith(self.deployment_path), url.raw_path
        self.check_auth(request.headers)
        operation = url.path.rsplit("/", 1)[-1]
        call = Call(
            str(url), request.headers, operation, timeout=request.extensions.get("timeout", {})
        )
        self.calls.append(call)
        if self.failure is not None:
            return self.failure
        if operation == "speech":
            return self.answer_speech(request, call)
        if operation == "transcriptions":
            return self.answer_transcription(request, call)
        raise AssertionError(f"unexpected URL {url}")

    def check_auth(self, headers: httpx.Headers) -> None:
        # Azure takes `api-key` or an Entra token as Bearer; we must never send both.
        check_azure_auth(
            headers, key_header="api-key", api_key=self.api_key, ad_token=self.ad_token
        )
        assert "openai-organization" not in headers

    def answer_speech(self, request: httpx.Request, call: Call) -> httpx.Response:
        call.json = body = check_openai_speech(request)
        audio, content_type = OPENAI_AUDIO[body["response_format"]]
        headers = {"content-type": content_type, "x-request-id": "req-azure-speech"}
        return httpx.Response(200, content=audio, headers={**AZURE_HEADERS, **headers})

    def answer_transcription(self, request: httpx.Request, call: Call) -> httpx.Response:
        call.upload = upload = check_openai_transcription(request)
        content, content_type = openai_transcription_answer(upload.fields["response_format"])
        headers = {"content-type": content_type, "x-request-id": "req-azure-stt"}
        return httpx.Response(200, content=content, headers={**AZURE_HEADERS, **headers})


@pytest.fixture
def fake() -> FakeAzureOpenAI:
    return FakeAzureOpenAI()


@pytest.fixture
def make_provider(fake: FakeAzureOpenAI) -> Iterator[Callable[..., AzureOpenAIProvider]]:
    """Build a provider wired to `fake` (or `handler`); `api_base=None` leaves it unset."""
    with provider_factory(
        AzureOpenAIProvider, fake, model=DEPLOYMENT, api_base=RESOURCE, api_key=API_KEY
    ) as create:
        yield create


@pytest.fixture
def audio_path(tmp_path: Path) -> Path:
    path = tmp_path / "clip.wav"
    path.write_bytes(AUDIO_BYTES)
    return path


def speech(**overrides: Any) -> SynthesisRequest:
    values: dict[str, Any] = {"model": DEPLOYMENT, "text": "Hello, world.", "voice": "alloy"}
    return SynthesisRequest(**(values | overrides))


def transcription(audio_path: Path, **overrides: Any) -> TranscriptionRequest:
    values: dict[str, Any] = {"model": "whisper", "audio_path": audio_path, "filename": "clip.wav"}
    return TranscriptionRequest(**(values | overrides))


# Text to speech.


@pytest.mark.parametrize("audio_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_synthesize_speech_each_format(
    fake: FakeAzureOpenAI, make_provider: Callable[..., AzureOpenAIProvider], audio_format: str
) -> None:
    result = make_provider().synthesize(speech(response_format=audio_format, speed=1.25))

    (call,) = fake.calls
    assert call.url == (
        "https://contoso-audio.openai.azure.com/openai/deployments/tts-prod/audio/speech"
        "?api-version=2025-04-01-preview"
    )
    assert call.json == {
        "model": DEPLOYMENT,
        "input": "Hello, world.",
        "voice": "alloy",
        "response_format": audio_format,
        "speed": 1.25,
    }
    assert result.audio == OPENAI_AUDIO[audio_format][0]
    assert result.audio_format == audio_format
    assert result.sample_rate == (24000 if audio_format == "pcm" else None)
    assert result.characters == len("Hello, world.")
    assert result.request_id == "req-azure-speech"


def test_synthesize_speech_other_client_format_asks_for_wav(
    fake: FakeAzureOpenAI, make_provider: Callable[..., AzureOpenAIProvider]
) -> None:
    result = make_provider().synthesize(speech(response_format="ogg"))

    assert fake.calls[0].json is not None and fake.calls[0].json["response_format"] == "wav"
    assert result.audio_format == "wav"


def test_synthesize_speech_api_version_from_params(
    make_provider: Callable[..., AzureOpenAIProvider],
) -> None:
    fake = FakeAzureOpenAI(api_version="2025-03-01-preview")
    make_provider(handler=fake, api_version="2025-03-01-preview").synthesize(speech())

    assert fake.calls[0].url.endswith("/audio/speech?api-version=2025-03-01-preview")


@pytest.mark.parametrize(
    ("api_base", "model", "expected_path"),
    [
        (f"{RESOURCE}/", DEPLOYMENT, "/openai/deployments/tts-prod/audio/speech"),
        (RESOURCE, "gpt-4o-mini-tts", "/openai/deployments/gpt-4o-mini-tts/audio/speech"),
        (RESOURCE, "team a/tts", "/openai/deployments/team%20a%2Ftts/audio/speech"),
    ],
)
def test_synthesize_speech_url_from_api_base_and_deployment(
    make_provider: Callable[..., AzureOpenAIProvider],
    api_base: str,
    model: str,
    expected_path: str,
) -> None:
    # The deployment name is one path segment, whatever characters it holds.
    fake = FakeAzureOpenAI(deployment=expected_path.split("/")[3])
    make_provider(handler=fake, api_base=api_base, model=model).synthesize(speech(model=model))

    (call,) = fake.calls
    assert httpx.URL(call.url).raw_path.decode().split("?")[0] == expected_path
    assert call.json is not None and call.json["model"] == model


def test_synthesize_speech_entra_token_sends_bearer_instead_of_key(
    make_provider: Callable[..., AzureOpenAIProvider],
) -> None:
    fake = FakeAzureOpenAI(ad_token=AD_TOKEN)  # asserts Bearer and no api-key
    make_provider(handler=fake, azure_ad_token=AD_TOKEN).synthesize(speech())

    assert fake.calls[0].headers["authorization"] == f"Bearer {AD_TOKEN}"


def test_synthesize_speech_without_credentials_sends_no_auth_header(
    make_provider: Callable[..., AzureOpenAIProvider],
) -> None:
    fake = FakeAzureOpenAI(api_key=None)  # asserts neither header is present
    make_provider(handler=fake, api_key=None).synthesize(speech())

    assert len(fake.calls) == 1


def test_synthesize_speech_instructions_only_when_set(
    make_provider: Callable[..., AzureOpenAIProvider],
) -> None:
    fake = FakeAzureOpenAI(deployment="gpt-4o-mini-tts")
    provider = make_provider(handler=fake, model="gpt-4o-mini-tts")
    provider.synthesize(speech(model="gpt-4o-mini-tts"))
    provider.synthesize(speech(model="gpt-4o-mini-tts", instructions="Speak like a pirate."))

    without, with_instructions = (call.json or {} for call in fake.calls)
    assert "instructions" not in without
    assert with_instructions["instructions"] == "Speak like a pirate."


@pytest.mark.parametrize("voice", OPENAI_VOICES)
def test_synthesize_speech_openai_voice_names_pass_through(
    fake: FakeAzureOpenAI, make_provider: Callable[..., AzureOpenAIProvider], voice: str
) -> None:
    make_provider().synthesize(speech(voice=voice))

    assert fake.calls[0].json is not None and fake.calls[0].json["voice"] == voice


def test_synthesize_speech_voice_map_and_default_voice(
    fake: FakeAzureOpenAI, make_provider: Callable[..., AzureOpenAIProvider]
) -> None:
    provider = make_provider(voice_map={"alloy": "nova", "default": "onyx"})
    provider.synthesize(speech(voice="alloy"))
    provider.synthesize(speech(voice=None))
    make_provider().synthesize(speech(voice=None))

    assert [call.json["voice"] for call in fake.calls if call.json] == ["nova", "onyx", "alloy"]


def test_synthesize_speech_timeout_from_params(
    fake: FakeAzureOpenAI, make_provider: Callable[..., AzureOpenAIProvider]
) -> None:
    make_provider(timeout=9).synthesize(speech())

    assert fake.calls[0].timeout == {"connect": 9.0, "read": 9.0, "write": 9.0, "pool": 9.0}


def test_max_characters_is_azures_4096_unless_configured(
    make_provider: Callable[..., AzureOpenAIProvider],
) -> None:
    assert make_provider().max_characters() == 4096
    assert make_provider(model_info={"max_input_characters": 2000}).max_characters() == 2000


def test_provider_without_api_base_is_unsupported() -> None:
    deployment = Deployment(
        model_name="speech", provider="azure", model=DEPLOYMENT, params={"api_key": API_KEY}
    )
    with pytest.raises(UnsupportedFeature, match="api_base"):
        AzureOpenAIProvider(deployment)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"error": {"code": "InternalServerError", "message": "oops"}}', "application/json"),
        (b"<html>gateway</html>", "text/html"),
        (b"", "audio/mpeg"),
    ],
)
def test_synthesize_speech_non_audio_answer_is_unavailable(
    make_provider: Callable[..., AzureOpenAIProvider], content: bytes, content_type: str
) -> None:
    with pytest.raises(ProviderUnavailable, match=r"^azure: expected mp3 audio"):
        make_provider(handler=answering(content, content_type)).synthesize(speech())


# Speech to text.


def test_transcribe_audio_json(
    make_provider: Callable[..., AzureOpenAIProvider], audio_path: Path
) -> None:
    fake = FakeAzureOpenAI(deployment="whisper")
    result = make_provider(handler=fake, model="whisper").transcribe(
        transcription(audio_path, language="en", prompt="Kenobi", temperature=0.2)
    )

    (call,) = fake.calls
    assert call.url == (
        "https://contoso-audio.openai.azure.com/openai/deployments/whisper/audio/transcriptions"
        "?api-version=2025-04-01-preview"
    )
    assert call.upload is not None
    assert call.upload.fields == {
        "model": "whisper",
        "response_format": "json",
        "language": "en",
        "prompt": "Kenobi",
        "temperature": "0.2",
    }
    assert (call.upload.filename, call.upload.data) == ("clip.wav", AUDIO_BYTES)
    assert result.text == OPENAI_TRANSCRIPT
    assert result.request_id == "req-azure-stt"


@pytest.mark.parametrize("wanted", ["srt", "vtt", "verbose_json"])
def test_transcribe_audio_segments_from_verbose_json(
    make_provider: Callable[..., AzureOpenAIProvider], audio_path: Path, wanted: str
) -> None:
    fake = FakeAzureOpenAI(deployment="whisper")
    result = make_provider(handler=fake, model="whisper").transcribe(
        transcription(audio_path, response_format=wanted)
    )

    assert fake.calls[0].upload is not None
    assert fake.calls[0].upload.fields["response_format"] == "verbose_json"
    assert result.segments == OPENAI_SEGMENTS
    assert result.duration_seconds == 3.5
    assert result.language == "english"


def test_transcribe_audio_gpt_4o_transcribe_pinned_to_json(
    make_provider: Callable[..., AzureOpenAIProvider], audio_path: Path
) -> None:
    fake = FakeAzureOpenAI(deployment="gpt-4o-transcribe")
    provider = make_provider(handler=fake, model="gpt-4o-transcribe", response_format="json")
    result = provider.transcribe(transcription(audio_path, response_format="srt"))

    assert fake.calls[0].upload is not None
    assert fake.calls[0].upload.fields["response_format"] == "json"
    assert result.text == OPENAI_TRANSCRIPT and result.segments == ()


# Errors: one mapper (OpenAI's, relabelled), every status class, both calls.


def azure_error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    """An error in Azure OpenAI's envelope (OpenAI's, with Azure's codes)."""
    body = {"error": {"code": code, "message": message}}
    return httpx.Response(status, json=body, headers={**AZURE_HEADERS, **headers})


STATUS_ERRORS: list[tuple[int, str, type[ProviderError]]] = [
    (400, "content_filter", InvalidInput),
    (401, "401", AuthenticationFailed),
    (403, "AuthenticationTypeDisabled", AuthenticationFailed),
    (404, "DeploymentNotFound", UnsupportedFeature),
    (408, "Timeout", ProviderTimeout),
    (409, "Conflict", ProviderUnavailable),
    (413, "RequestEntityTooLarge", InvalidInput),
    (415, "UnsupportedMediaType", InvalidInput),
    (422, "invalid_value", InvalidInput),
    (429, "429", RateLimited),
    (500, "InternalServerError", ProviderUnavailable),
    (502, "BadGateway", ProviderUnavailable),
    (503, "ServiceUnavailable", ProviderUnavailable),
]


def call_provider(provider: AzureOpenAIProvider, kind: str, audio_path: Path) -> None:
    if kind == "speech":
        provider.synthesize(speech())
    else:
        provider.transcribe(transcription(audio_path))


@pytest.mark.parametrize("kind", ["speech", "transcription"])
@pytest.mark.parametrize(("status", "code", "error_class"), STATUS_ERRORS)
def test_provider_error_for_status(
    fake: FakeAzureOpenAI,
    make_provider: Callable[..., AzureOpenAIProvider],
    audio_path: Path,
    kind: str,
    status: int,
    code: str,
    error_class: type[ProviderError],
) -> None:
    # A proxy in front of Azure might echo the key; it must not reach logs or job rows.
    fake.failure = azure_error(status, code, f"Access denied for key {API_KEY}. Check it.")

    with pytest.raises(error_class) as caught:
        call_provider(make_provider(), kind, audio_path)

    assert_status_error(caught.value, error_class, status, *SECRETS)
    assert str(caught.value) == f"azure HTTP {status}: Access denied for key ***. Check it."
    assert caught.value.message == str(caught.value)


def test_provider_error_deployment_not_found_explains(
    fake: FakeAzureOpenAI, make_provider: Callable[..., AzureOpenAIProvider]
) -> None:
    fake.failure = azure_error(
        404,
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. If you created the deployment "
        "within the last 5 minutes, please wait a moment and try again.",
    )

    with pytest.raises(UnsupportedFeature, match="API deployment for this resource does not exist"):
        make_provider().synthesize(speech())


def test_provider_error_entra_token_is_masked(
    make_provider: Callable[..., AzureOpenAIProvider], audio_path: Path
) -> None:
    fake = FakeAzureOpenAI(ad_token=AD_TOKEN)
    fake.failure = azure_error(401, "401", f"Token {AD_TOKEN} is expired.")
    provider = make_provider(handler=fake, azure_ad_token=AD_TOKEN)

    for kind in ("speech", "transcription"):
        with pytest.raises(AuthenticationFailed) as caught:
            call_provider(provider, kind, audio_path)
        assert str(caught.value) == "azure HTTP 401: Token *** is expired."
        assert_no_secret(caught.value, *SECRETS)


@pytest.mark.parametrize(
    ("headers", "expected_s"),
    [
        ({"retry-after": "60"}, 60.0),
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
        ({}, None),
    ],
)
def test_provider_error_rate_limited_retry_after(
    fake: FakeAzureOpenAI,
    make_provider: Callable[..., AzureOpenAIProvider],
    headers: dict[str, str],
    expected_s: float | None,
) -> None:
    fake.failure = azure_error(
        429,
        "429",
        "Requests to the Audio_Speech Operation under Azure OpenAI API version "
        "2025-04-01-preview have exceeded call rate limit of your current AIServices S0 "
        "pricing tier. Please retry after 60 seconds.",
        **headers,
    )

    with pytest.raises(RateLimited) as caught:
        make_provider().synthesize(speech())

    assert caught.value.retry_after_s == expected_s
    assert "exceeded call rate limit" in caught.value.message


@pytest.mark.parametrize(("exception", "error_class"), TRANSPORT_FAILURES)
@pytest.mark.parametrize("kind", ["speech", "transcription"])
def test_provider_error_for_transport_failure(
    make_provider: Callable[..., AzureOpenAIProvider],
    audio_path: Path,
    kind: str,
    exception: httpx.TransportError,
    error_class: type[ProviderError],
) -> None:
    with pytest.raises(error_class, match=r"^azure: ") as caught:
        call_provider(make_provider(handler=raising(exception)), kind, audio_path)

    assert_transport_error(caught.value, exception, *SECRETS)


def test_provider_error_malformed_transcription_is_relabelled(
    make_provider: Callable[..., AzureOpenAIProvider], audio_path: Path
) -> None:
    provider = make_provider(handler=answering(b"{not json", "text/json"))
    with pytest.raises(ProviderUnavailable, match=r"^azure: transcription answer is not"):
        provider.transcribe(transcription(audio_path))


def test_provider_error_connection_refused_over_real_sockets() -> None:
    provider = standalone_provider(
        AzureOpenAIProvider,
        model=DEPLOYMENT,
        api_base=f"http://127.0.0.1:{unused_port()}",
        api_key=API_KEY,
        timeout=5,
    )
    assert_connection_refused(provider, speech(), *SECRETS)


# Real HTTP: the provider's own httpx client against a tiny server on a socket.


def answer_real_request(path: str, headers: httpx.Headers, body: bytes) -> Answer:
    """A minimal Azure OpenAI audio server."""
    if path.startswith(f"/openai/deployments/{DEPLOYMENT}/audio/speech?"):
        content, content_type = OPENAI_AUDIO[json.loads(body)["response_format"]]
        status = 200
    elif path.startswith("/openai/deployments/whisper/audio/transcriptions?"):
        content, content_type = openai_transcription_answer("verbose_json")
        status = 200
    else:
        error = {"error": {"code": "404", "message": "Resource not found"}}
        content, content_type, status = json.dumps(error).encode(), "application/json", 404
    answer_headers = {
        "Content-Type": content_type,
        "apim-request-id": "apim-real",
        "x-request-id": "req-real",
    }
    return status, answer_headers, content


@pytest.fixture
def real_server() -> Iterator[RecordingServer]:
    with serve_recording(answer_real_request) as server:
        yield server


def real_provider(server: RecordingServer, model: str = DEPLOYMENT) -> AzureOpenAIProvider:
    port = server.server_address[1]
    return standalone_provider(
        AzureOpenAIProvider,
        model=model,
        api_base=f"http://127.0.0.1:{port}/",
        api_key=API_KEY,
        timeout=10,
    )


def test_synthesize_speech_over_real_http(real_server: RecordingServer) -> None:
    with real_provider(real_server) as provider:
        result = provider.synthesize(speech(response_format="pcm"))

    (path, headers, body) = real_server.records[0]
    assert path == f"/openai/deployments/{DEPLOYMENT}/audio/speech?{QUERY}"
    assert headers["api-key"] == API_KEY
    assert "Authorization" not in headers
    assert json.loads(body)["input"] == "Hello, world."
    assert result.audio == OPENAI_AUDIO["pcm"][0]
    assert result.request_id == "req-real"


def test_transcribe_audio_over_real_http(real_server: RecordingServer, audio_path: Path) -> None:
    with real_provider(real_server, model="whisper") as provider:
        result = provider.transcribe(transcription(audio_path, response_format="vtt"))

    (path, headers, body) = real_server.records[0]
    assert path == f"/openai/deployments/whisper/audio/transcriptions?{QUERY}"
    assert headers["api-key"] == API_KEY
    upload = parse_multipart(httpx.Headers(headers), body)
    assert (upload.file_field, upload.filename, upload.data) == ("file", "clip.wav", AUDIO_BYTES)
    assert result.segments == OPENAI_SEGMENTS


def test_provider_error_over_real_http(real_server: RecordingServer) -> None:
    with real_provider(real_server, model="missing") as provider:
        with pytest.raises(UnsupportedFeature, match="azure HTTP 404: Resource not found"):
            provider.synthesize(speech(model="missing"))
