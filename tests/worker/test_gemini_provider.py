"""GeminiProvider against a fake Gemini API that checks the wire format of every call."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.worker.provider_fakes import (
    HTTP_STATUS_ERRORS,
    OPENAI_VOICES,
    PCM,
    TRANSPORT_FAILURES,
    answering,
    assert_connection_refused,
    assert_no_secret,
    assert_status_classes,
    assert_status_error,
    assert_transport_error,
    check_speech_body,
    gemini_answer,
    google_error,
    provider_factory,
    raising,
    standalone_provider,
    unused_port,
)
from worker.providers.base import SynthesisRequest
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)
from worker.providers.gemini import (
    GEMINI_VOICES,
    VOICE_MAP,
    GeminiProvider,
    build_speech_body,
    map_google_error,
    style_prompt,
)

API_KEY = "AIzaSyFAKE-gemini-test-key-0123456789"
FAKE_BASE = "http://fake.local"
MODEL = "gemini-2.5-flash-preview-tts"
TEXT = "Hello, world."


@dataclass
class Call:
    url: str
    headers: httpx.Headers
    json: dict[str, Any]
    timeout: dict[str, float | None] = field(default_factory=dict)


class FakeGemini:
    """An httpx handler that checks each request as the Gemini API would and answers like it.

    Set `answer` to change the 200 body, or `failure` to answer every call with that response.
    """

    def __init__(self, *, base: str = FAKE_BASE, api_key: str | None = API_KEY) -> None:
        self.base = base
        self.api_key = api_key
        self.calls: list[Call] = []
        self.answer: dict[str, Any] = gemini_answer()
        self.failure: httpx.Response | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.url.query == b"", "the key must not travel in the URL"
        assert "authorization" not in request.headers
        if self.api_key is None:
            assert "x-goog-api-key" not in request.headers
        else:
            assert request.headers["x-goog-api-key"] == self.api_key
        assert request.headers["content-type"] == "application/json"
        body = json.loads(request.content)
        self.calls.append(
            Call(str(request.url), request.headers, body, request.extensions.get("timeout", {}))
        )
        if self.failure is not None:
            return self.failure
        model = str(request.url).removeprefix(f"{self.base}/v1beta/models/")
        assert model.endswith(":generateContent"), request.url
        assert model.removesuffix(":generateContent").endswith("-tts"), model
        check_speech_body(body)
        return httpx.Response(200, json=self.answer)


@pytest.fixture
def fake() -> FakeGemini:
    return FakeGemini()


@pytest.fixture
def make_provider(fake: FakeGemini) -> Iterator[Callable[..., GeminiProvider]]:
    """A provider wired to `fake`; `api_base=None` means Google's default."""
    with provider_factory(
        GeminiProvider, fake, model=MODEL, api_base=FAKE_BASE, api_key=API_KEY
    ) as create:
        yield create


def speech(**overrides: Any) -> SynthesisRequest:
    values: dict[str, Any] = {"model": MODEL, "text": TEXT, "voice": "alloy"}
    return SynthesisRequest(**(values | overrides))


def spoken_text(call: Call) -> str:
    return str(call.json["contents"][0]["parts"][0]["text"])


def voice_name(call: Call) -> str:
    speech_config = call.json["generationConfig"]["speechConfig"]
    return str(speech_config["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"])


# Text to speech.


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_synthesize_speech_returns_pcm_for_every_format(
    fake: FakeGemini, make_provider: Callable[..., GeminiProvider], response_format: str
) -> None:
    result = make_provider().synthesize(speech(response_format=response_format, voice="nova"))

    (call,) = fake.calls
    assert call.url == f"{FAKE_BASE}/v1beta/models/{MODEL}:generateContent"
    assert call.json == {
        "contents": [{"role": "user", "parts": [{"text": TEXT}]}],
        "generationConfig": {
            "responseModalities": ["AUDIO"],
            "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Zephyr"}}},
        },
    }
    # Gemini only speaks PCM; the worker encodes whatever the client asked for.
    assert result.audio == PCM
    assert (result.audio_format, result.sample_rate) == ("pcm", 24000)
    assert result.characters == len(TEXT)
    assert result.request_id == "TPBPaOzJEdaY1MkPy5fzkQ0"


def test_voice_map_covers_every_openai_voice_with_a_prebuilt_voice() -> None:
    assert set(VOICE_MAP) == set(OPENAI_VOICES)
    assert set(VOICE_MAP.values()) <= GEMINI_VOICES
    assert len(GEMINI_VOICES) == 30


@pytest.mark.parametrize(
    ("voice", "params", "expected"),
    [
        (None, {}, "Kore"),
        ("onyx", {}, "Orus"),
        ("Puck", {}, "Puck"),  # a Gemini voice passes through
        ("alloy", {"voice_map": {"alloy": "Leda"}}, "Leda"),
        (None, {"voice_map": {"default": "Aoede"}}, "Aoede"),
    ],
)
def test_synthesize_speech_voice(
    fake: FakeGemini,
    make_provider: Callable[..., GeminiProvider],
    voice: str | None,
    params: dict[str, Any],
    expected: str,
) -> None:
    make_provider(**params).synthesize(speech(voice=voice))

    assert voice_name(fake.calls[0]) == expected


def test_synthesize_speech_instructions_and_speed_go_into_the_prompt(
    fake: FakeGemini, make_provider: Callable[..., GeminiProvider]
) -> None:
    provider = make_provider()
    provider.synthesize(speech(instructions="Say cheerfully"))
    provider.synthesize(speech(instructions="Speak like a pirate.", speed=1.5))
    result = provider.synthesize(speech(speed=0.5))

    prompts = [spoken_text(call) for call in fake.calls]
    assert prompts == [
        f"Say cheerfully: {TEXT}",
        f"Speak like a pirate. Say it very quickly: {TEXT}",
        f"Say very slowly: {TEXT}",
    ]
    assert result.characters == len(TEXT)  # billed text, not our prompt


@pytest.mark.parametrize(
    ("speed", "expected"),
    [
        (0.25, "Say very slowly: Hi."),
        (0.8, "Say slowly: Hi."),
        (0.95, "Hi."),
        (1.0, "Hi."),
        (1.1, "Hi."),
        (1.25, "Say quickly: Hi."),
        (4.0, "Say very quickly: Hi."),
    ],
)
def test_style_prompt_speed(speed: float, expected: str) -> None:
    assert style_prompt("Hi.", speed=speed) == expected


def test_style_prompt_instructions_without_trailing_punctuation() -> None:
    assert style_prompt("Hi.", instructions="  In a whisper:  ") == "In a whisper: Hi."
    assert style_prompt("Hi.", instructions="   ") == "Hi."


def test_build_speech_body_language_code() -> None:
    body = build_speech_body("Hallo.", voice="Kore", language_code="de-DE")

    assert body["generationConfig"]["speechConfig"]["languageCode"] == "de-DE"
    check_speech_body(body)


def test_synthesize_speech_language_code_and_timeout_params(
    fake: FakeGemini, make_provider: Callable[..., GeminiProvider]
) -> None:
    make_provider(language_code="fr-FR", timeout=7).synthesize(speech())

    (call,) = fake.calls
    assert call.json["generationConfig"]["speechConfig"]["languageCode"] == "fr-FR"
    assert call.timeout == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}


def test_synthesize_speech_default_timeout_is_the_clients(
    fake: FakeGemini, make_provider: Callable[..., GeminiProvider]
) -> None:
    provider = make_provider()
    provider.synthesize(speech())

    assert fake.calls[0].timeout == provider.http.timeout.as_dict()


@pytest.mark.parametrize(
    ("api_base", "model", "expected_url"),
    [
        (FAKE_BASE, MODEL, f"{FAKE_BASE}/v1beta/models/{MODEL}:generateContent"),
        (f"{FAKE_BASE}/", f"models/{MODEL}", f"{FAKE_BASE}/v1beta/models/{MODEL}:generateContent"),
        (
            None,
            "gemini-2.5-pro-preview-tts",
            "https://generativelanguage.googleapis.com/v1beta/models/"
            "gemini-2.5-pro-preview-tts:generateContent",
        ),
    ],
)
def test_synthesize_speech_url_from_api_base(
    make_provider: Callable[..., GeminiProvider],
    api_base: str | None,
    model: str,
    expected_url: str,
) -> None:
    fake = FakeGemini(base=expected_url.split("/v1beta/")[0])
    make_provider(api_base=api_base, model=model, handler=fake).synthesize(speech(model=model))

    assert [call.url for call in fake.calls] == [expected_url]


def test_synthesize_speech_api_version_param(make_provider: Callable[..., GeminiProvider]) -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return httpx.Response(200, json=gemini_answer())

    make_provider(api_version="v1alpha", handler=handler).synthesize(speech())

    assert urls == [f"{FAKE_BASE}/v1alpha/models/{MODEL}:generateContent"]


def test_synthesize_speech_without_api_key_sends_no_key(
    make_provider: Callable[..., GeminiProvider],
) -> None:
    fake = FakeGemini(api_key=None)  # a proxy that adds the key itself
    result = make_provider(api_key=None, handler=fake).synthesize(speech())

    assert result.audio == PCM


@pytest.mark.parametrize(
    ("mime_type", "audio_format", "sample_rate"),
    [
        ("audio/L16;codec=pcm;rate=24000", "pcm", 24000),
        ("audio/L16; codec=pcm; rate=16000", "pcm", 16000),
        ("audio/L16;codec=pcm", "pcm", 24000),
        ("audio/pcm;rate=22050", "pcm", 22050),
        ("audio/wav", "wav", None),
        ("audio/mpeg", "mp3", None),
    ],
)
def test_synthesize_speech_audio_type_from_mime_type(
    fake: FakeGemini,
    make_provider: Callable[..., GeminiProvider],
    mime_type: str,
    audio_format: str,
    sample_rate: int | None,
) -> None:
    fake.answer = gemini_answer(mime_type=mime_type)
    result = make_provider().synthesize(speech())

    assert (result.audio_format, result.sample_rate) == (audio_format, sample_rate)
    assert result.audio == PCM


def test_synthesize_speech_joins_pcm_parts(
    fake: FakeGemini, make_provider: Callable[..., GeminiProvider]
) -> None:
    fake.answer = gemini_answer(parts=3)

    assert make_provider().synthesize(speech()).audio == PCM


@pytest.mark.parametrize(
    ("answer", "error_class", "match"),
    [
        (
            {
                "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
            },
            InvalidInput,
            "blocked \\(PROHIBITED_CONTENT\\)",
        ),
        (
            {"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": []}]},
            InvalidInput,
            "refused \\(SAFETY\\)",
        ),
        (
            {"candidates": [{"content": {}, "finishReason": "OTHER", "index": 0}]},
            ProviderUnavailable,
            "no audio \\(finishReason OTHER\\)",
        ),
        (
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": "Sure!"}]},
                        "finishReason": "STOP",
                    }
                ]
            },
            ProviderUnavailable,
            "no audio \\(finishReason STOP\\)",
        ),
        ({"candidates": [{"finishReason": "MAX_TOKENS"}]}, UnsupportedFeature, "token limit"),
        (
            gemini_answer()
            | {"candidates": [gemini_answer()["candidates"][0] | {"finishReason": "MAX_TOKENS"}]},
            UnsupportedFeature,
            "cut off",
        ),
        ({"candidates": []}, ProviderUnavailable, "no candidates"),
        ({"usageMetadata": {}}, ProviderUnavailable, "no candidates"),
        (gemini_answer(b""), ProviderUnavailable, "no audio"),
        (gemini_answer(mime_type="video/mp4"), ProviderUnavailable, "unexpected audio type"),
        (gemini_answer(mime_type="audio/L16;rate=fast"), ProviderUnavailable, "bad sample rate"),
        (gemini_answer(mime_type="audio/wav", parts=2), ProviderUnavailable, "2 wav parts"),
    ],
)
def test_synthesize_speech_answer_without_usable_audio(
    fake: FakeGemini,
    make_provider: Callable[..., GeminiProvider],
    answer: dict[str, Any],
    error_class: type[ProviderError],
    match: str,
) -> None:
    fake.answer = answer

    with pytest.raises(error_class, match=match) as caught:
        make_provider().synthesize(speech())

    assert type(caught.value) is error_class


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'["a list"]',
        json.dumps(gemini_answer()).replace(base64.b64encode(PCM).decode(), "%%%").encode(),
    ],
)
def test_synthesize_speech_malformed_answer_is_unavailable(
    make_provider: Callable[..., GeminiProvider], content: bytes
) -> None:
    with pytest.raises(ProviderUnavailable):
        make_provider(handler=answering(content, "application/json")).synthesize(speech())


def test_max_characters_default_and_override(make_provider: Callable[..., GeminiProvider]) -> None:
    assert make_provider().max_characters() == 2000
    assert make_provider(model_info={"max_input_characters": 3500}).max_characters() == 3500


# Errors: one mapper, every status class.


def error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }


STATUS_ERRORS: list[tuple[int, str, type[ProviderError]]] = [
    (400, "INVALID_ARGUMENT", InvalidInput),
    (400, "FAILED_PRECONDITION", UnsupportedFeature),
    (401, "UNAUTHENTICATED", AuthenticationFailed),
    (403, "PERMISSION_DENIED", AuthenticationFailed),
    (404, "NOT_FOUND", UnsupportedFeature),
    (409, "ABORTED", ProviderUnavailable),
    (429, "RESOURCE_EXHAUSTED", RateLimited),
    (499, "CANCELLED", ProviderUnavailable),
    (500, "INTERNAL", ProviderUnavailable),
    (501, "UNIMPLEMENTED", UnsupportedFeature),
    (503, "UNAVAILABLE", ProviderUnavailable),
    (504, "DEADLINE_EXCEEDED", ProviderTimeout),
]


@pytest.mark.parametrize(("status", "grpc_status", "error_class"), STATUS_ERRORS)
def test_provider_error_for_status(
    fake: FakeGemini,
    make_provider: Callable[..., GeminiProvider],
    status: int,
    grpc_status: str,
    error_class: type[ProviderError],
) -> None:
    fake.failure = google_error(status, grpc_status, f"Something about {API_KEY} went wrong.")

    with pytest.raises(error_class) as caught:
        make_provider().synthesize(speech())

    assert_status_error(caught.value, error_class, status, API_KEY)
    assert f"gemini HTTP {status}: {grpc_status}: Something about *** went wrong." in str(
        caught.value
    )


def test_provider_error_invalid_api_key_is_a_400_but_authentication(
    fake: FakeGemini, make_provider: Callable[..., GeminiProvider]
) -> None:
    # What Google sends for a wrong key, DebugInfo echoing the key included.
    fake.failure = google_error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        details=[
            error_info("API_KEY_INVALID"),
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
            {
                "@type": "type.googleapis.com/google.rpc.DebugInfo",
                "detail": f"Invalid API key: {API_KEY}",
            },
        ],
    )

    with pytest.raises(AuthenticationFailed, match="API key not valid") as caught:
        make_provider().synthesize(speech())

    assert caught.value.status_code == 400
    assert_no_secret(caught.value, API_KEY)


@pytest.mark.parametrize(
    ("details", "headers", "expected_s"),
    [
        (
            [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        }
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"},
            ],
            {},
            37.0,
        ),
        ([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}], {}, 1.5),
        (None, {"retry-after": "20"}, 20.0),
        ([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "soon"}], {}, None),
        (None, {}, None),
    ],
)
def test_provider_error_rate_limited_retry_after(
    fake: FakeGemini,
    make_provider: Callable[..., GeminiProvider],
    details: list[dict[str, Any]] | None,
    headers: dict[str, str],
    expected_s: float | None,
) -> None:
    fake.failure = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
        details=details,
        headers=headers,
    )

    with pytest.raises(RateLimited) as caught:
        make_provider().synthesize(speech())

    assert caught.value.retry_after_s == expected_s
    assert "You exceeded your current quota" in caught.value.message


@pytest.mark.parametrize(
    ("response", "error_class", "expected"),
    [
        (
            httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"),
            ProviderUnavailable,
            "502 Bad Gateway",
        ),
        (httpx.Response(503), ProviderUnavailable, "Service Unavailable"),
        (httpx.Response(413, text="Request Entity Too Large"), InvalidInput, "Too Large"),
        (
            httpx.Response(
                429,
                json=[
                    {
                        "error": {
                            "code": 429,
                            "message": "Resource exhausted.",
                            "status": "RESOURCE_EXHAUSTED",
                        }
                    }
                ],
            ),
            RateLimited,
            "RESOURCE_EXHAUSTED: Resource exhausted.",
        ),
        (httpx.Response(418, json={"error": {"code": 418}}), ProviderUnavailable, "I'm a teapot"),
    ],
)
def test_provider_error_message_from_other_bodies(
    make_provider: Callable[..., GeminiProvider],
    response: httpx.Response,
    error_class: type[ProviderError],
    expected: str,
) -> None:
    with pytest.raises(error_class, match=expected):
        make_provider(handler=lambda request: response).synthesize(speech())


@pytest.mark.parametrize(("exception", "error_class"), TRANSPORT_FAILURES)
def test_provider_error_for_transport_failure(
    make_provider: Callable[..., GeminiProvider],
    exception: httpx.TransportError,
    error_class: type[ProviderError],
) -> None:
    with pytest.raises(error_class) as caught:
        make_provider(handler=raising(exception)).synthesize(speech())

    assert_transport_error(caught.value, exception, API_KEY)


def test_provider_error_connection_refused_over_real_sockets() -> None:
    provider = standalone_provider(
        GeminiProvider,
        model=MODEL,
        api_base=f"http://127.0.0.1:{unused_port()}",
        api_key=API_KEY,
        timeout=5,
    )
    assert_connection_refused(provider, speech(), API_KEY)


def test_map_google_error_every_status_class() -> None:
    # No gRPC status: the HTTP code alone decides.
    assert_status_classes(
        map_google_error,
        [*HTTP_STATUS_ERRORS, (504, ProviderTimeout), (302, ProviderUnavailable)],
        url=f"{FAKE_BASE}/v1beta/models/{MODEL}:generateContent",
        json={"error": {"message": "m"}},
    )
