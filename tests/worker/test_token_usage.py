"""Token counts reported by token-billed providers reach the result, and so the bill."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from speechq.pricing import cost_usd
from worker.providers.base import Deployment, SynthesisRequest, TranscriptionRequest
from worker.providers.gemini import GeminiProvider
from worker.providers.openai import OpenAIProvider


def test_gemini_reports_usage_metadata_tokens() -> None:
    pcm = b"\x00\x01" * 2400

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "candidates": [
                    {
                        "content": {
                            "parts": [
                                {
                                    "inlineData": {
                                        "mimeType": "audio/L16;codec=pcm;rate=24000",
                                        "data": base64.b64encode(pcm).decode(),
                                    }
                                }
                            ]
                        },
                        "finishReason": "STOP",
                    }
                ],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 250},
            },
        )

    deployment = Deployment("g", "gemini", "gemini-2.5-flash-preview-tts", params={"api_key": "k"})
    provider = GeminiProvider(deployment, http=httpx.Client(transport=httpx.MockTransport(answer)))
    result = provider.synthesize(SynthesisRequest(model=deployment.model, text="Hello there."))
    assert (result.input_tokens, result.output_tokens) == (9, 250)
    by_tokens = cost_usd(deployment, characters=12, input_tokens=9, output_tokens=250)
    assert by_tokens == pytest.approx(9 * 0.5e-6 + 250 * 10e-6)


def test_openai_transcription_reports_token_usage(tmp_path: Path) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF0000WAVE")

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=json.dumps(
                {
                    "text": "hi",
                    "usage": {
                        "type": "tokens",
                        "input_tokens": 14,
                        "output_tokens": 3,
                        "total_tokens": 17,
                    },
                }
            ),
            headers={"content-type": "application/json"},
        )

    deployment = Deployment("t", "openai", "gpt-4o-transcribe", params={"api_key": "k"})
    provider = OpenAIProvider(deployment, http=httpx.Client(transport=httpx.MockTransport(answer)))
    result = provider.transcribe(TranscriptionRequest(model=deployment.model, audio_path=audio))
    assert (result.input_tokens, result.output_tokens) == (14, 3)
