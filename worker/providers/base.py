"""The provider interface: one small class per provider, built from one deployment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from worker.providers.errors import UnsupportedFeature

__all__ = [
    "Deployment",
    "SynthesisRequest",
    "SynthesisResult",
    "TranscriptionRequest",
    "TranscriptionResult",
    "TranscriptSegment",
    "SpeechProvider",
]


@dataclass(frozen=True)
class Deployment:
    """One entry of the config's `model_list`."""

    model_name: str  # the public name clients ask for
    provider: str  # the prefix of litellm_params.model, e.g. "openai"
    model: str  # the provider's own model name, e.g. "tts-1"
    params: dict[str, Any] = field(default_factory=dict)  # litellm_params, env refs resolved
    model_info: dict[str, Any] = field(default_factory=dict)
    id: str = ""  # stable name for attempts and cooldowns, e.g. "tts#0"

    @property
    def api_base(self) -> str | None:
        return self.params.get("api_base")

    @property
    def api_key(self) -> str | None:
        return self.params.get("api_key")


@dataclass(frozen=True)
class SynthesisRequest:
    model: str  # provider-side model name
    text: str
    voice: str | None = None  # None: the deployment's default voice
    response_format: str = "mp3"  # what the client wants; the worker re-encodes if needed
    speed: float = 1.0
    instructions: str | None = None


@dataclass(frozen=True)
class SynthesisResult:
    audio: bytes
    # "pcm" means raw signed 16-bit little-endian mono at `sample_rate`;
    # anything else is an encoded container the audio module can decode.
    audio_format: str
    sample_rate: int | None = None
    characters: int = 0  # billable characters
    request_id: str | None = None
    # The provider's own usage counts, for token-billed models; None when not reported.
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class TranscriptionRequest:
    model: str
    audio_path: Path
    filename: str = "audio"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    response_format: str = "json"  # what the client wants; the API renders it from the result


@dataclass(frozen=True)
class TranscriptSegment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class TranscriptionResult:
    text: str
    language: str | None = None
    duration_seconds: float | None = None
    segments: tuple[TranscriptSegment, ...] = ()
    request_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


class SpeechProvider:
    """Base class. A TTS-only provider implements `synthesize`, an STT-only one `transcribe`."""

    name: str = "base"
    # Longest text one synthesis request may carry; longer input is split by the worker.
    max_input_characters: int | None = None
    # OpenAI voice names (alloy, ash, ballad, coral, echo, fable, nova, onyx, sage,
    # shimmer, verse) -> this provider's voices; unknown names pass through unchanged.
    default_voice_map: Mapping[str, str] = {}
    default_voice: str | None = None

    def __init__(self, deployment: Deployment, http: httpx.Client | None = None) -> None:
        self.deployment = deployment
        self._own_http = http is None
        self.http = http or httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0))

    def resolve_voice(self, voice: str | None) -> str | None:
        """The provider's voice for `voice`: the deployment's `voice_map` first (config
        `litellm_params.voice_map`), then the provider's default map, else as given."""
        overrides: Mapping[str, str] = self.deployment.params.get("voice_map") or {}
        if not voice:
            return overrides.get("default") or self.default_voice
        return overrides.get(voice) or self.default_voice_map.get(voice) or voice

    def max_characters(self) -> int | None:
        """The per-request text limit: `model_info.max_input_characters`, else the class's."""
        configured = self.deployment.model_info.get("max_input_characters")
        return int(configured) if configured else self.max_input_characters

    def warm_up(self) -> None:
        """Load what the first call would otherwise wait for (a worker calls this at start)."""

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        raise UnsupportedFeature(f"{self.name} does not do text-to-speech")

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        raise UnsupportedFeature(f"{self.name} does not do speech-to-text")

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __enter__(self) -> SpeechProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
