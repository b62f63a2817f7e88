"""Google's Gemini API native text-to-speech, through `generateContent`.

    POST {base}/v1beta/models/{model}:generateContent   JSON in, JSON with base64 PCM out

Pages followed (checked 2026):
- https://ai.google.dev/gemini-api/docs/speech-generation (request shape, the 30 prebuilt
  voices, "Say cheerfully: ..." style prompts, output s16le mono 24 kHz, "Limitations")
- https://ai.google.dev/api/generate-content (endpoint, `x-goog-api-key`, response fields
  `candidates[].content.parts[].inlineData`, `finishReason`, `promptFeedback.blockReason`)
- https://ai.google.dev/gemini-api/docs/models (TTS models: 8,192 input / 16,384 output tokens)
- https://ai.google.dev/gemini-api/docs/troubleshooting (status codes; a bad key is a 400
  INVALID_ARGUMENT with `details[].reason == "API_KEY_INVALID"`, not a 401)

The speech call (`synthesize_gemini_speech`: request builder and response parser) and the
Google error mapper are shared with `vertex_ai.py`, whose Gemini models speak the same JSON
through Vertex AI.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from worker.providers._http import (
    STATUS_ERRORS,
    ErrorDetail,
    map_http_error,
    parse_timeout_s,
    post,
    read_error_text,
    read_json,
)
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
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)

__all__ = [
    "DEFAULT_API_BASE",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_VOICE",
    "GEMINI_VOICES",
    "MAX_INPUT_CHARACTERS",
    "VOICE_MAP",
    "GeminiProvider",
    "GoogleError",
    "SpeechAudio",
    "build_speech_body",
    "map_google_error",
    "parse_speech_response",
    "read_google_error",
    "style_prompt",
    "synthesize_gemini_speech",
]

DEFAULT_API_BASE = "https://generativelanguage.googleapis.com"
DEFAULT_API_VERSION = "v1beta"
# "audio/L16;codec=pcm;rate=24000": RFC 2586 L16 would be big-endian, but Google documents
# (and its samples decode) little-endian s16 mono, which is our "pcm".
DEFAULT_SAMPLE_RATE = 24_000

# The 30 prebuilt voices (speech-generation guide; the same names are Cloud TTS's Chirp 3 HD
# voices, so `vertex_ai.py` reuses this map).
GEMINI_VOICES = frozenset(
    {
        "Achernar", "Achird", "Algenib", "Algieba", "Alnilam", "Aoede", "Autonoe",
        "Callirrhoe", "Charon", "Despina", "Enceladus", "Erinome", "Fenrir", "Gacrux",
        "Iapetus", "Kore", "Laomedeia", "Leda", "Orus", "Pulcherrima", "Puck",
        "Rasalgethi", "Sadachbia", "Sadaltager", "Schedar", "Sulafat", "Umbriel",
        "Vindemiatrix", "Zephyr", "Zubenelgenubi",
    }
)  # fmt: skip
DEFAULT_VOICE = "Kore"  # "Firm"; Google's own examples use it
# OpenAI voice -> the prebuilt voice closest in gender and character (Google's one-word
# descriptions in brackets). A deployment's `voice_map` overrides any of these.
VOICE_MAP: Mapping[str, str] = {
    "alloy": "Kore",  # neutral, even [Firm]
    "ash": "Puck",  # male, lively [Upbeat]
    "ballad": "Algieba",  # male, warm [Smooth]
    "coral": "Sulafat",  # female, warm [Warm]
    "echo": "Charon",  # male, calm [Informative]
    "fable": "Sadaltager",  # male, storyteller [Knowledgeable]
    "nova": "Zephyr",  # female, bright [Bright]
    "onyx": "Orus",  # male, deep [Firm]
    "sage": "Vindemiatrix",  # female, calm [Gentle]
    "shimmer": "Achernar",  # female, soft [Soft]
    "verse": "Fenrir",  # male, expressive [Excitable]
}

# Why 2,000 characters, well under the context: TTS models take 8,192 input tokens but give
# at most 16,384 output tokens, and audio costs 25-32 tokens a second, so one answer holds
# about 8.5 minutes. 2,000 characters is about 2-2.5 minutes of speech at normal pace
# (under 5 minutes even when the prompt asks for half speed), stays inside the worker's
# 120 s read timeout, and keeps clear of the drift and cut-offs Google lists for long
# outputs. Deployments can raise it with `model_info.max_input_characters`.
MAX_INPUT_CHARACTERS = 2000

_STATUS_ERRORS_GRPC: dict[str, type[ProviderError]] = {
    "INVALID_ARGUMENT": InvalidInput,
    "OUT_OF_RANGE": InvalidInput,
    "FAILED_PRECONDITION": UnsupportedFeature,  # e.g. no free tier in this region, billing off
    "UNAUTHENTICATED": AuthenticationFailed,
    "PERMISSION_DENIED": AuthenticationFailed,  # also "API not enabled for this project"
    "NOT_FOUND": UnsupportedFeature,  # unknown model
    "UNIMPLEMENTED": UnsupportedFeature,
    "DEADLINE_EXCEEDED": ProviderTimeout,
    "ABORTED": ProviderUnavailable,
    "INTERNAL": ProviderUnavailable,
    "UNAVAILABLE": ProviderUnavailable,
    "UNKNOWN": ProviderUnavailable,
    "CANCELLED": ProviderUnavailable,
}
_STATUS_ERRORS_HTTP: dict[int, type[ProviderError]] = {
    **STATUS_ERRORS,
    504: ProviderTimeout,
}
# Google answers a bad or expired key with 400 INVALID_ARGUMENT; the reason tells it apart.
_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})
# No audio because of what the text says: no other deployment will speak it either.
_BLOCKED_FINISH_REASONS = frozenset(
    {"SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "RECITATION", "IMAGE_SAFETY"}
)


@dataclass(frozen=True)
class SpeechAudio:
    """The audio of one generateContent answer."""

    data: bytes
    audio_format: str  # "pcm" (s16le mono at sample_rate) or a container name
    sample_rate: int | None
    response_id: str | None = None
    input_tokens: int | None = None  # usageMetadata.promptTokenCount
    output_tokens: int | None = None  # usageMetadata.candidatesTokenCount


class GeminiProvider(SpeechProvider):
    """Text-to-speech with Gemini TTS models (`gemini-2.5-flash-preview-tts`, ...)."""

    name = "gemini"
    max_input_characters = MAX_INPUT_CHARACTERS
    default_voice_map = VOICE_MAP
    default_voice = DEFAULT_VOICE

    def __init__(self, deployment: Deployment, http: httpx.Client | None = None) -> None:
        super().__init__(deployment, http)
        self.api_base = (deployment.api_base or DEFAULT_API_BASE).rstrip("/")
        self.api_version = str(deployment.params.get("api_version") or DEFAULT_API_VERSION)
        self.timeout_s = parse_timeout_s(deployment.params)

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        model = request.model.removeprefix("models/")
        url = f"{self.api_base}/{self.api_version}/models/{model}:generateContent"
        return synthesize_gemini_speech(self, request, lambda body: self._post(url, body))

    def _post(self, url: str, body: Mapping[str, Any]) -> httpx.Response:
        api_key = self.deployment.api_key
        # The key goes in a header, never in `?key=`: URLs end up in logs and exceptions.
        headers = {"x-goog-api-key": api_key} if api_key else {}
        return post(
            self.http,
            url,
            json=body,
            headers=headers,
            timeout_s=self.timeout_s,
            map_error=lambda exc: map_google_error(exc, provider=self.name, secrets=[api_key]),
        )


def synthesize_gemini_speech(
    provider: SpeechProvider,
    request: SynthesisRequest,
    send: Callable[[dict[str, Any]], httpx.Response],
) -> SynthesisResult:
    """One Gemini TTS call, the same on the Gemini API and on Vertex AI.

    The body comes from `request` and the provider's voices and `language_code`; `send` posts
    it wherever this provider posts, with its own auth, and returns the 2xx answer.
    """
    body = build_speech_body(
        request.text,
        voice=provider.resolve_voice(request.voice) or DEFAULT_VOICE,
        instructions=request.instructions,
        speed=request.speed,
        language_code=provider.deployment.params.get("language_code"),
    )
    audio = parse_speech_response(send(body), provider=provider.name)
    return SynthesisResult(
        audio=audio.data,
        audio_format=audio.audio_format,
        sample_rate=audio.sample_rate,
        characters=len(request.text),  # the text only, not our style prompt
        request_id=audio.response_id,
        input_tokens=audio.input_tokens,
        output_tokens=audio.output_tokens,
    )


def style_prompt(text: str, *, instructions: str | None = None, speed: float = 1.0) -> str:
    """The text Gemini reads, with the style in front as Google documents ("Say cheerfully: ...").

    Gemini TTS has no speed parameter; pace is steered by the prompt, so a clearly non-1.0
    `speed` becomes words ("slowly", "quickly"). It is a hint, not an exact rate.
    """
    pace = _pace_words(speed)
    style = (instructions or "").strip().rstrip(".:;,")
    if style and pace:
        return f"{style}. Say it {pace}: {text}"
    if style:
        return f"{style}: {text}"
    if pace:
        return f"Say {pace}: {text}"
    return text


def build_speech_body(
    text: str,
    *,
    voice: str,
    instructions: str | None = None,
    speed: float = 1.0,
    language_code: str | None = None,
) -> dict[str, Any]:
    """A generateContent body asking for one speaker's audio (Gemini API and Vertex AI)."""
    speech_config: dict[str, Any] = {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": voice}}}
    if language_code:
        speech_config["languageCode"] = language_code
    return {
        "contents": [
            {
                "role": "user",
                "parts": [{"text": style_prompt(text, instructions=instructions, speed=speed)}],
            }
        ],
        "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": speech_config},
    }


def parse_speech_response(response: httpx.Response, *, provider: str) -> SpeechAudio:
    """The audio of a 200 answer, or the provider error that explains why there is none."""
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderUnavailable(f"{provider}: answer is not valid JSON") from exc
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"{provider}: answer is not a JSON object")
    response_id = body.get("responseId") if isinstance(body.get("responseId"), str) else None
    candidate = _first_candidate(body, provider)
    finish_reason = candidate.get("finishReason")
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    inline = [
        part["inlineData"]
        for part in parts or ()
        if isinstance(part, dict) and isinstance(part.get("inlineData"), dict)
    ]
    if not inline:
        raise _no_audio_error(provider, finish_reason)
    if finish_reason == "MAX_TOKENS":
        # The audio stops mid-text; a deployment with a larger budget (or shorter segments) may do.
        raise UnsupportedFeature(f"{provider}: audio was cut off at the output token limit")
    mime_types = {str(data.get("mimeType", "")) for data in inline}
    if len(mime_types) != 1:
        raise ProviderUnavailable(f"{provider}: audio parts of mixed types {sorted(mime_types)}")
    audio_format, sample_rate = _audio_format(mime_types.pop(), provider)
    if audio_format != "pcm" and len(inline) > 1:
        raise ProviderUnavailable(f"{provider}: {len(inline)} {audio_format} parts in one answer")
    try:
        chunks = [base64.b64decode(data.get("data") or "", validate=True) for data in inline]
    except (binascii.Error, TypeError, ValueError) as exc:
        raise ProviderUnavailable(f"{provider}: audio is not valid base64") from exc
    audio = b"".join(chunks)
    if not audio:
        raise _no_audio_error(provider, finish_reason)
    usage = body.get("usageMetadata") if isinstance(body.get("usageMetadata"), dict) else {}
    return SpeechAudio(
        audio,
        audio_format,
        sample_rate,
        response_id,
        input_tokens=_count(usage.get("promptTokenCount")),
        output_tokens=_count(usage.get("candidatesTokenCount")),
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


@dataclass(frozen=True)
class GoogleError:
    """What a Google API error body says: `{"error": {"code", "message", "status", "details"}}`."""

    detail: str
    status: str | None = None  # the gRPC status name, e.g. "RESOURCE_EXHAUSTED"
    reason: str | None = None  # `details[].reason` of a google.rpc.ErrorInfo
    retry_delay_s: float | None = None  # `details[].retryDelay` of a google.rpc.RetryInfo


def read_google_error(response: httpx.Response) -> GoogleError:
    """Google's error envelope, OAuth's `{"error", "error_description"}`, or whatever we got."""
    body = read_json(response)
    if isinstance(body, list) and len(body) == 1:  # some endpoints wrap it in a list
        body = body[0]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            status = error.get("status") if isinstance(error.get("status"), str) else None
            message = error.get("message") if isinstance(error.get("message"), str) else ""
            reason, retry_delay_s = _read_details(error.get("details"))
            detail = f"{status}: {message}" if status else message
            return GoogleError(detail or response.reason_phrase, status, reason, retry_delay_s)
        if isinstance(error, str):  # an OAuth token endpoint
            description = body.get("error_description")
            detail = f"{error}: {description}" if isinstance(description, str) else error
            return GoogleError(detail)
    return GoogleError(read_error_text(response))


def map_google_error(
    exc: httpx.HTTPError, *, provider: str = "gemini", secrets: Iterable[str | None] = ()
) -> ProviderError:
    """Translate an httpx exception (including `HTTPStatusError`) from a Google API."""
    return map_http_error(
        exc,
        label=provider,
        read_detail=_read_google_error_detail,
        status_errors=_STATUS_ERRORS_HTTP,
        secrets=secrets,
    )


def _read_google_error_detail(response: httpx.Response) -> ErrorDetail:
    """Google's error, classed by its gRPC status and reason ahead of the HTTP status."""
    error = read_google_error(response)
    error_class: type[ProviderError] | None
    if error.status == "RESOURCE_EXHAUSTED":
        error_class = RateLimited
    elif error.reason in _AUTH_REASONS or "API key not valid" in error.detail:
        error_class = AuthenticationFailed
    else:
        error_class = _STATUS_ERRORS_GRPC.get(error.status or "")
    return ErrorDetail(error.detail, error_class, error.retry_delay_s)


def _pace_words(speed: float) -> str | None:
    if speed <= 0.75:
        return "very slowly"
    if speed < 0.9:
        return "slowly"
    if speed >= 1.5:
        return "very quickly"
    if speed > 1.1:
        return "quickly"
    return None


def _first_candidate(body: dict[str, Any], provider: str) -> dict[str, Any]:
    feedback = body.get("promptFeedback")
    block_reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if block_reason:
        message = f"{provider}: the text was blocked ({block_reason})"
        raise InvalidInput(message)
    candidates = body.get("candidates")
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        raise ProviderUnavailable(f"{provider}: answer has no candidates")
    return candidates[0]


def _no_audio_error(provider: str, finish_reason: object) -> ProviderError:
    if finish_reason in _BLOCKED_FINISH_REASONS:
        return InvalidInput(f"{provider}: no audio, the text was refused ({finish_reason})")
    if finish_reason == "MAX_TOKENS":
        return UnsupportedFeature(f"{provider}: no audio within the output token limit")
    # "OTHER" with empty content, or "STOP" with text instead of audio, comes and goes for
    # the same request (google-gemini/cookbook#1231): worth another try.
    return ProviderUnavailable(f"{provider}: answer has no audio (finishReason {finish_reason})")


def _audio_format(mime_type: str, provider: str) -> tuple[str, int | None]:
    media_type, *params = (piece.strip() for piece in mime_type.split(";"))
    options = dict(param.partition("=")[::2] for param in params)
    media_type = media_type.lower()
    if media_type in ("audio/l16", "audio/pcm"):
        try:
            rate = int(options.get("rate") or DEFAULT_SAMPLE_RATE)
        except ValueError as exc:
            raise ProviderUnavailable(f"{provider}: bad sample rate in {mime_type!r}") from exc
        return "pcm", rate
    container = {
        "audio/wav": "wav",
        "audio/x-wav": "wav",
        "audio/wave": "wav",
        "audio/mpeg": "mp3",
        "audio/mp3": "mp3",
        "audio/ogg": "opus",
        "audio/opus": "opus",
    }.get(media_type)
    if container is None:
        raise ProviderUnavailable(f"{provider}: unexpected audio type {mime_type!r}")
    return container, None


def _read_details(details: object) -> tuple[str | None, float | None]:
    reason: str | None = None
    retry_delay_s: float | None = None
    for item in details if isinstance(details, list) else ():
        if not isinstance(item, dict):
            continue
        if reason is None and isinstance(item.get("reason"), str):
            reason = item["reason"]
        if retry_delay_s is None and isinstance(item.get("retryDelay"), str):
            retry_delay_s = _parse_duration_s(item["retryDelay"])
    return reason, retry_delay_s


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _parse_duration_s(value: str) -> float | None:
    """A protobuf Duration in JSON form ("37s", "0.5s")."""
    match = _DURATION.match(value)
    return float(match[1]) if match else None
