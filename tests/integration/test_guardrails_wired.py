"""Guardrails from the config, applied at submit (input) and in the worker (transcripts)."""

from __future__ import annotations

import json

import pytest

from tests.fakes import FakeOpenAI
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def test_denylist_blocks_with_the_guardrails_name(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/v1/jobs/speech", json={"model": "tts-1", "input": "Say forbiddenword now."}
        )
        audio = client.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "input": "FORBIDDENWORD", "voice": "alloy"},
        )
    for refused in (response, audio):
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["code"] == "guardrail_violation"
        assert error["param"] == "input"
        assert "no-banned-words" in error["message"]


def test_key_opts_into_pii_masking_and_the_masked_text_is_what_is_billed(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    plain = stack.make_key(name="no-pii-guard")
    masked = stack.make_key(name="pii-guard", guardrails=["pii-mask"])
    text = "Write to bob@example.com today."
    with stack.client(plain["key"]) as client:
        unmasked = stack.wait_for_job(
            client,
            client.post("/v1/jobs/speech", json={"model": "openai-tts", "input": text}).json()[
                "id"
            ],
        )
    seen = len(fake_openai.requests)
    with stack.client(masked["key"]) as client:
        done = stack.wait_for_job(
            client,
            client.post("/v1/jobs/speech", json={"model": "openai-tts", "input": text}).json()[
                "id"
            ],
        )
    assert unmasked["usage"]["characters"] == len(text)
    sent = json.loads(fake_openai.requests[seen].body)["input"]
    assert "bob@example.com" not in sent and "[EMAIL]" in sent
    assert done["usage"]["characters"] == len(sent)


def test_unknown_guardrail_name_on_a_key_is_refused(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post("/v1/keys", json={"name": "x", "guardrails": ["nope"]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "guardrails"


def test_output_guardrail_masks_the_transcript(stack: Stack) -> None:
    key = stack.make_key(name="fox-free", guardrails=["no-fox"])
    with stack.client(key["key"]) as client:
        speech = stack.wait_for_job(
            client,
            client.post(
                "/v1/jobs/speech",
                json={
                    "model": "tts-1",
                    "input": "The quick brown fox jumped.",
                    "response_format": "wav",
                },
            ).json()["id"],
        )
        wav = client.get(speech["result"]["content_url"]).content
        job = client.post(
            "/v1/jobs/transcriptions",
            data={"model": "whisper-1", "response_format": "srt"},
            files={"file": ("a.wav", wav, "audio/wav")},
        ).json()
        done = stack.wait_for_job(client, job["id"])
        srt = client.get(done["result"]["content_url"]).text
    assert done["status"] == "succeeded", done
    assert "fox" not in done["result"]["text"].lower()
    assert "[REDACTED]" in done["result"]["text"]
    assert "fox" not in srt.lower() and "[REDACTED]" in srt
