"""What a model does: speak or transcribe, in LiteLLM's words (`model_info.mode`). A
config that does not say is read from the model's name, the same way everywhere (the
registry lists models by it, pricing bills by it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["SPEECH", "TRANSCRIPTION", "MODES", "deployment_mode"]

SPEECH = "audio_speech"
TRANSCRIPTION = "audio_transcription"
MODES = (SPEECH, TRANSCRIPTION)

# Words in a model's name that mark a transcription model (whisper-1, gpt-4o-transcribe,
# Azure's stt, ElevenLabs' scribe_v1, Deepgram's nova-3).
_TRANSCRIPTION_WORDS = ("whisper", "transcribe", "stt", "scribe", "nova")


class Configured(Protocol):
    """A deployment, as far as its mode goes."""

    @property
    def model(self) -> str: ...
    @property
    def model_info(self) -> Mapping[str, Any]: ...


def deployment_mode(deployment: Configured) -> str:
    """`model_info["mode"]` when it is one of MODES, else a guess from the model's name."""
    mode = deployment.model_info.get("mode")
    if mode in MODES:
        return str(mode)
    name = deployment.model.lower()
    return TRANSCRIPTION if any(word in name for word in _TRANSCRIPTION_WORDS) else SPEECH
