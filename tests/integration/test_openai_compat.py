"""The official `openai` package against a running speechq, unchanged but for base_url."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tests.fakes import FakeOpenAI
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

SENTENCE = "The quick brown fox jumped over the lazy dog."


def client_for(stack: Stack, key: str | None = None) -> OpenAI:
    return OpenAI(api_key=key or stack.master_key, base_url=f"{stack.base_url}/v1", max_retries=0)


@pytest.fixture(scope="module")
def fox_mp3(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with client_for(stack) as client:
        response = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE)
        path = tmp_path_factory.mktemp("audio") / "fox.mp3"
        response.write_to_file(path)
    return path


def test_speech_create_returns_audio_with_job_headers(stack: Stack) -> None:
    with client_for(stack) as client:
        raw = client.audio.speech.with_raw_response.create(
            model="tts-1", voice="alloy", input=SENTENCE, response_format="wav"
        )
        audio = raw.content
        job_id = raw.headers["x-speechq-job-id"]
        assert raw.headers["content-type"] == "audio/wav"
        assert float(raw.headers["x-speechq-cost-usd"]) == 0.0
    assert audio[:4] == b"RIFF"
    with stack.client() as api:
        job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert job["result"]["bytes"] == len(audio)


def test_speech_streaming_response(stack: Stack, tmp_path: Path) -> None:
    with (
        client_for(stack) as client,
        client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts",
            voice="coral",
            input="Streaming works.",
            instructions="Speak calmly.",
        ) as response,
    ):
        target = tmp_path / "stream.mp3"
        response.stream_to_file(target)
    assert target.read_bytes()[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")


def test_speech_through_fake_openai_reports_cost(stack: Stack, fake_openai: FakeOpenAI) -> None:
    with client_for(stack) as client:
        raw = client.audio.speech.with_raw_response.create(
            model="openai-tts", voice="echo", input="Paid words.", response_format="opus"
        )
        raw.content  # noqa: B018 - reads the body
    assert float(raw.headers["x-speechq-cost-usd"]) == pytest.approx(len("Paid words.") * 15e-6)
    assert raw.headers["content-type"] == "audio/ogg"


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_transcriptions_in_every_format(stack: Stack, fox_mp3: Path, fmt: str) -> None:
    with client_for(stack) as client, fox_mp3.open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=audio,
            response_format=fmt,  # type: ignore[arg-type]
        )
    if fmt == "json":
        assert "fox" in result.text.lower()
    elif fmt == "verbose_json":
        assert "fox" in result.text.lower()
        assert result.language == "en"
        assert result.duration > 1.0
        assert result.segments and result.segments[0].end > result.segments[0].start
    elif fmt == "text":
        assert isinstance(result, str) and "fox" in result.lower()
    elif fmt == "srt":
        assert re.match(r"1\n00:00:00,000 --> 00:00:\d\d,\d{3}\n", result)
    else:
        assert result.startswith("WEBVTT")


def test_errors_come_back_as_openai_errors(stack: Stack) -> None:
    with client_for(stack) as client:
        with pytest.raises(openai.NotFoundError) as not_found:
            client.audio.speech.create(model="no-such-model", voice="alloy", input="hi")
        assert not_found.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as too_long:
            client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 4097)
        assert too_long.value.code == "input_too_long"
    with client_for(stack, "sq-wrong") as client, pytest.raises(openai.AuthenticationError):
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi")


def test_all_deployments_failing_is_502_with_job_id(stack: Stack) -> None:
    with client_for(stack) as client, pytest.raises(openai.APIStatusError) as failed:
        client.audio.speech.create(model="broken-tts", voice="alloy", input="hi")
    assert failed.value.status_code == 502
    assert failed.value.code == "provider_error"
    assert failed.value.response.headers["x-speechq-job-id"].startswith("job_")


def test_timeout_is_504_and_the_job_goes_on(stack: Stack) -> None:
    """`slow-tts` takes longer than this stack's sync timeout."""
    response = httpx.post(
        f"{stack.base_url}/v1/audio/speech",
        json={"model": "slow-tts", "input": "Too slow.", "voice": "alloy"},
        headers={"Authorization": f"Bearer {stack.master_key}"},
        timeout=30,
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"
    job_id = response.headers["x-speechq-job-id"]
    with stack.client() as api:
        assert stack.wait_for_job(api, job_id)["status"] == "succeeded"
