"""VertexAIProvider against a fake Google Cloud: an OAuth token endpoint that verifies the
service account's signed JWT, Cloud Text-to-Speech, and Vertex AI generateContent."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.parse
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.worker.provider_fakes import (
    PCM,
    assert_no_secret,
    check_speech_body,
    gemini_answer,
    google_error,
    provider_factory,
)
from worker.providers.base import Deployment, SynthesisRequest
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)
from worker.providers.vertex_ai import (
    VertexAIProvider,
    build_cloud_tts_body,
    cloud_tts_voice,
    is_gemini_model,
    split_wav,
)

TOKEN_URI = "http://oauth.fake.local/token"
TTS_BASE = "http://tts.fake.local"
API_KEY = "AIzaSyFAKE-vertex-test-key-9876543210"
PROJECT = "speechq-test-project"
CLIENT_EMAIL = f"speechq-tts@{PROJECT}.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# google-auth always sets the audience to Google's token endpoint, whatever token_uri says.
JWT_AUDIENCE = "https://oauth2.googleapis.com/token"
GEMINI_MODEL = "gemini-2.5-flash-tts"
TEXT = "Hello, world."

PRIVATE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_KEY_PEM = PRIVATE_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PRIVATE_KEY_BODY = PRIVATE_KEY_PEM.splitlines()[1]  # a line of the key itself, for leak checks
# No key, token or private key may show in any message along the chain.
SECRETS = (API_KEY, "ya29.fake-access-token", PRIVATE_KEY_BODY, "PRIVATE KEY")
SERVICE_ACCOUNT_INFO: dict[str, Any] = {
    "type": "service_account",
    "project_id": PROJECT,
    "private_key_id": "0123456789abcdef0123456789abcdef01234567",
    "private_key": PRIVATE_KEY_PEM,
    "client_email": CLIENT_EMAIL,
    "client_id": "112233445566778899001",
    "auth_uri": "https://accounts.google.com/o/oauth2/auth",
    "token_uri": TOKEN_URI,
    "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
    "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/speechq-tts",
    "universe_domain": "googleapis.com",
}
FAKE_MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xf3\x44\xc4" * 16
FAKE_OGG = b"OggS\x00\x02" + b"OpusHead" + bytes(16)


def make_wav(pcm: bytes = PCM, *, rate: int = 24000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def b64url_json(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@dataclass
class Call:
    url: str
    headers: httpx.Headers
    json: dict[str, Any]


class FakeGoogleCloud:
    """Token endpoint, Cloud TTS and Vertex AI in one httpx handler. Every request is checked
    the way Google would; wire-format mistakes fail the test with an AssertionError here.

    `token_failure` / `failure` answer the token endpoint / the API with that response.
    """

    def __init__(self, *, expires_in: int = 3599) -> None:
        self.expires_in = expires_in
        self.issued: list[str] = []  # access tokens, in order
        self.token_requests: list[dict[str, Any]] = []  # decoded JWT claims
        self.calls: list[Call] = []
        self.api_key: str | None = None  # set: the API expects this key, not a token
        self.token_failure: httpx.Response | None = None
        self.failure: httpx.Response | None = None
        self.audio: dict[str, bytes] = {
            "MP3": FAKE_MP3,
            "OGG_OPUS": FAKE_OGG,
            "LINEAR16": make_wav(),
        }
        self.gemini_answer: dict[str, Any] = gemini_answer()
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.url.query == b"", "keys and tokens must not travel in the URL"
        if str(request.url) == TOKEN_URI:
            return self.answer_token(request)
        self.check_auth(request)
        assert request.headers["content-type"] == "application/json"
        body = json.loads(request.content)
        with self._lock:
            self.calls.append(Call(str(request.url), request.headers, body))
        if self.failure is not None:
            return self.failure
        if request.url.path == "/v1/text:synthesize":
            return self.answer_cloud_tts(body)
        if request.url.path.endswith(":generateContent"):
            check_speech_body(body)
            return httpx.Response(200, json=self.gemini_answer)
        raise AssertionError(f"unexpected URL {request.url}")

    def answer_token(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        form = urllib.parse.parse_qs(request.content.decode(), strict_parsing=True)
        assert form.keys() == {"grant_type", "assertion"}
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        (assertion,) = form["assertion"]
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
        # Raises InvalidSignature unless the service account's own key signed it.
        PRIVATE_KEY.public_key().verify(
            signature,
            f"{header_b64}.{claims_b64}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        header = b64url_json(header_b64)
        assert header == {
            "typ": "JWT",
            "alg": "RS256",
            "kid": SERVICE_ACCOUNT_INFO["private_key_id"],
        }
        claims = b64url_json(claims_b64)
        assert claims["iss"] == CLIENT_EMAIL
        assert claims["aud"] == JWT_AUDIENCE
        assert claims["scope"] == SCOPE
        assert claims["exp"] - claims["iat"] == 3600
        assert abs(claims["iat"] - time.time()) < 60
        with self._lock:
            self.token_requests.append(claims)
            if self.token_failure is not None:
                return self.token_failure
            token = f"ya29.fake-access-token-{len(self.issued) + 1}"
            self.issued.append(token)
        return httpx.Response(
            200,
            json={"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"},
        )

    def check_auth(self, request: httpx.Request) -> None:
        if self.api_key is not None:
            assert request.headers["x-goog-api-key"] == self.api_key
            assert "authorization" not in request.headers
            return
        assert "x-goog-api-key" not in request.headers
        assert self.issued, "an API call before any token was issued"
        assert request.headers["authorization"] == f"Bearer {self.issued[-1]}"

    def answer_cloud_tts(self, body: dict[str, Any]) -> httpx.Response:
        assert body.keys() == {"input", "voice", "audioConfig"}
        assert body["input"].keys() == {"text"}
        assert len(body["input"]["text"].encode()) <= 5000
        assert body["voice"].keys() == {"languageCode", "name"}
        assert body["voice"]["name"].startswith(body["voice"]["languageCode"] + "-")
        config = body["audioConfig"]
        assert config.keys() <= {"audioEncoding", "speakingRate", "sampleRateHertz"}
        assert 0.25 <= config["speakingRate"] <= 2.0
        encoding = config["audioEncoding"]
        assert ("sampleRateHertz" in config) == (encoding == "LINEAR16")
        audio = base64.b64encode(self.audio[encoding]).decode()
        return httpx.Response(200, json={"audioContent": audio})


@pytest.fixture
def fake() -> FakeGoogleCloud:
    return FakeGoogleCloud()


@pytest.fixture
def make_provider(fake: FakeGoogleCloud) -> Iterator[Callable[..., VertexAIProvider]]:
    """A provider wired to `fake`. Cloud TTS models talk to TTS_BASE unless told otherwise;
    `vertex_credentials=None` leaves the service account out."""
    with provider_factory(VertexAIProvider, fake, vertex_credentials=SERVICE_ACCOUNT_INFO) as build:

        def create(*, model: str = "chirp", **params: Any) -> VertexAIProvider:
            if not is_gemini_model(model):
                params.setdefault("api_base", TTS_BASE)
            return build(model=model, **params)

        yield create


def speech(**overrides: Any) -> SynthesisRequest:
    values: dict[str, Any] = {"model": "chirp", "text": TEXT, "voice": "alloy"}
    return SynthesisRequest(**(values | overrides))


def gemini_speech(**overrides: Any) -> SynthesisRequest:
    return speech(model=GEMINI_MODEL, **overrides)


# Cloud Text-to-Speech.


@pytest.mark.parametrize(
    ("response_format", "encoding", "audio", "audio_format", "sample_rate"),
    [
        ("mp3", "MP3", FAKE_MP3, "mp3", None),
        ("opus", "OGG_OPUS", FAKE_OGG, "opus", None),
        # LINEAR16 comes with a WAV header; we strip it and hand over plain pcm.
        ("wav", "LINEAR16", PCM, "pcm", 24000),
        ("pcm", "LINEAR16", PCM, "pcm", 24000),
        ("aac", "LINEAR16", PCM, "pcm", 24000),
        ("flac", "LINEAR16", PCM, "pcm", 24000),
    ],
)
def test_synthesize_cloud_tts_each_format(
    fake: FakeGoogleCloud,
    make_provider: Callable[..., VertexAIProvider],
    response_format: str,
    encoding: str,
    audio: bytes,
    audio_format: str,
    sample_rate: int | None,
) -> None:
    result = make_provider().synthesize(speech(response_format=response_format, speed=1.25))

    (call,) = fake.calls
    assert call.url == f"{TTS_BASE}/v1/text:synthesize"
    audio_config: dict[str, Any] = {"audioEncoding": encoding, "speakingRate": 1.25}
    if encoding == "LINEAR16":
        audio_config["sampleRateHertz"] = 24000
    assert call.json == {
        "input": {"text": TEXT},
        "voice": {"languageCode": "en-US", "name": "en-US-Chirp3-HD-Kore"},
        "audioConfig": audio_config,
    }
    assert result.audio == audio
    assert (result.audio_format, result.sample_rate) == (audio_format, sample_rate)
    assert result.characters == len(TEXT)
    assert len(fake.token_requests) == 1


def test_synthesize_cloud_tts_default_endpoint(fake: FakeGoogleCloud) -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) != TOKEN_URI:
            urls.append(str(request.url))
        return fake(request)

    deployment = Deployment(
        model_name="speech",
        provider="vertex_ai",
        model="cloud-tts",
        params={"vertex_credentials": SERVICE_ACCOUNT_INFO},
    )
    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        VertexAIProvider(deployment, http=http).synthesize(speech(model="cloud-tts"))

    assert urls == ["https://texttospeech.googleapis.com/v1/text:synthesize"]


def test_service_account_token_is_cached_across_calls(
    fake: FakeGoogleCloud, make_provider: Callable[..., VertexAIProvider]
) -> None:
    provider = make_provider()
    provider.synthesize(speech())
    provider.synthesize(speech(voice="echo"))

    assert fake.issued == ["ya29.fake-access-token-1"]
    assert [call.headers["authorization"] for call in fake.calls] == [
        "Bearer ya29.fake-access-token-1"
    ] * 2


def test_service_account_token_refreshed_when_close_to_expiry(
    make_provider: Callable[..., VertexAIProvider],
) -> None:
    # google-auth treats a token as stale 3m45s before it expires: 60 s is stale at once.
    fake = FakeGoogleCloud(expires_in=60)
    provider = make_provider(handler=fake)
    provider.synthesize(speech())
    provider.synthesize(speech())

    assert fake.issued == ["ya29.fake-access-token-1", "ya29.fake-access-token-2"]
    assert fake.calls[1].headers["authorization"] == "Bearer ya29.fake-access-token-2"


def test_service_account_token_one_refresh_for_concurrent_calls(
    fake: FakeGoogleCloud, make_provider: Callable[..., VertexAIProvider]
) -> None:
    provider = make_provider()
    threads = [threading.Thread(target=provider.synthesize, args=(speech(),)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(fake.calls) == 8
    assert fake.issued == ["ya29.fake-access-token-1"]


@pytest.mark.parametrize("form", ["dict", "json", "path", "pathlib"])
def test_vertex_credentials_forms(
    fake: FakeGoogleCloud,
    make_provider: Callable[..., VertexAIProvider],
    tmp_path: Path,
    form: str,
) -> None:
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps(SERVICE_ACCOUNT_INFO))
    credentials: Any = {
        "dict": SERVICE_ACCOUNT_INFO,
        "json": json.dumps(SERVICE_ACCOUNT_INFO, indent=2),
        "path": str(key_file),
        "pathlib": key_file,
    }[form]
    make_provider(vertex_credentials=credentials).synthesize(speech())

    assert len(fake.token_requests) == 1
    assert fake.calls[0].headers["authorization"] == "Bearer ya29.fake-access-token-1"


@pytest.mark.parametrize(
    ("credentials", "match"),
    [
        ("{not json", "not valid JSON"),
        ('["a", "list"]', "not a JSON object"),
        ("/nonexistent/service-account.json", "cannot read"),
        (12345, "must be a path, JSON or a dict"),
        ({k: v for k, v in SERVICE_ACCOUNT_INFO.items() if k != "client_email"}, "not a usable"),
        (SERVICE_ACCOUNT_INFO | {"private_key": PRIVATE_KEY_PEM[:200]}, "not a usable"),
    ],
)
def test_vertex_credentials_unusable_is_authentication_failed(
    fake: FakeGoogleCloud,
    make_provider: Callable[..., VertexAIProvider],
    credentials: Any,
    match: str,
) -> None:
    with pytest.raises(AuthenticationFailed, match=match) as caught:
        make_provider(vertex_credentials=credentials).synthesize(speech())

    assert fake.token_requests == [] and fake.calls == []
    assert_no_secret(caught.value, *SECRETS)


def test_synthesize_cloud_tts_with_api_key(make_provider: Callable[..., VertexAIProvider]) -> None:
    fake = FakeGoogleCloud()
    fake.api_key = API_KEY
    result = make_provider(vertex_credentials=None, api_key=API_KEY, handler=fake).synthesize(
        speech()
    )

    assert result.audio == FAKE_MP3
    assert fake.token_requests == []
    assert fake.calls[0].headers["x-goog-api-key"] == API_KEY


def test_service_account_wins_over_api_key(
    fake: FakeGoogleCloud, make_provider: Callable[..., VertexAIProvider]
) -> None:
    make_provider(api_key=API_KEY).synthesize(speech())  # fake asserts Bearer, no key

    assert len(fake.token_requests) == 1


def test_synthesize_without_credentials_is_authentication_failed(
    fake: FakeGoogleCloud, make_provider: Callable[..., VertexAIProvider]
) -> None:
    with pytest.raises(AuthenticationFailed, match="vertex_credentials"):
        make_provider(vertex_credentials=None).synthesize(speech())

    assert fake.calls == []


@pytest.mark.parametrize(
    ("voice", "params", "expected"),
    [
        (None, {}, {"languageCode": "en-US", "name": "en-US-Chirp3-HD-Kore"}),
        ("onyx", {}, {"languageCode": "en-US", "name": "en-US-Chirp3-HD-Orus"}),
        ("shimmer", {}, {"languageCode": "en-US", "name": "en-US-Chirp3-HD-Achernar"}),
        (
            "Puck",
            {"language_code": "de-DE"},
            {"languageCode": "de-DE", "name": "de-DE-Chirp3-HD-Puck"},
        ),
        ("en-GB-Neural2-A", {}, {"languageCode": "en-GB", "name": "en-GB-Neural2-A"}),
        ("cmn-CN-Chirp3-HD-Kore", {}, {"languageCode": "cmn-CN", "name": "cmn-CN-Chirp3-HD-Kore"}),
        (
            "alloy",
            {"voice_map": {"alloy": "en-US-Wavenet-D"}},
            {"languageCode": "en-US", "name": "en-US-Wavenet-D"},
        ),
    ],
)
def test_synthesize_cloud_tts_voice(
    fake: FakeGoogleCloud,
    make_provider: Callable[..., VertexAIProvider],
    voice: str | None,
    params: dict[str, Any],
    expected: dict[str, str],
) -> None:
    make_provider(**params).synthesize(speech(voice=voice))

    assert fake.calls[0].json["voice"] == expected


@pytest.mark.parametrize(("speed", "expected"), [(4.0, 2.0), (2.0, 2.0), (0.1, 0.25), (0.8, 0.8)])
def test_synthesize_cloud_tts_speed_clamped_to_the_api_range(
    fake: FakeGoogleCloud,
    make_provider: Callable[..., VertexAIProvider],
    speed: float,
    expected: float,
) -> None:
    make_provider().synthesize(speech(speed=speed))

    assert fake.calls[0].json["audioConfig"]["speakingRate"] == expected


def test_synthesize_cloud_tts_byte_limit(
    fake: FakeGoogleCloud, make_provider: Callable[..., VertexAIProvider]
) -> None:
    provider = make_provider()
    provider.synthesize(speech(text="a" * 5000))  # 5,000 bytes: fits
    with pytest.raises(
        InvalidInput, match="at most 5000 bytes of UTF-8 text per request, got 5100"
    ):
        provider.synthesize(speech(text="語" * 1700))  # 1,700 characters, 5,100 bytes

    assert len(fake.calls) == 1


def test_max_characters_per_backend(make_provider: Callable[..., VertexAIProvider]) -> None:
    assert make_provider().max_characters() == 1250  # 5,000 bytes / 4 bytes a character
    assert make_provider(model=GEMINI_MODEL).max_characters() == 2000
    assert make_provider(model_info={"max_input_characters": 4800}).max_characters() == 4800


def test_synthesize_cloud_tts_pinned_audio_encoding(
    fake: FakeGoogleCloud, make_provider: Callable[..., VertexAIProvider]
) -> None:
    result = make_provider(audio_encoding="linear16").synthesize(speech(response_format="mp3"))

    assert fake.calls[0].json["audioConfig"]["audioEncoding"] == "LINEAR16"
    assert (result.audio, result.audio_format, result.sample_rate) == (PCM, "pcm", 24000)
    with pytest.raises(UnsupportedFeature, match="'FLAC' is not one of"):
        make_provider(audio_encoding="FLAC").synthesize(speech())


def test_synthesize_cloud_tts_unusual_wav_is_passed_on_as_wav(
    fake: FakeGoogleCloud, make_provider: Callable[..., VertexAIProvider]
) -> None:
    stereo = make_wav(PCM, channels=2)
    fake.audio["LINEAR16"] = stereo
    result = make_provider().synthesize(speech(response_format="wav"))

    # Not mono s16: the worker decodes the container itself.
    assert (result.audio, result.audio_format, result.sample_rate) == (stereo, "wav", None)


def test_split_wav() -> None:
    wav = make_wav(PCM, rate=22050)
    # An extra chunk before `data`, and an odd-sized one (padded to even), as encoders write.
    fmt_end = wav.index(b"data")
    extra = b"LIST" + (5).to_bytes(4, "little") + b"INFOx\x00"
    with_list = wav[:fmt_end] + extra + wav[fmt_end:]

    assert split_wav(wav) == (PCM, 22050)
    assert split_wav(with_list) == (PCM, 22050)
    assert split_wav(FAKE_MP3) is None
    assert split_wav(wav[:30]) is None  # cut inside the header
    assert split_wav(make_wav(PCM, channels=2)) is None


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>proxy says hi</html>"),
        httpx.Response(200, json={"audioContent": ""}),
        httpx.Response(200, json={"timepoints": []}),
        httpx.Response(200, json={"audioContent": "%%% not base64 %%%"}),
        httpx.Response(200, json=["audioContent"]),
    ],
)
def test_synthesize_cloud_tts_malformed_answer_is_unavailable(
    make_provider: Callable[..., VertexAIProvider], answer: httpx.Response
) -> None:
    fake = FakeGoogleCloud()
    fake.failure = answer  # answered for the API call; the token endpoint still works
    with pytest.raises(ProviderUnavailable):
        make_provider(handler=fake).synthesize(speech())


def test_cloud_tts_helpers() -> None:
    assert is_gemini_model("gemini-2.5-flash-tts")
    assert is_gemini_model("publishers/google/models/gemini-2.5-pro-tts")
    assert not is_gemini_model("chirp")
    assert not is_gemini_model("cloud-tts")
    assert cloud_tts_voice("NotAChirpVoice") == {"languageCode": "en-US", "name": "NotAChirpVoice"}
    body = build_cloud_tts_body("Hi.", voice="Kore", audio_encoding="OGG_OPUS")
    assert body["audioConfig"] == {"audioEncoding": "OGG_OPUS", "speakingRate": 1.0}


# Gemini TTS on Vertex AI.


@pytest.mark.parametrize(
    ("params", "expected_url"),
    [
        (
            {},
            f"https://us-central1-aiplatform.googleapis.com/v1/projects/{PROJECT}/locations/"
            f"us-central1/publishers/google/models/{GEMINI_MODEL}:generateContent",
        ),
        (
            {"vertex_project": "other-project", "vertex_location": "europe-west4"},
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/other-project/locations/"
            f"europe-west4/publishers/google/models/{GEMINI_MODEL}:generateContent",
        ),
        (
            {"vertex_location": "global"},
            f"https://aiplatform.googleapis.com/v1/projects/{PROJECT}/locations/global/"
            f"publishers/google/models/{GEMINI_MODEL}:generateContent",
        ),
        (
            {"api_base": "http://vertex-proxy.local/"},
            f"http://vertex-proxy.local/v1/projects/{PROJECT}/locations/us-central1/"
            f"publishers/google/models/{GEMINI_MODEL}:generateContent",
        ),
    ],
)
def test_synthesize_gemini_on_vertex(
    fake: FakeGoogleCloud,
    make_provider: Callable[..., VertexAIProvider],
    params: dict[str, Any],
    expected_url: str,
) -> None:
    provider = make_provider(model=GEMINI_MODEL, **params)
    result = provider.synthesize(gemini_speech(voice="coral", instructions="Say warmly"))

    (call,) = fake.calls
    assert call.url == expected_url
    assert call.headers["authorization"] == "Bearer ya29.fake-access-token-1"
    assert call.json == {
        "contents": [{"role": "user", "parts": [{"text": f"Say warmly: {TEXT}"}]}],
        "generationConfig": {
            "responseModalities": ["AUDIO"],
            "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Sulafat"}}},
        },
    }
    assert (result.audio, result.audio_format, result.sample_rate) == (PCM, "pcm", 24000)
    assert result.characters == len(TEXT)
    assert result.request_id == "TPBPaOzJEdaY1MkPy5fzkQ0"


def test_synthesize_gemini_on_vertex_express_mode_with_api_key(
    make_provider: Callable[..., VertexAIProvider],
) -> None:
    fake = FakeGoogleCloud()
    fake.api_key = API_KEY
    provider = make_provider(
        model=GEMINI_MODEL, vertex_credentials=None, api_key=API_KEY, handler=fake
    )
    provider.synthesize(gemini_speech(voice=None))

    assert [call.url for call in fake.calls] == [
        f"https://aiplatform.googleapis.com/v1/publishers/google/models/{GEMINI_MODEL}:generateContent"
    ]
    assert fake.token_requests == []


def test_synthesize_gemini_on_vertex_without_project_is_authentication_failed(
    fake: FakeGoogleCloud, make_provider: Callable[..., VertexAIProvider]
) -> None:
    info = {k: v for k, v in SERVICE_ACCOUNT_INFO.items() if k != "project_id"}
    with pytest.raises(AuthenticationFailed, match="no vertex_project"):
        make_provider(model=GEMINI_MODEL, vertex_credentials=info).synthesize(gemini_speech())

    assert fake.calls == []


@pytest.mark.parametrize(
    ("answer", "error_class"),
    [
        ({"promptFeedback": {"blockReason": "SAFETY"}}, InvalidInput),
        ({"candidates": [{"content": {}, "finishReason": "OTHER"}]}, ProviderUnavailable),
    ],
)
def test_synthesize_gemini_on_vertex_answer_without_audio(
    fake: FakeGoogleCloud,
    make_provider: Callable[..., VertexAIProvider],
    answer: dict[str, Any],
    error_class: type[ProviderError],
) -> None:
    fake.gemini_answer = answer
    with pytest.raises(error_class, match="^vertex_ai: "):
        make_provider(model=GEMINI_MODEL).synthesize(gemini_speech())


# Errors: the API's statuses, the token endpoint's, transport failures; no secret leaks.


STATUS_ERRORS: list[tuple[int, str, type[ProviderError]]] = [
    (400, "INVALID_ARGUMENT", InvalidInput),
    (400, "FAILED_PRECONDITION", UnsupportedFeature),
    (401, "UNAUTHENTICATED", AuthenticationFailed),
    (403, "PERMISSION_DENIED", AuthenticationFailed),
    (404, "NOT_FOUND", UnsupportedFeature),
    (429, "RESOURCE_EXHAUSTED", RateLimited),
    (500, "INTERNAL", ProviderUnavailable),
    (503, "UNAVAILABLE", ProviderUnavailable),
    (504, "DEADLINE_EXCEEDED", ProviderTimeout),
]


@pytest.mark.parametrize("model", ["chirp", GEMINI_MODEL])
@pytest.mark.parametrize(("status", "grpc_status", "error_class"), STATUS_ERRORS)
def test_provider_error_for_status(
    fake: FakeGoogleCloud,
    make_provider: Callable[..., VertexAIProvider],
    model: str,
    status: int,
    grpc_status: str,
    error_class: type[ProviderError],
) -> None:
    # An API that echoes the credentials it got must not get them into our messages.
    fake.failure = google_error(
        status, grpc_status, "Request had invalid credentials: ya29.fake-access-token-1."
    )

    with pytest.raises(error_class) as caught:
        make_provider(model=model).synthesize(speech(model=model))

    assert type(caught.value) is error_class
    assert caught.value.status_code == status
    assert f"vertex_ai HTTP {status}: {grpc_status}: Request had invalid credentials: ***." in str(
        caught.value
    )
    assert_no_secret(caught.value, *SECRETS)


def test_provider_error_api_key_redacted(make_provider: Callable[..., VertexAIProvider]) -> None:
    fake = FakeGoogleCloud()
    fake.api_key = API_KEY
    fake.failure = google_error(400, "INVALID_ARGUMENT", f"API key not valid: {API_KEY}")

    with pytest.raises(AuthenticationFailed) as caught:
        make_provider(vertex_credentials=None, api_key=API_KEY, handler=fake).synthesize(speech())

    assert_no_secret(caught.value, *SECRETS)


@pytest.mark.parametrize(
    ("response", "error_class"),
    [
        (
            httpx.Response(
                400, json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            ),
            AuthenticationFailed,
        ),
        (
            httpx.Response(
                401,
                json={
                    "error": "invalid_client",
                    "error_description": "The OAuth client was not found.",
                },
            ),
            AuthenticationFailed,
        ),
        (httpx.Response(403, json={"error": "access_denied"}), AuthenticationFailed),
        (httpx.Response(404, text="Not Found"), AuthenticationFailed),
        (httpx.Response(429, json={"error": "rate_limit_exceeded"}), RateLimited),
        (httpx.Response(500, json={"error": "internal_failure"}), ProviderUnavailable),
        (httpx.Response(503, text="Service Unavailable"), ProviderUnavailable),
        # 200 without a token: google-auth itself refuses it (a RefreshError).
        (
            httpx.Response(200, json={"expires_in": 3599, "token_type": "Bearer"}),
            AuthenticationFailed,
        ),
    ],
)
def test_provider_error_from_token_endpoint(
    fake: FakeGoogleCloud,
    make_provider: Callable[..., VertexAIProvider],
    response: httpx.Response,
    error_class: type[ProviderError],
) -> None:
    fake.token_failure = response
    started = time.monotonic()

    with pytest.raises(error_class) as caught:
        make_provider().synthesize(speech())

    assert type(caught.value) is error_class
    # One try, no google-auth backoff: retrying is the router's job.
    assert len(fake.token_requests) == 1
    assert time.monotonic() - started < 1.0
    assert fake.calls == []
    assert_no_secret(caught.value, *SECRETS)


@pytest.mark.parametrize(
    ("exception", "error_class"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), ProviderUnavailable),
        (httpx.ReadTimeout("timed out"), ProviderTimeout),
    ],
)
@pytest.mark.parametrize("failing", ["token", "api"])
def test_provider_error_for_transport_failure(
    fake: FakeGoogleCloud,
    make_provider: Callable[..., VertexAIProvider],
    exception: httpx.TransportError,
    error_class: type[ProviderError],
    failing: str,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if (str(request.url) == TOKEN_URI) == (failing == "token"):
            raise exception
        return fake(request)

    with pytest.raises(error_class) as caught:
        make_provider(handler=handler).synthesize(speech())

    assert caught.value.__cause__ is not None
    assert caught.value.status_code is None
    assert_no_secret(caught.value, *SECRETS)
