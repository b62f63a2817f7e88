"""Idempotency-Key: a retried submit returns the first job; a reused key with another body
is a conflict; concurrent duplicates make one job."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fakes import tone_pcm
from tests.integration.conftest import Stack
from worker.audio import encode_pcm

pytestmark = pytest.mark.integration


def test_same_key_same_body_returns_the_first_job(stack: Stack) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"model": "tts-1", "input": "Only one job, please."}
    with stack.client() as client:
        first = client.post("/v1/jobs/speech", json=body, headers=key)
        again = client.post("/v1/jobs/speech", json=body, headers=key)
        other = client.post("/v1/jobs/speech", json={**body, "input": "Another."}, headers=key)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"


def test_keys_are_per_tenant(stack: Stack) -> None:
    header = {"Idempotency-Key": "shared-" + uuid.uuid4().hex}
    body = {"model": "tts-1", "input": "Mine."}
    alice, bob = stack.make_key(name="idem-a"), stack.make_key(name="idem-b")
    with stack.client(alice["key"]) as client:
        a = client.post("/v1/jobs/speech", json=body, headers=header)
    with stack.client(bob["key"]) as client:
        b = client.post("/v1/jobs/speech", json=body, headers=header)
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_concurrent_duplicates_make_one_job(stack: Stack) -> None:
    header = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"model": "tts-1", "input": "Raced."}

    def submit(_: int) -> tuple[int, str]:
        with stack.client() as client:
            response = client.post("/v1/jobs/speech", json=body, headers=header)
            return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, range(8)))
    assert len({job_id for _, job_id in results}) == 1
    assert sorted(status for status, _ in results) == [200] * 7 + [202]


def test_transcription_key_covers_the_file(stack: Stack) -> None:
    header = {"Idempotency-Key": str(uuid.uuid4())}
    wav = encode_pcm(tone_pcm(1.0), 24000, "wav")
    other_wav = encode_pcm(tone_pcm(1.5), 24000, "wav")
    with stack.client() as client:

        def send(audio: bytes):  # type: ignore[no-untyped-def]
            return client.post(
                "/v1/jobs/transcriptions",
                data={"model": "whisper-1"},
                files={"file": ("a.wav", audio, "audio/wav")},
                headers=header,
            )

        first, again, changed = send(wav), send(wav), send(other_wav)
    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert changed.status_code == 409
