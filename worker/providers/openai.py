"""OpenAI's audio API, and any server that speaks it (Groq, speaches, vLLM...) by `api_base`.

    POST {base}/audio/speech          JSON in, audio bytes out
    POST {base}/audio/transcriptions  multipart in, JSON or text out

Every httpx error and every non-2xx answer goes through `map_openai_error`, once.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from worker.providers._http import (
    map_http_error,
    parse_retry_after_s,
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
from worker.providers.errors import ProviderError, ProviderUnavailable

__all__ = [
    "DEFAULT_API_BASE",
    "PCM_SAMPLE_RATE",
    "SPEECH_FORMATS",
    "OpenAIProvider",
    "choose_transcription_format",
    "map_openai_error",
    "parse_retry_after_s",
    "parse_subtitles",
]

DEFAULT_API_BASE = "https://api.openai.com/v1"
# What /audio/speech can answer in; `pcm` is raw s16le mono at 24 kHz.
SPEECH_FORMATS = frozenset({"mp3", "opus", "aac", "flac", "wav", "pcm"})
PCM_SAMPLE_RATE = 24_000
# For any other client format ask for wav: it states its own sample rate, so the worker
# can re-encode it even from a compatible server whose native rate is not 24 kHz.
FALLBACK_SPEECH_FORMAT = "wav"
# Client formats we render ourselves from verbose_json segments.
SEGMENT_FORMATS = frozenset({"srt", "vtt", "verbose_json"})


class OpenAIProvider(SpeechProvider):
    """Text-to-speech and speech-to-text through an OpenAI-compatible HTTP API."""

    name = "openai"
    # https://platform.openai.com/docs/api-reference/audio/createSpeech (input: max 4096)
    max_input_characters = 4096
    default_voice = "alloy"

    def __init__(self, deployment: Deployment, http: httpx.Client | None = None) -> None:
        super().__init__(deployment, http)
        self.api_base = (deployment.api_base or DEFAULT_API_BASE).rstrip("/")
        self.timeout_s = parse_timeout_s(deployment.params)

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        audio_format = (
            request.response_format
            if request.response_format in SPEECH_FORMATS
            else FALLBACK_SPEECH_FORMAT
        )
        body: dict[str, Any] = {
            "model": request.model,
            "input": request.text,
            "voice": self.resolve_voice(request.voice),
            "response_format": audio_format,
            "speed": request.speed,
        }
        # tts-1 and tts-1-hd reject `instructions`, so send it only when asked for.
        if request.instructions:
            body["instructions"] = request.instructions
        response = self._post("/audio/speech", json=body)
        content_type = response.headers.get("content-type", "")
        # A 200 carrying JSON or text is an error page or a misbehaving proxy, not audio.
        if not response.content or content_type.startswith(("application/json", "text/")):
            raise ProviderUnavailable(
                f"{self.name}: expected {audio_format} audio, got {content_type or 'an empty body'}"
            )
        return SynthesisResult(
            audio=response.content,
            audio_format=audio_format,
            sample_rate=PCM_SAMPLE_RATE if audio_format == "pcm" else None,
            characters=len(request.text),  # OpenAI bills every character of `input`
            request_id=response.headers.get("x-request-id"),
        )

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        upstream_format = choose_transcription_format(
            request.response_format, self.deployment.params.get("response_format")
        )
        fields: dict[str, str] = {"model": request.model, "response_format": upstream_format}
        if request.language:
            fields["language"] = request.language
        if request.prompt:
            fields["prompt"] = request.prompt
        if request.temperature is not None:
            fields["temperature"] = str(request.temperature)
        filename = _upload_filename(request.filename, request.audio_path)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        # httpx streams an open file in chunks, so a long recording never sits in memory.
        with request.audio_path.open("rb") as audio_file:
            response = self._post(
                "/audio/transcriptions",
                data=fields,
                files={"file": (filename, audio_file, content_type)},
            )
        return _parse_transcription(response, upstream_format, label=self.name)

    def _post(
        self,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        return post(
            self.http,
            f"{self.api_base}{path}",
            json=json,
            data=data,
            files=files,
            headers=self._headers(),
            timeout_s=self.timeout_s,
            map_error=lambda exc: map_openai_error(exc, label=self.name, secrets=self._secrets()),
        )

    def _secrets(self) -> list[str | None]:
        """What must never appear in an error message."""
        return [self.deployment.api_key]

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        # Local compatible servers often run without a key: then send no Authorization at all.
        if self.deployment.api_key:
            headers["Authorization"] = f"Bearer {self.deployment.api_key}"
        organization = self.deployment.params.get("organization")
        if organization:
            headers["OpenAI-Organization"] = str(organization)
        return headers


def choose_transcription_format(wanted: str, forced: str | None = None) -> str:
    """The `response_format` to ask upstream for, given what the client wants."""
    # Some compatible servers accept only some formats; the deployment may pin one.
    if forced:
        return forced
    return "verbose_json" if wanted in SEGMENT_FORMATS else "json"


def map_openai_error(
    exc: httpx.HTTPError, *, label: str = "openai", secrets: Iterable[str | None] = ()
) -> ProviderError:
    """Translate an httpx exception (including `HTTPStatusError`) into a provider error.

    `label` starts every message (Azure OpenAI passes its own); `secrets` are masked, since
    some compatible servers echo the bad key back.
    """
    return map_http_error(exc, label=label, read_detail=_read_error_detail, secrets=secrets)


_CUE_TIMES = re.compile(
    r"(?P<start>(?:\d+:)?\d{1,2}:\d{2}[,.]\d{1,3})\s*-->\s*(?P<end>(?:\d+:)?\d{1,2}:\d{2}[,.]\d{1,3})"
)


def parse_subtitles(body: str) -> tuple[TranscriptSegment, ...]:
    """Segments from an SRT or WebVTT document (for deployments pinned to those formats)."""
    segments: list[TranscriptSegment] = []
    for block in re.split(r"\n\s*\n", body.replace("\r\n", "\n").strip()):
        lines = block.split("\n")
        for index, line in enumerate(lines):
            match = _CUE_TIMES.search(line)
            if match:
                text = " ".join(part.strip() for part in lines[index + 1 :] if part.strip())
                segments.append(
                    TranscriptSegment(
                        start=_parse_cue_time(match["start"]),
                        end=_parse_cue_time(match["end"]),
                        text=text,
                    )
                )
                break
    return tuple(segments)


def _parse_transcription(
    response: httpx.Response, upstream_format: str, *, label: str
) -> TranscriptionResult:
    request_id = response.headers.get("x-request-id")
    content_type = response.headers.get("content-type", "")
    if upstream_format.endswith("json") or content_type.startswith("application/json"):
        return _parse_transcription_json(response, request_id, label=label)
    if upstream_format in ("srt", "vtt"):
        segments = parse_subtitles(response.text)
        text = " ".join(segment.text for segment in segments)
        return TranscriptionResult(text=text, segments=segments, request_id=request_id)
    return TranscriptionResult(text=response.text.strip(), request_id=request_id)


def _parse_transcription_json(
    response: httpx.Response, request_id: str | None, *, label: str
) -> TranscriptionResult:
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderUnavailable(f"{label}: transcription answer is not valid JSON") from exc
    # Some servers JSON-encode the bare string when asked for `text`.
    if isinstance(body, str):
        return TranscriptionResult(text=body.strip(), request_id=request_id)
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise ProviderUnavailable(f"{label}: transcription answer has no `text`")
    try:
        segments = tuple(
            TranscriptSegment(
                start=float(segment["start"]),
                end=float(segment["end"]),
                text=str(segment["text"]).strip(),  # Whisper starts each segment with a space
            )
            for segment in body.get("segments") or ()
        )
        duration = body.get("duration")
        duration_seconds = float(duration) if duration is not None else None
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderUnavailable(f"{label}: transcription segments are malformed") from exc
    language = body.get("language")
    # gpt-4o-*-transcribe report token usage ({"type": "tokens", ...}); whisper-1 seconds.
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    tokens = usage.get("type") == "tokens"
    return TranscriptionResult(
        text=body["text"].strip(),
        # Whisper names the language ("english"); compatible servers may send a code.
        language=language if isinstance(language, str) else None,
        duration_seconds=duration_seconds,
        segments=segments,
        request_id=request_id,
        input_tokens=_token_count(usage.get("input_tokens")) if tokens else None,
        output_tokens=_token_count(usage.get("output_tokens")) if tokens else None,
    )


def _read_error_detail(response: httpx.Response) -> str:
    """The provider's own words: `error.message` of OpenAI's envelope, or what else we got."""
    body = read_json(response)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        # FastAPI-style servers answer {"detail": ...}; others {"error": "..."} or {"message"}.
        for key in ("error", "detail", "message"):
            if isinstance(body.get(key), str):
                return body[key]
    return read_error_text(response)


def _parse_cue_time(value: str) -> float:
    parts = value.replace(",", ".").split(":")
    seconds = float(parts[-1])
    for power, part in enumerate(reversed(parts[:-1]), start=1):
        seconds += int(part) * 60**power
    return seconds


def _upload_filename(filename: str, audio_path: Path) -> str:
    # OpenAI infers the container from the upload's extension; borrow the stored file's.
    if Path(filename).suffix or not audio_path.suffix:
        return filename
    return f"{filename}{audio_path.suffix}"


def _token_count(value: object) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None
