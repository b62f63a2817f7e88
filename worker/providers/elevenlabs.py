"""ElevenLabs: text-to-speech, and Scribe speech-to-text.

    POST {base}/v1/text-to-speech/{voice_id}?output_format=…   JSON in, audio bytes out
    POST {base}/v1/speech-to-text                             multipart in, JSON out

Config: `elevenlabs/eleven_multilingual_v2` (any TTS model id) or `elevenlabs/scribe_v1`
(`scribe_*` models transcribe). Auth is the `xi-api-key` header. Optional deployment params:
`voice_settings` (stability, similarity_boost, style, use_speaker_boost: sent with every
request), `clamp_speed: true` (clamp speeds outside 0.7-1.2 instead of refusing), `timeout`.

Docs followed:
- https://elevenlabs.io/docs/api-reference/text-to-speech/convert, as generated into
  elevenlabs-python `src/elevenlabs/text_to_speech/raw_client.py` (`output_format` query,
  JSON `text, model_id, voice_settings`) and `types/voice_settings.py` (`speed`).
- Output formats: elevenlabs-python `text_to_speech/types/*_output_format.py`
  (mp3_*, pcm_8000..48000, wav_*, opus_48000_*, ulaw/alaw_8000; 192 kbps mp3 needs the
  Creator tier and 44.1 kHz pcm/wav the Pro tier, so we ask for neither).
- Speed 0.7-1.2: https://elevenlabs.io/docs/eleven-agents/customization/voice/speed-control
  ("Range: 0.7 to 1.2, Default: 1.0"), the same `speed` voice setting.
- Per-request character limits: https://elevenlabs.io/docs/models#character-limits and
  https://help.elevenlabs.io/hc/en-us/articles/19572237925521 (which also lists the error
  `detail.status` codes: max_character_limit_exceeded, invalid_api_key, voice_not_found,
  quota_exceeded).
- https://elevenlabs.io/docs/api-reference/speech-to-text/convert, as generated into
  elevenlabs-python `speech_to_text/raw_client.py` (multipart `model_id, file,
  language_code, temperature`; file under 3.0 GB) and `types/speech_to_text_chunk_response_model.py`
  (`language_code` ISO 639-3, `text`, `words[{text, start, end, type, speaker_id}]`).

Every httpx error and every non-2xx answer goes through `map_elevenlabs_error`, once.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from worker.providers._http import (
    MAX_DETAIL_CHARS,
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
    "MODEL_CHARACTER_LIMITS",
    "PCM_SAMPLE_RATE",
    "SPEED_RANGE",
    "ElevenLabsProvider",
    "choose_output_format",
    "group_words",
    "map_elevenlabs_error",
    "model_character_limit",
]

DEFAULT_API_BASE = "https://api.elevenlabs.io"

# mp3 passes straight through. Everything else comes as raw s16le mono at 24 kHz, which the
# worker encodes: wav/flac/aac are not worth a second code path, and the container of
# ElevenLabs' opus_48000_* output is not documented, while the worker's Ogg Opus is known.
MP3_OUTPUT_FORMAT = "mp3_44100_128"
PCM_OUTPUT_FORMAT = "pcm_24000"
PCM_SAMPLE_RATE = 24_000

SPEED_RANGE = (0.7, 1.2)

# Characters per request, from the docs' "Character limits" table (v3 from the models page).
# Keys are model-id prefixes, so `eleven_v3_preview_2025_…` finds `eleven_v3`.
MODEL_CHARACTER_LIMITS: dict[str, int] = {
    "eleven_v3": 5_000,
    "eleven_multilingual_v2": 10_000,
    "eleven_multilingual_v1": 10_000,
    "eleven_monolingual_v1": 10_000,
    "eleven_flash_v2_5": 40_000,
    "eleven_turbo_v2_5": 40_000,
    "eleven_flash_v2": 30_000,
    "eleven_turbo_v2": 30_000,
}

# OpenAI voice names -> ElevenLabs premade voices (the default set every account has),
# chosen by gender and character: https://api.elevenlabs.io/v1/voices, category "premade".
DEFAULT_VOICE_MAP: dict[str, str] = {
    "alloy": "SAz9YHcvj6GT2YYXdXww",  # River: neutral, confident
    "ash": "iP95p4xoKVk53GoZ742B",  # Chris: male, casual
    "ballad": "N2lVS1w4EtoT3dr4eOWO",  # Callum: male, intense
    "coral": "cgSgspJ2msm6clMCkdW9",  # Jessica: female, expressive
    "echo": "cjVigY5qzO86Huf0OWal",  # Eric: male, friendly
    "fable": "JBFqnCBsd6RMkjVDRZzb",  # George: male, British, warm storyteller
    "nova": "EXAVITQu4vr4xnSDxMaL",  # Sarah: female, young
    "onyx": "nPczCjzI2devNBz1zQrb",  # Brian: male, deep
    "sage": "XrExE9yKIg1WjnnlVkGX",  # Matilda: female, calm and friendly
    "shimmer": "FGY2WhTYpPnrIDTdsKH5",  # Laura: female, upbeat
    "verse": "TX3LPaxmHKxFdv7VOQHJ",  # Liam: male, articulate
}

_STT_MODEL_PREFIX = "scribe"
_SENTENCE_END = (".", "!", "?", "…", "。", "！", "？")

# 400 is e.g. max_character_limit_exceeded, 401 invalid_api_key and also quota_exceeded,
# 422 FastAPI's validation of the body; the shared table has those right.
_STATUS_ERRORS: dict[int, type[ProviderError]] = {
    **STATUS_ERRORS,
    402: AuthenticationFailed,  # the account cannot pay for this: no other try will
}
# `detail.status` codes that say more than the HTTP status does.
_DETAIL_STATUS_ERRORS: dict[str, type[ProviderError]] = {
    # The voice id does not exist on this account; another deployment may serve the voice.
    "voice_not_found": UnsupportedFeature,
}


class ElevenLabsProvider(SpeechProvider):
    """ElevenLabs text-to-speech (`eleven_*` models) and Scribe speech-to-text (`scribe_*`)."""

    name = "elevenlabs"
    # For a model missing from MODEL_CHARACTER_LIMITS: the smallest current limit (v3).
    max_input_characters = 5_000
    default_voice_map = DEFAULT_VOICE_MAP
    default_voice = DEFAULT_VOICE_MAP["alloy"]

    def __init__(self, deployment: Deployment, http: httpx.Client | None = None) -> None:
        super().__init__(deployment, http)
        self.api_base = _normalize_api_base(deployment.api_base or DEFAULT_API_BASE)
        self.timeout_s = parse_timeout_s(deployment.params)

    def max_characters(self) -> int | None:
        """`model_info.max_input_characters`, else the documented limit of this model."""
        configured = self.deployment.model_info.get("max_input_characters")
        if configured:
            return int(configured)
        return model_character_limit(self.deployment.model) or self.max_input_characters

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        if _is_stt_model(request.model):
            raise UnsupportedFeature(f"elevenlabs: {request.model} does not do text-to-speech")
        voice_id = self.resolve_voice(request.voice) or self.default_voice
        output_format, audio_format, sample_rate = choose_output_format(request.response_format)
        body: dict[str, Any] = {"text": request.text, "model_id": request.model}
        voice_settings = self._voice_settings(request.speed)
        # Without voice_settings the voice's own stored settings apply, which is what we want.
        if voice_settings:
            body["voice_settings"] = voice_settings
        # `instructions` has no ElevenLabs equivalent (v3 takes inline audio tags); dropped.
        response = self._post(
            f"/v1/text-to-speech/{quote(str(voice_id), safe='')}",
            params={"output_format": output_format},
            json=body,
        )
        content_type = response.headers.get("content-type", "")
        # A 200 carrying JSON or text is an error page or a misbehaving proxy, not audio.
        if not response.content or content_type.startswith(("application/json", "text/")):
            raise ProviderUnavailable(
                f"elevenlabs: expected {output_format} audio, got {content_type or 'an empty body'}"
            )
        return SynthesisResult(
            audio=response.content,
            audio_format=audio_format,
            sample_rate=sample_rate,
            characters=len(request.text),  # billed per character of `text`
            request_id=response.headers.get("request-id"),
        )

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        if not _is_stt_model(request.model):
            raise UnsupportedFeature(f"elevenlabs: {request.model} does not do speech-to-text")
        fields: dict[str, str] = {"model_id": request.model}
        if request.language:
            fields["language_code"] = request.language  # ISO 639-1 or 639-3 both accepted
        if request.temperature is not None:
            fields["temperature"] = str(request.temperature)
        # `prompt` has no Scribe equivalent (`keyterms` is a word list, not a text prompt).
        filename = _upload_filename(request.filename, request.audio_path)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        # httpx streams an open file in chunks, so a long recording never sits in memory.
        with request.audio_path.open("rb") as audio_file:
            response = self._post(
                "/v1/speech-to-text",
                data=fields,
                files={"file": (filename, audio_file, content_type)},
            )
        return _parse_transcript(response)

    def _voice_settings(self, speed: float) -> dict[str, Any]:
        settings: dict[str, Any] = dict(self.deployment.params.get("voice_settings") or {})
        if speed != 1.0:
            settings["speed"] = self._check_speed(speed)
        return settings

    def _check_speed(self, speed: float) -> float:
        low, high = SPEED_RANGE
        if low <= speed <= high:
            return speed
        if self.deployment.params.get("clamp_speed"):
            return min(max(speed, low), high)
        # Our API takes 0.25-4 like OpenAI; another deployment may honour this speed.
        raise UnsupportedFeature(
            f"elevenlabs: speed {speed:g} is outside the supported {low:g}-{high:g}"
        )

    def _post(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        headers: dict[str, str] = {}
        if self.deployment.api_key:
            headers["xi-api-key"] = self.deployment.api_key
        return post(
            self.http,
            f"{self.api_base}{path}",
            params=params,
            json=json,
            data=data,
            files=files,
            headers=headers,
            timeout_s=self.timeout_s,
            map_error=lambda exc: map_elevenlabs_error(exc, api_key=self.deployment.api_key),
        )


def choose_output_format(response_format: str) -> tuple[str, str, int | None]:
    """`(output_format, audio_format, sample_rate)` to ask for, given the client's format."""
    if response_format == "mp3":
        return MP3_OUTPUT_FORMAT, "mp3", None
    return PCM_OUTPUT_FORMAT, "pcm", PCM_SAMPLE_RATE


def model_character_limit(model: str) -> int | None:
    """The documented per-request limit of a TTS model, by longest matching prefix."""
    matches = [prefix for prefix in MODEL_CHARACTER_LIMITS if model.startswith(prefix)]
    return MODEL_CHARACTER_LIMITS[max(matches, key=len)] if matches else None


def map_elevenlabs_error(exc: httpx.HTTPError, *, api_key: str | None = None) -> ProviderError:
    """Translate an httpx exception (including `HTTPStatusError`) into a provider error.

    A 429 (too_many_concurrent_requests or system_busy) is RateLimited whatever the body says.
    """
    return map_http_error(
        exc,
        label="elevenlabs",
        read_detail=_read_error_detail,
        status_errors=_STATUS_ERRORS,
        secrets=[api_key],
    )


def group_words(words: Sequence[Mapping[str, Any]]) -> tuple[TranscriptSegment, ...]:
    """Scribe's word list as sentence-sized segments.

    A segment ends after a word ending in . ! ? (or their CJK forms) and whenever the
    speaker changes. Spacing tokens join the words; audio events ("(laughter)") stay in,
    as they do in Scribe's `text`.
    """
    groups: list[list[Mapping[str, Any]]] = []
    current: list[Mapping[str, Any]] = []
    speaker: object = None
    for word in words:
        kind = word.get("type", "word")
        if kind == "spacing":
            if current:
                current.append(word)
            continue
        if current and word.get("speaker_id") != speaker:
            groups.append(current)
            current = []
        current.append(word)
        speaker = word.get("speaker_id")
        if kind == "word" and str(word["text"]).rstrip().endswith(_SENTENCE_END):
            groups.append(current)
            current = []
    if current:
        groups.append(current)

    segments: list[TranscriptSegment] = []
    for group in groups:
        text = "".join(str(token["text"]) for token in group).strip()
        timed = [token for token in group if token.get("type", "word") != "spacing"]
        starts = [float(t["start"]) for t in timed if t.get("start") is not None]
        ends = [float(t["end"]) for t in timed if t.get("end") is not None]
        previous_end = segments[-1].end if segments else 0.0
        start = starts[0] if starts else previous_end
        end = ends[-1] if ends else start
        if text:
            segments.append(TranscriptSegment(start=start, end=end, text=text))
    return tuple(segments)


def _parse_transcript(response: httpx.Response) -> TranscriptionResult:
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderUnavailable("elevenlabs: transcription answer is not valid JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise ProviderUnavailable("elevenlabs: transcription answer has no `text`")
    words = body.get("words") or []
    try:
        segments = group_words(words)
        ends = [float(w["end"]) for w in words if w.get("end") is not None]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProviderUnavailable("elevenlabs: transcription words are malformed") from exc
    language = body.get("language_code")
    request_id = response.headers.get("request-id") or body.get("transcription_id")
    return TranscriptionResult(
        text=body["text"].strip(),
        language=language if isinstance(language, str) else None,  # ISO 639-3, e.g. "eng"
        # Scribe reports no duration; the last word's end is the best we have.
        duration_seconds=max(ends) if ends else None,
        segments=segments,
        request_id=str(request_id) if request_id else None,
    )


def _read_error_detail(response: httpx.Response) -> ErrorDetail:
    """The message of ElevenLabs' envelope, classed by its `detail.status`, or what else we got.

    ElevenLabs answers `{"detail": {"status": "voice_not_found", "message": "…"}}`, and
    FastAPI's `{"detail": [{"loc": […], "msg": "…"}]}` for a body that fails validation.
    """
    body = read_json(response)
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        status = detail.get("status") if isinstance(detail.get("status"), str) else None
        error_class = _DETAIL_STATUS_ERRORS.get(status or "")
        message = detail.get("message")
        if isinstance(message, str):
            return ErrorDetail(f"{message} ({status})" if status else message, error_class)
        if status:
            return ErrorDetail(status, error_class)
    if isinstance(detail, list):
        problems = [
            f"{'.'.join(str(part) for part in item.get('loc', []))}: {item.get('msg')}"
            for item in detail
            if isinstance(item, dict)
        ]
        if problems:
            return ErrorDetail("; ".join(problems)[:MAX_DETAIL_CHARS])
    if isinstance(detail, str):
        return ErrorDetail(detail)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return ErrorDetail(body["message"])
    return ErrorDetail(read_error_text(response))


def _is_stt_model(model: str) -> bool:
    return model.startswith(_STT_MODEL_PREFIX)


def _normalize_api_base(api_base: str) -> str:
    # Paths here carry the /v1; accept a base copied with it, as some configs have it.
    return api_base.rstrip("/").removesuffix("/v1")


def _upload_filename(filename: str, audio_path: Path) -> str:
    # The content type comes from the extension; borrow the stored file's if the name has none.
    if Path(filename).suffix or not audio_path.suffix:
        return filename
    return f"{filename}{audio_path.suffix}"
