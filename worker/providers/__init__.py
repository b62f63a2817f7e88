"""The provider registry: config prefix (`openai/…`) -> provider class."""

from __future__ import annotations

import threading

from worker.providers.aws_polly import PollyProvider
from worker.providers.azure import AzureOpenAIProvider
from worker.providers.azure_ai_speech import AzureSpeechProvider
from worker.providers.base import Deployment, SpeechProvider
from worker.providers.deepgram import DeepgramProvider
from worker.providers.elevenlabs import ElevenLabsProvider
from worker.providers.gemini import GeminiProvider
from worker.providers.local import LocalProvider
from worker.providers.openai import OpenAIProvider
from worker.providers.vertex_ai import VertexAIProvider

__all__ = ["PROVIDERS", "get_provider", "close_providers"]

PROVIDERS: dict[str, type[SpeechProvider]] = {
    "aws_polly": PollyProvider,
    "azure": AzureOpenAIProvider,
    "azure_ai_speech": AzureSpeechProvider,
    "deepgram": DeepgramProvider,
    "elevenlabs": ElevenLabsProvider,
    "gemini": GeminiProvider,
    "local": LocalProvider,
    "openai": OpenAIProvider,
    "vertex_ai": VertexAIProvider,
}

_instances: dict[str, SpeechProvider] = {}
_lock = threading.Lock()


def get_provider(deployment: Deployment) -> SpeechProvider:
    """One instance per deployment per process: HTTP pools and local engines are reused."""
    cls = PROVIDERS.get(deployment.provider)
    if cls is None:
        known = ", ".join(sorted(PROVIDERS))
        raise KeyError(f"unknown provider {deployment.provider!r} (known: {known})")
    with _lock:
        provider = _instances.get(deployment.id)
        if provider is None:
            provider = _instances[deployment.id] = cls(deployment)
        return provider


def close_providers() -> None:
    with _lock:
        for provider in _instances.values():
            provider.close()
        _instances.clear()
