"""What a provider call costs. Built-in prices per model, overridable per deployment
through `model_info` (LiteLLM's field names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.providers.base import Deployment

__all__ = ["Price", "PRICES", "price_for", "cost_usd"]


@dataclass(frozen=True)
class Price:
    input_cost_per_character: float = 0.0
    input_cost_per_second: float = 0.0  # audio in (transcription)
    output_cost_per_second: float = 0.0  # audio out (speech)


# Keyed "provider/model". Characters are every character of the input, as OpenAI bills.
PRICES: dict[str, Price] = {
    # https://platform.openai.com/docs/pricing (TTS $15 / $30 per 1M characters)
    "openai/tts-1": Price(input_cost_per_character=0.000015),
    "openai/tts-1-hd": Price(input_cost_per_character=0.000030),
    # https://platform.openai.com/docs/pricing (Whisper $0.006 per minute)
    "openai/whisper-1": Price(input_cost_per_second=0.0001),
    "openai/gpt-4o-transcribe": Price(input_cost_per_second=0.0001),
    "openai/gpt-4o-mini-transcribe": Price(input_cost_per_second=0.00005),
    # About $0.015 a minute of audio out (token-billed; per-second estimate).
    "openai/gpt-4o-mini-tts": Price(output_cost_per_second=0.00025),
    # Local engines run on our own machine.
    "local/piper": Price(),
    "local/whisper": Price(),
}

_OVERRIDE_FIELDS = ("input_cost_per_character", "input_cost_per_second", "output_cost_per_second")


def price_for(deployment: Deployment) -> Price:
    base = PRICES.get(f"{deployment.provider}/{deployment.model}", Price())
    overrides: Mapping[str, Any] = {
        name: float(deployment.model_info[name])
        for name in _OVERRIDE_FIELDS
        if deployment.model_info.get(name) is not None
    }
    if not overrides:
        return base
    return Price(**{**base.__dict__, **overrides})


def cost_usd(
    deployment: Deployment,
    *,
    characters: int = 0,
    input_audio_seconds: float = 0.0,
    output_audio_seconds: float = 0.0,
) -> float:
    price = price_for(deployment)
    total = (
        characters * price.input_cost_per_character
        + input_audio_seconds * price.input_cost_per_second
        + output_audio_seconds * price.output_cost_per_second
    )
    return round(total, 10)
