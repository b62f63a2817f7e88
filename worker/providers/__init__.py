"""The provider registry: config prefix (`openai/…`) -> provider class.

Classes are named here and imported on first use, so a process that only checks a
config (the API) does not load every provider's SDK and engine.
"""

from __future__ import annotations

import importlib
import threading

from worker.providers.base import Deployment, SpeechProvider

__all__ = ["PROVIDERS", "provider_class", "get_provider"]

PROVIDERS: dict[str, str] = {
    "aws_polly": "worker.providers.aws_polly:PollyProvider",
    "azure": "worker.providers.azure:AzureOpenAIProvider",
    "azure_ai_speech": "worker.providers.azure_ai_speech:AzureSpeechProvider",
    "deepgram": "worker.providers.deepgram:DeepgramProvider",
    "elevenlabs": "worker.providers.elevenlabs:ElevenLabsProvider",
    "gemini": "worker.providers.gemini:GeminiProvider",
    "local": "worker.providers.local:LocalProvider",
    "openai": "worker.providers.openai:OpenAIProvider",
    "vertex_ai": "worker.providers.vertex_ai:VertexAIProvider",
}

_instances: dict[str, SpeechProvider] = {}
_lock = threading.Lock()


def provider_class(name: str) -> type[SpeechProvider]:
    target = PROVIDERS.get(name)
    if target is None:
        raise KeyError(f"unknown provider {name!r} (known: {', '.join(sorted(PROVIDERS))})")
    module, _, attribute = target.partition(":")
    cls: type[SpeechProvider] = getattr(importlib.import_module(module), attribute)
    return cls


def get_provider(deployment: Deployment) -> SpeechProvider:
    """One instance per deployment per process: HTTP pools and local engines are reused."""
    cls = provider_class(deployment.provider)
    with _lock:
        provider = _instances.get(deployment.id)
        if provider is None:
            provider = _instances[deployment.id] = cls(deployment)
        return provider
