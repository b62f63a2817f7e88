"""Google Cloud speech behind one prefix, `vertex_ai/`, chosen by model name.

    vertex_ai/gemini-...-tts  Gemini TTS on Vertex AI
        POST https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/
             {location}/publishers/google/models/{model}:generateContent   (same JSON as gemini.py)
    vertex_ai/<anything else> (chirp, cloud-tts, ...)  Cloud Text-to-Speech
        POST https://texttospeech.googleapis.com/v1/text:synthesize   JSON in, base64 audio out

Auth: a service account (`vertex_credentials`: a key file path, its JSON text, or a dict, as
LiteLLM takes it) exchanged for an OAuth access token by google-auth over our own httpx
client, cached until shortly before it expires; or an API key (`api_key`, sent as
`x-goog-api-key`): Cloud TTS accepts one, and Vertex AI does in express mode.

Pages followed (checked 2026):
- https://cloud.google.com/text-to-speech/docs/reference/rest/v1/text/synthesize and
  .../v1/SynthesisInput ("The input size is limited to 5000 bytes"), .../v1/AudioConfig
  (speakingRate "in the range [0.25, 2.0]"; older pages said 4.0), .../v1/AudioEncoding
  ("Audio content returned as LINEAR16 also contains a WAV header"; MP3 is 32 kbps)
- https://cloud.google.com/text-to-speech/quotas ("Total bytes per request 5,000")
- https://cloud.google.com/text-to-speech/docs/chirp3-hd (the 30 voices, `en-US-Chirp3-HD-Kore`)
- https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference (generateContent)
- https://cloud.google.com/vertex-ai/generative-ai/docs/learn/locations (global endpoint
  has no location prefix) and .../start/express-mode/vertex-ai-express-mode-api-reference
- https://cloud.google.com/text-to-speech/docs/gemini-tts (Gemini-TTS models on Vertex AI)
- https://google-auth.readthedocs.io/en/latest/reference/google.oauth2.service_account.html and
  google.auth.transport.Request (the transport interface implemented below)
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import struct
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from google.auth import exceptions as google_auth_exceptions
from google.auth import transport as google_auth_transport
from google.oauth2 import service_account

from worker.providers._http import parse_timeout_s, post
from worker.providers.base import (
    Deployment,
    SpeechProvider,
    SynthesisRequest,
    SynthesisResult,
)
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    UnsupportedFeature,
)
from worker.providers.gemini import (
    DEFAULT_VOICE,
    GEMINI_VOICES,
    VOICE_MAP,
    map_google_error,
    synthesize_gemini_speech,
)
from worker.providers.gemini import MAX_INPUT_CHARACTERS as GEMINI_MAX_INPUT_CHARACTERS

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "CLOUD_TTS_MAX_INPUT_BYTES",
    "CLOUD_TTS_MAX_INPUT_CHARACTERS",
    "DEFAULT_CLOUD_TTS_BASE",
    "DEFAULT_LANGUAGE_CODE",
    "DEFAULT_LOCATION",
    "HttpxAuthRequest",
    "ServiceAccountTokens",
    "TokenEndpointError",
    "VertexAIProvider",
    "build_cloud_tts_body",
    "cloud_tts_voice",
    "is_gemini_model",
    "load_service_account_info",
    "map_vertex_ai_error",
    "split_wav",
]

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_CLOUD_TTS_BASE = "https://texttospeech.googleapis.com"
DEFAULT_LOCATION = "us-central1"
DEFAULT_LANGUAGE_CODE = "en-US"
CLOUD_TTS_MAX_INPUT_BYTES = 5000
# The limit is 5,000 UTF-8 bytes and the worker splits by characters. A character takes at
# most 4 bytes, so 1,250 characters always fit, whatever the script. English-only
# deployments can set `model_info.max_input_characters` up to 5,000.
CLOUD_TTS_MAX_INPUT_CHARACTERS = CLOUD_TTS_MAX_INPUT_BYTES // 4
# AudioConfig.speakingRate; the current v1 reference rejects anything outside it.
SPEAKING_RATE_RANGE = (0.25, 2.0)
LINEAR16_SAMPLE_RATE = 24_000  # the natural rate of Chirp 3 HD, Neural2 and WaveNet voices
# Client format -> Cloud TTS encoding. Anything else comes as LINEAR16 (WAV) and the worker
# encodes it; MP3 is Google's 32 kbps, so set `audio_encoding: LINEAR16` for better mp3.
_ENCODINGS = {"mp3": "MP3", "opus": "OGG_OPUS"}
_ENCODING_FORMATS = {"MP3": "mp3", "OGG_OPUS": "opus", "LINEAR16": "wav"}
_LOCALE_VOICE = re.compile(r"^([a-z]{2,3}-[A-Z]{2})-")


class TokenEndpointError(google_auth_exceptions.TransportError):
    """The token endpoint failed; carries the httpx error for our mapper."""

    def __init__(self, http_error: httpx.HTTPError) -> None:
        super().__init__(f"token endpoint: {type(http_error).__name__}")
        self.http_error = http_error


class HttpxAuthRequest(google_auth_transport.Request):
    """google-auth's transport interface on an httpx client, so `requests` is not needed.

    Any answer but a 2xx is raised as `TokenEndpointError` instead of returned: google-auth
    would otherwise retry 429/5xx itself with sleeps, and retrying is the router's job.
    """

    def __init__(self, http: httpx.Client, timeout_s: float | None = None) -> None:
        self.http = http
        self.timeout_s = timeout_s

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _AuthResponse:
        timeout_s = timeout if timeout is not None else self.timeout_s
        try:
            response = self.http.request(
                method,
                url,
                content=body,
                headers=headers,
                timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise TokenEndpointError(exc) from exc
        return _AuthResponse(response)


class _AuthResponse(google_auth_transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class ServiceAccountTokens:
    """OAuth access tokens for one service account, reused until shortly before expiry.

    google-auth signs the JWT-bearer assertion and parses the answer; `Credentials.valid`
    turns false 3 minutes 45 seconds before `expires_in` runs out, and only then we refresh.
    """

    def __init__(self, info: Mapping[str, Any], request: HttpxAuthRequest) -> None:
        self.credentials = service_account.Credentials.from_service_account_info(
            dict(info), scopes=[CLOUD_PLATFORM_SCOPE]
        )
        self.request = request
        self._lock = threading.Lock()  # one refresh at a time for threads sharing a provider

    def token(self) -> str:
        with self._lock:
            if not self.credentials.valid:
                self.credentials.refresh(self.request)
            return str(self.credentials.token)


class VertexAIProvider(SpeechProvider):
    """Cloud Text-to-Speech voices, or Gemini TTS on Vertex AI when the model is `gemini-*`."""

    name = "vertex_ai"
    # Cloud TTS's; Gemini models use gemini.py's (see `max_characters`).
    max_input_characters = CLOUD_TTS_MAX_INPUT_CHARACTERS
    # Gemini's prebuilt voices are also Chirp 3 HD voices, so one map serves both backends.
    default_voice_map = VOICE_MAP
    default_voice = DEFAULT_VOICE

    def __init__(self, deployment: Deployment, http: httpx.Client | None = None) -> None:
        super().__init__(deployment, http)
        params = deployment.params
        self.timeout_s = parse_timeout_s(params)
        self.location = str(params.get("vertex_location") or DEFAULT_LOCATION)
        self._tokens: ServiceAccountTokens | None = None
        self._project: str | None = params.get("vertex_project")
        self._tokens_lock = threading.Lock()

    def max_characters(self) -> int | None:
        configured = self.deployment.model_info.get("max_input_characters")
        if configured:
            return int(configured)
        if is_gemini_model(self.deployment.model):
            return GEMINI_MAX_INPUT_CHARACTERS
        return self.max_input_characters

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        if is_gemini_model(request.model):
            return self._synthesize_gemini(request)
        return self._synthesize_cloud_tts(request)

    def _synthesize_cloud_tts(self, request: SynthesisRequest) -> SynthesisResult:
        size = len(request.text.encode("utf-8"))
        if size > CLOUD_TTS_MAX_INPUT_BYTES:
            raise InvalidInput(
                f"vertex_ai: Cloud TTS takes at most {CLOUD_TTS_MAX_INPUT_BYTES} bytes of "
                f"UTF-8 text per request, got {size}"
            )
        encoding = self._cloud_tts_encoding(request.response_format)
        body = build_cloud_tts_body(
            request.text,
            voice=self.resolve_voice(request.voice) or DEFAULT_VOICE,
            speed=request.speed,
            audio_encoding=encoding,
            language_code=self.deployment.params.get("language_code"),
        )
        base = (self.deployment.api_base or DEFAULT_CLOUD_TTS_BASE).rstrip("/")
        response = self._post(f"{base}/v1/text:synthesize", body, self._auth_headers())
        audio = _decode_audio_content(response)
        audio_format, sample_rate = _ENCODING_FORMATS[encoding], None
        if encoding == "LINEAR16":
            split = split_wav(audio)  # hand the worker plain pcm when the header is the usual
            if split is not None:
                audio, sample_rate = split
                audio_format = "pcm"
        return SynthesisResult(
            audio=audio,
            audio_format=audio_format,
            sample_rate=sample_rate,
            characters=len(request.text),  # Cloud TTS bills per input character; count them all
        )

    def _synthesize_gemini(self, request: SynthesisRequest) -> SynthesisResult:
        headers = self._auth_headers()
        path = f"publishers/google/models/{request.model}:generateContent"
        if "x-goog-api-key" in headers:
            # Express mode: API keys work only on the global host, without project/location.
            base = self.deployment.api_base or "https://aiplatform.googleapis.com"
            url = f"{base.rstrip('/')}/v1/{path}"
        else:
            base = self.deployment.api_base or _aiplatform_base(self.location)
            project = self._project_id()
            url = f"{base.rstrip('/')}/v1/projects/{project}/locations/{self.location}/{path}"
        return synthesize_gemini_speech(self, request, lambda body: self._post(url, body, headers))

    def _cloud_tts_encoding(self, response_format: str) -> str:
        pinned = self.deployment.params.get("audio_encoding")
        if pinned:
            encoding = str(pinned).upper()
            if encoding not in _ENCODING_FORMATS:
                known = ", ".join(sorted(_ENCODING_FORMATS))
                raise UnsupportedFeature(
                    f"vertex_ai: audio_encoding {pinned!r} is not one of {known}"
                )
            return encoding
        return _ENCODINGS.get(response_format, "LINEAR16")

    def _auth_headers(self) -> dict[str, str]:
        # A service account wins over an API key: it reaches every model and location.
        if self.deployment.params.get("vertex_credentials"):
            return {"Authorization": f"Bearer {self._access_token()}"}
        if self.deployment.api_key:
            return {"x-goog-api-key": self.deployment.api_key}
        raise AuthenticationFailed(
            "vertex_ai: set vertex_credentials (a service-account key) or api_key"
        )

    def _access_token(self) -> str:
        tokens = self._service_account()
        try:
            return tokens.token()
        except google_auth_exceptions.GoogleAuthError as exc:
            raise map_vertex_ai_error(exc, secrets=self._secrets()) from exc

    def _service_account(self) -> ServiceAccountTokens:
        # Built on first use, so a bad key fails one job (and moves it on), not the worker.
        with self._tokens_lock:
            if self._tokens is None:
                info = load_service_account_info(self.deployment.params["vertex_credentials"])
                request = HttpxAuthRequest(self.http, self.timeout_s)
                try:
                    self._tokens = ServiceAccountTokens(info, request)
                except (ValueError, TypeError, KeyError) as exc:
                    raise AuthenticationFailed(
                        f"vertex_ai: vertex_credentials is not a usable service-account key "
                        f"({type(exc).__name__})"
                    ) from None  # the cause may quote the key
                self._project = self._project or info.get("project_id")
            return self._tokens

    def _project_id(self) -> str:
        self._service_account()
        if not self._project:
            raise AuthenticationFailed(
                "vertex_ai: no vertex_project, and the service-account key names none"
            )
        return str(self._project)

    def _post(
        self, url: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> httpx.Response:
        return post(
            self.http,
            url,
            json=body,
            headers=headers,
            timeout_s=self.timeout_s,
            map_error=lambda exc: map_vertex_ai_error(exc, secrets=self._secrets()),
        )

    def _secrets(self) -> list[str | None]:
        token = self._tokens.credentials.token if self._tokens is not None else None
        return [self.deployment.api_key, token]


def is_gemini_model(model: str) -> bool:
    """`vertex_ai/gemini-*` goes to Vertex AI generateContent; anything else to Cloud TTS."""
    return model.removeprefix("publishers/google/models/").startswith("gemini")


def cloud_tts_voice(voice: str, language_code: str | None = None) -> dict[str, str]:
    """Cloud TTS `voice`: a full name keeps its own locale; a bare Chirp 3 HD name
    ("Kore", what the voice map gives) becomes `{language}-Chirp3-HD-Kore`."""
    match = _LOCALE_VOICE.match(voice)
    if match:
        return {"languageCode": match[1], "name": voice}
    language = language_code or DEFAULT_LANGUAGE_CODE
    name = f"{language}-Chirp3-HD-{voice}" if voice in GEMINI_VOICES else voice
    return {"languageCode": language, "name": name}


def build_cloud_tts_body(
    text: str,
    *,
    voice: str,
    speed: float = 1.0,
    audio_encoding: str = "MP3",
    language_code: str | None = None,
) -> dict[str, Any]:
    """A `text:synthesize` body. Speed is clamped to what the API takes, not refused."""
    low, high = SPEAKING_RATE_RANGE
    audio_config: dict[str, Any] = {
        "audioEncoding": audio_encoding,
        "speakingRate": min(max(float(speed), low), high),
    }
    if audio_encoding == "LINEAR16":
        audio_config["sampleRateHertz"] = LINEAR16_SAMPLE_RATE
    return {
        "input": {"text": text},
        "voice": cloud_tts_voice(voice, language_code),
        "audioConfig": audio_config,
    }


def split_wav(data: bytes) -> tuple[bytes, int] | None:
    """The samples and rate of a 16-bit mono PCM WAV, or None if it is anything else."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    stream = io.BytesIO(data)
    stream.seek(12)
    rate: int | None = None
    while True:
        header = stream.read(8)
        if len(header) < 8:
            return None
        chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk_id == b"fmt ":
            fmt = stream.read(size)
            if len(fmt) < 16:
                return None
            audio_format, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
            if audio_format != 1 or channels != 1 or bits != 16:
                return None
        elif chunk_id == b"data":
            if rate is None:
                return None
            # Streamed WAVs may carry a placeholder size; take what is there.
            samples = stream.read(size)
            return samples[: len(samples) - len(samples) % 2], rate
        else:
            stream.seek(size + size % 2, io.SEEK_CUR)


def load_service_account_info(value: object) -> dict[str, Any]:
    """`vertex_credentials` as LiteLLM takes it: a dict, JSON text, or a key file's path."""
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str | Path):
        raise AuthenticationFailed("vertex_ai: vertex_credentials must be a path, JSON or a dict")
    text = str(value).strip()
    if not text.startswith(("{", "[")):  # JSON text, else a key file path
        try:
            text = Path(text).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthenticationFailed(
                f"vertex_ai: cannot read vertex_credentials file ({type(exc).__name__})"
            ) from exc
    try:
        info = json.loads(text)
    except ValueError:
        raise AuthenticationFailed("vertex_ai: vertex_credentials is not valid JSON") from None
    if not isinstance(info, dict):
        raise AuthenticationFailed("vertex_ai: vertex_credentials is not a JSON object")
    return info


def map_vertex_ai_error(
    exc: httpx.HTTPError | google_auth_exceptions.GoogleAuthError,
    *,
    secrets: list[str | None] | None = None,
) -> ProviderError:
    """Translate a failure of the API call or of the token exchange into a provider error."""
    secrets = secrets or []
    if isinstance(exc, TokenEndpointError):
        error = map_google_error(exc.http_error, provider="vertex_ai token", secrets=secrets)
        # The token endpoint refusing the key (400 invalid_grant, 401 invalid_client) is a
        # credentials problem, not bad input; throttling and outages stay retryable.
        if isinstance(error, InvalidInput | UnsupportedFeature):
            return AuthenticationFailed(error.message, status_code=error.status_code)
        return error
    if isinstance(exc, google_auth_exceptions.GoogleAuthError):
        # A malformed token answer or a refused grant that google-auth parsed itself.
        kind = ProviderUnavailable if getattr(exc, "retryable", False) else AuthenticationFailed
        return kind(f"vertex_ai: could not get an access token ({type(exc).__name__})")
    return map_google_error(exc, provider="vertex_ai", secrets=secrets)


def _aiplatform_base(location: str) -> str:
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def _decode_audio_content(response: httpx.Response) -> bytes:
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderUnavailable("vertex_ai: answer is not valid JSON") from exc
    content = body.get("audioContent") if isinstance(body, dict) else None
    if not isinstance(content, str) or not content:
        raise ProviderUnavailable("vertex_ai: answer has no audioContent")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderUnavailable("vertex_ai: audioContent is not valid base64") from exc
