"""Deepgram: pre-recorded speech-to-text (Nova, Whisper Cloud) and Aura text-to-speech.

    POST {base}/v1/listen?model=nova-3&smart_format=true…   raw audio in, JSON out
    POST {base}/v1/speak?model=aura-2-thalia-en&encoding=…   JSON `{text}` in, audio bytes out

Config: `deepgram/nova-3` (any model not starting with `aura` transcribes) or
`deepgram/aura-2-thalia-en` / `deepgram/aura-2` (speaks). Auth: `Authorization: Token <key>`.
Optional deployment params: `detect_language: false` (when no language is given, we ask
Deepgram to detect it, like Whisper does; this turns that off and Deepgram assumes `en`),
`clamp_speed: true` (clamp speeds outside 0.7-1.5 instead of refusing), `timeout`.

Which voice speaks (`choose_voice_model`):
- a request voice that is itself a Deepgram model (`aura-2-zeus-en`) always wins;
- deployment model `aura-2` (no voice in it): the request voice picks the model through
  `resolve_voice` (the deployment's `voice_map`, then DEFAULT_VOICE_MAP; other names are
  sent as given); no voice means `voice_map.default`, else aura-2-thalia-en;
- deployment model with a voice (`aura-2-thalia-en`): that voice, whatever OpenAI voice
  name the client sends, unless the deployment's own `voice_map` maps it elsewhere.

Docs followed:
- https://developers.deepgram.com/reference/speech-to-text-api/listen and
  https://developers.deepgram.com/docs/pre-recorded-audio (raw body with the audio's
  Content-Type, `model`, `smart_format`, `punctuate`, `utterances`, `language`);
  https://developers.deepgram.com/docs/language-detection (`detect_language`, answered as
  `results.channels[].detected_language`); response fields as generated into
  deepgram-python-sdk `ListenV1ResponseMetadata` (`request_id`, `duration`) and
  `ListenV1ResponseResultsUtterancesItems` (`start, end, channel, transcript`).
- https://developers.deepgram.com/reference/text-to-speech/speak-request,
  https://developers.deepgram.com/docs/tts-encoding and
  https://developers.deepgram.com/docs/tts-media-output-settings ("Audio Format
  Combinations": mp3 fixed 22050 Hz; opus in ogg, 48 kHz; linear16 in wav or none at
  8000-48000 Hz, default 24000).
- https://developers.deepgram.com/docs/tts-voice-controls (`speed` query, 0.7-1.5,
  Aura-2 only) and https://developers.deepgram.com/docs/tts-models (voice names).
- https://developers.deepgram.com/reference/errors (both error envelopes:
  `{err_code, err_msg, request_id}` and `{category, message, details, request_id}`).

Every httpx error and every non-2xx answer goes through `map_deepgram_error`, once.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import httpx

from worker.providers._http import (
    STATUS_ERRORS,
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
    TranscriptionRequest,
    TranscriptionResult,
    TranscriptSegment,
)
from worker.providers.errors import (
    AuthenticationFailed,
    ProviderError,
    ProviderUnavailable,
    UnsupportedFeature,
)

__all__ = [
    "DEFAULT_API_BASE",
    "DEFAULT_VOICE_MAP",
    "PCM_SAMPLE_RATE",
    "SPEED_RANGE",
    "DeepgramProvider",
    "choose_encoding",
    "group_words",
    "map_deepgram_error",
]

DEFAULT_API_BASE = "https://api.deepgram.com"

# mp3 and opus (Ogg Opus, as OpenAI's) pass straight through; everything else comes as raw
# s16le mono at 24 kHz, Aura's default rate, and the worker encodes it. Deepgram's flac
# and aac exist but not at 24 kHz, and its streamed wav is just linear16 with a header.
PCM_SAMPLE_RATE = 24_000
_NATIVE_ENCODINGS: dict[str, dict[str, str]] = {
    "mp3": {"encoding": "mp3"},
    "opus": {"encoding": "opus", "container": "ogg"},
}
_PCM_ENCODING = {"encoding": "linear16", "container": "none", "sample_rate": str(PCM_SAMPLE_RATE)}

SPEED_RANGE = (0.7, 1.5)

_TTS_PREFIX = "aura"
# Models that name a family, not a voice: the request's voice picks the voice model.
_VOICE_FAMILIES = frozenset({"aura-2"})

# OpenAI voice names -> Aura-2 English voices, matched by expressed gender
# (https://developers.deepgram.com/docs/tts-models).
DEFAULT_VOICE_MAP: dict[str, str] = {
    "alloy": "aura-2-thalia-en",  # feminine; the voice in all of Deepgram's examples
    "ash": "aura-2-arcas-en",  # masculine
    "ballad": "aura-2-apollo-en",  # masculine
    "coral": "aura-2-andromeda-en",  # feminine
    "echo": "aura-2-orion-en",  # masculine
    "fable": "aura-2-draco-en",  # masculine, British accent
    "nova": "aura-2-luna-en",  # feminine
    "onyx": "aura-2-zeus-en",  # masculine
    "sage": "aura-2-athena-en",  # feminine
    "shimmer": "aura-2-helena-en",  # feminine
    "verse": "aura-2-aries-en",  # masculine
}

_SENTENCE_END = (".", "!", "?", "…", "。", "！", "？")

# 400 is bad parameters, corrupt audio or text over the limit; 403 e.g.
# INSUFFICIENT_PERMISSIONS for the model; the shared table has those right.
_STATUS_ERRORS: dict[int, type[ProviderError]] = {
    **STATUS_ERRORS,
    402: AuthenticationFailed,  # out of credit: this deployment cannot serve anything
}


class DeepgramProvider(SpeechProvider):
    """Deepgram speech-to-text (`nova-3`, …) and Aura text-to-speech (`aura-…` models)."""

    name = "deepgram"
    # Per request, for Aura; more is refused (PROVIDERS.md, and client libraries enforce it).
    max_input_characters = 2_000
    default_voice_map = DEFAULT_VOICE_MAP
    default_voice = DEFAULT_VOICE_MAP["alloy"]

    def __init__(self, deployment: Deployment, http: httpx.Client | None = None) -> None:
        super().__init__(deployment, http)
        self.api_base = _normalize_api_base(deployment.api_base or DEFAULT_API_BASE)
        self.timeout_s = parse_timeout_s(deployment.params)

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        if not _is_tts_model(request.model):
            raise UnsupportedFeature(f"deepgram: {request.model} does not do text-to-speech")
        voice_model = self.choose_voice_model(request.model, request.voice)
        encoding, audio_format, sample_rate = choose_encoding(request.response_format)
        params: dict[str, str] = {"model": voice_model, **encoding}
        if request.speed != 1.0:
            params["speed"] = f"{self._check_speed(voice_model, request.speed):g}"
        # `instructions` has no Aura equivalent; dropped.
        response = self._post("/v1/speak", params=params, json={"text": request.text})
        content_type = response.headers.get("content-type", "")
        # A 200 carrying JSON or text is an error page or a misbehaving proxy, not audio.
        if not response.content or content_type.startswith(("application/json", "text/")):
            raise ProviderUnavailable(
                f"deepgram: expected {audio_format} audio, got {content_type or 'an empty body'}"
            )
        return SynthesisResult(
            audio=response.content,
            audio_format=audio_format,
            sample_rate=sample_rate,
            characters=len(request.text),
            request_id=response.headers.get("dg-request-id"),
        )

    def choose_voice_model(self, model: str, voice: str | None) -> str:
        """The Aura model to ask for; see the module docstring for the rules."""
        if voice and voice.startswith(_TTS_PREFIX):
            return voice
        if model in _VOICE_FAMILIES:
            return self.resolve_voice(voice) or self.default_voice or model
        overrides: Mapping[str, str] = self.deployment.params.get("voice_map") or {}
        return overrides.get(voice or "default") or model

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        if _is_tts_model(request.model):
            raise UnsupportedFeature(f"deepgram: {request.model} does not do speech-to-text")
        # smart_format implies punctuation; utterances give us pause-split segments.
        params: dict[str, str] = {
            "model": request.model,
            "smart_format": "true",
            "punctuate": "true",
            "utterances": "true",
        }
        if request.language:
            params["language"] = request.language
        elif self.deployment.params.get("detect_language", True):
            params["detect_language"] = "true"
        # `prompt` and `temperature` have no Deepgram equivalent; dropped.
        content_type = (
            mimetypes.guess_type(request.filename)[0]
            or mimetypes.guess_type(request.audio_path.name)[0]
            or "application/octet-stream"  # Deepgram sniffs the container itself
        )
        # The raw file is the body; httpx streams it in chunks with its Content-Length.
        with request.audio_path.open("rb") as audio_file:
            response = self._post(
                "/v1/listen", params=params, content=audio_file, content_type=content_type
            )
        return _parse_listen(response, requested_language=request.language)

    def _check_speed(self, voice_model: str, speed: float) -> float:
        if not voice_model.startswith("aura-2-"):
            raise UnsupportedFeature(f"deepgram: {voice_model} has no speed control")
        low, high = SPEED_RANGE
        if low <= speed <= high:
            return speed
        if self.deployment.params.get("clamp_speed"):
            return min(max(speed, low), high)
        # Our API takes 0.25-4 like OpenAI; another deployment may honour this speed.
        raise UnsupportedFeature(f"deepgram: speed {speed:g} is outside the supported {low}-{high}")

    def _post(
        self,
        path: str,
        *,
        params: Mapping[str, str],
        json: Mapping[str, Any] | None = None,
        content: BinaryIO | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        headers: dict[str, str] = {}
        if self.deployment.api_key:
            headers["Authorization"] = f"Token {self.deployment.api_key}"
        if content_type:
            headers["Content-Type"] = content_type
        return post(
            self.http,
            f"{self.api_base}{path}",
            params=params,
            json=json,
            content=content,
            headers=headers,
            timeout_s=self.timeout_s,
            map_error=lambda exc: map_deepgram_error(exc, api_key=self.deployment.api_key),
        )


def choose_encoding(response_format: str) -> tuple[dict[str, str], str, int | None]:
    """`(query params, audio_format, sample_rate)` to ask /v1/speak for."""
    native = _NATIVE_ENCODINGS.get(response_format)
    if native is not None:
        return dict(native), response_format, None
    return dict(_PCM_ENCODING), "pcm", PCM_SAMPLE_RATE


def map_deepgram_error(exc: httpx.HTTPError, *, api_key: str | None = None) -> ProviderError:
    """Translate an httpx exception (including `HTTPStatusError`) into a provider error."""
    return map_http_error(
        exc,
        label="deepgram",
        read_detail=_read_error_detail,
        status_errors=_STATUS_ERRORS,
        secrets=[api_key],
    )


def group_words(words: Sequence[Mapping[str, Any]]) -> tuple[TranscriptSegment, ...]:
    """Deepgram's word list as sentence-sized segments, for answers without utterances.

    A segment ends after a word whose punctuated form ends in . ! ? (or CJK forms), and
    whenever the (diarized) speaker changes.
    """
    segments: list[TranscriptSegment] = []
    current: list[Mapping[str, Any]] = []
    for word in words:
        if current and word.get("speaker") != current[-1].get("speaker"):
            segments.append(_segment_of(current))
            current = []
        current.append(word)
        if _spoken(word).endswith(_SENTENCE_END):
            segments.append(_segment_of(current))
            current = []
    if current:
        segments.append(_segment_of(current))
    return tuple(segments)


def _segment_of(words: Sequence[Mapping[str, Any]]) -> TranscriptSegment:
    return TranscriptSegment(
        start=float(words[0]["start"]),
        end=float(words[-1]["end"]),
        text=" ".join(_spoken(word) for word in words),
    )


def _spoken(word: Mapping[str, Any]) -> str:
    # smart_format/punctuate fill `punctuated_word`; `word` is the bare lower-case token.
    return str(word.get("punctuated_word") or word["word"])


def _parse_listen(
    response: httpx.Response, *, requested_language: str | None
) -> TranscriptionResult:
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderUnavailable("deepgram: transcription answer is not valid JSON") from exc
    try:
        metadata = body["metadata"]
        results = body["results"]
        channel = results["channels"][0]
        alternative = channel["alternatives"][0]
        text = alternative["transcript"]
        if not isinstance(text, str):
            raise TypeError("transcript is not a string")
        words = alternative.get("words") or []
        utterances = [
            utterance
            for utterance in results.get("utterances") or []
            if utterance.get("channel", 0) == 0  # utterances cover every channel
        ]
        if utterances:
            segments = tuple(
                TranscriptSegment(
                    start=float(utterance["start"]),
                    end=float(utterance["end"]),
                    text=str(utterance["transcript"]).strip(),
                )
                for utterance in utterances
            )
        else:
            segments = group_words(words)
        duration = metadata.get("duration")
        if duration is not None:
            duration_seconds: float | None = float(duration)
        else:
            duration_seconds = float(words[-1]["end"]) if words else None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ProviderUnavailable("deepgram: transcription answer is malformed") from exc
    detected = channel.get("detected_language")
    request_id = metadata.get("request_id") or response.headers.get("dg-request-id")
    return TranscriptionResult(
        text=text.strip(),
        language=detected if isinstance(detected, str) else requested_language,
        duration_seconds=duration_seconds,
        segments=segments,
        request_id=str(request_id) if request_id else None,
    )


def _read_error_detail(response: httpx.Response) -> str:
    """The provider's own words from either Deepgram envelope, or what else we got."""
    body = read_json(response)
    if isinstance(body, dict):
        request_id = body.get("request_id")
        suffix = f" [request_id {request_id}]" if isinstance(request_id, str) else ""
        if isinstance(body.get("err_msg"), str):
            code = body.get("err_code")
            return f"{body['err_msg']} ({code}){suffix}" if code else body["err_msg"] + suffix
        if isinstance(body.get("message"), str):
            parts = [body["message"]]
            if isinstance(body.get("details"), str):
                parts.append(body["details"])
            category = body.get("category")
            tail = f" ({category})" if isinstance(category, str) else ""
            return " ".join(parts) + tail + suffix
    return read_error_text(response)


def _is_tts_model(model: str) -> bool:
    return model.startswith(_TTS_PREFIX)


def _normalize_api_base(api_base: str) -> str:
    # Paths here carry the /v1; accept a base copied with it (LiteLLM's default has it).
    return api_base.rstrip("/").removesuffix("/v1")
