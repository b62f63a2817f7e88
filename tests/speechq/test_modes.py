"""What a model does, decided in one place for the registry and for pricing."""

from __future__ import annotations

import pytest

from speechq import pricing, registry
from speechq.modes import SPEECH, TRANSCRIPTION, deployment_mode
from worker.providers.base import Deployment


@pytest.mark.parametrize(
    ("model", "model_info", "mode"),
    [
        ("tts-1", {}, SPEECH),
        ("whisper-1", {}, TRANSCRIPTION),
        ("gpt-4o-mini-transcribe", {}, TRANSCRIPTION),
        ("nova-3", {}, TRANSCRIPTION),
        ("scribe_v1", {}, TRANSCRIPTION),
        ("whisper-1", {"mode": SPEECH}, SPEECH),  # the config wins over the name
        ("my-model", {"mode": TRANSCRIPTION}, TRANSCRIPTION),
        ("my-model", {"mode": "chat"}, SPEECH),  # not an audio mode: read from the name
    ],
)
def test_deployment_mode(model: str, model_info: dict[str, str], mode: str) -> None:
    assert deployment_mode(Deployment("m", "openai", model, model_info=model_info)) == mode


def test_registry_and_pricing_share_the_vocabulary() -> None:
    assert registry.SPEECH is pricing.SPEECH is SPEECH
    assert registry.TRANSCRIPTION is pricing.TRANSCRIPTION is TRANSCRIPTION
