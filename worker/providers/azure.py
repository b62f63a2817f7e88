"""Azure OpenAI's audio API: OpenAI's wire format behind a per-deployment URL.

    POST {api_base}/openai/deployments/{deployment}/audio/speech?api-version=...
    POST {api_base}/openai/deployments/{deployment}/audio/transcriptions?api-version=...

Config: `model: azure/<deployment-name>`, `api_base: https://<resource>.openai.azure.com`,
`api_key` (sent as `api-key`) or `azure_ad_token` (sent as `Authorization: Bearer`),
optional `api_version`. Bodies, answers and error envelopes are OpenAI's, so everything but
the URL and the auth header is inherited from `OpenAIProvider`.

Docs followed:
- Data-plane reference, GA 2024-10-21 (has transcriptions and translations, but no speech):
  https://learn.microsoft.com/azure/ai-foundry/openai/reference
- Preview reference, "Speech - Create" (`input` max 4,096 characters; voices alloy, echo,
  fable, onyx, nova, shimmer; speed 0.25-4.0) and "Transcriptions - Create":
  https://learn.microsoft.com/azure/ai-foundry/openai/reference-preview
- Text-to-speech quickstart (REST, `api-key` header, api-version=2025-04-01-preview):
  https://learn.microsoft.com/azure/ai-foundry/openai/text-to-speech-quickstart
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from worker.providers.base import Deployment
from worker.providers.errors import UnsupportedFeature
from worker.providers.openai import OpenAIProvider

__all__ = ["DEFAULT_API_VERSION", "AzureOpenAIProvider"]

# The GA version 2024-10-21 has no /audio/speech; this preview is the one Microsoft's
# text-to-speech quickstart uses, and it serves /audio/transcriptions too.
DEFAULT_API_VERSION = "2025-04-01-preview"


class AzureOpenAIProvider(OpenAIProvider):
    """OpenAI's TTS and STT models deployed in an Azure OpenAI (AI Foundry) resource."""

    name = "azure"
    # "Speech - Create": "The maximum length is 4,096 characters."
    max_input_characters = 4096
    default_voice = "alloy"  # OpenAI voice names pass through unchanged

    def __init__(self, deployment: Deployment, http: httpx.Client | None = None) -> None:
        # Checked before the base class opens an HTTP client that nothing would close.
        if not deployment.api_base:
            raise UnsupportedFeature(
                f"azure: deployment {deployment.id or deployment.model_name!r} has no api_base "
                "(https://<resource>.openai.azure.com)"
            )
        super().__init__(deployment, http)
        self.api_version = str(deployment.params.get("api_version") or DEFAULT_API_VERSION)
        # The deployment, not the body's `model`, decides which model Azure runs.
        deployment_path = quote(deployment.model, safe="")
        self.api_base = f"{deployment.api_base.rstrip('/')}/openai/deployments/{deployment_path}"

    def _post(
        self,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        # The base class builds f"{api_base}{path}": the query rides on the path.
        query = urlencode({"api-version": self.api_version})
        return super()._post(f"{path}?{query}", json=json, data=data, files=files)

    def _headers(self) -> dict[str, str]:
        # An Entra ID token wins over the key; never send both.
        token = self.deployment.params.get("azure_ad_token")
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self.deployment.api_key:
            return {"api-key": self.deployment.api_key}
        return {}

    def _secrets(self) -> list[str | None]:
        token = self.deployment.params.get("azure_ad_token")
        return [*super()._secrets(), str(token) if token else None]
