"""The pipeline end to end on both stacks, with a real Celery worker."""

from __future__ import annotations

import json
import re
import time

import jiwer
import pytest
from sqlalchemy import func, select

from speechq.settings import Settings
from storage import queries
from storage.models import Job, UsageRecord
from tests.fakes import FAKE_OPENAI_KEY, SLOW_MODEL, FakeOpenAI
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

SENTENCE = "The quick brown fox jumped over the lazy dog."


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def test_speech_then_transcription_round_trip(stack: Stack) -> None:
    with stack.client() as client:
        submitted = client.post("/v1/jobs/speech", json={"model": "local-tts", "input": SENTENCE})
        assert submitted.status_code == 202, submitted.text
        assert submitted.json()["status"] == "queued"
        speech = stack.wait_for_job(client, submitted.json()["id"])
        assert speech["status"] == "succeeded", speech
        assert speech["result"]["content_type"] == "audio/mpeg"
        assert 1.0 < speech["result"]["duration_seconds"] < 8.0
        assert speech["usage"]["characters"] == len(SENTENCE)
        assert [a["status"] for a in speech["attempts"]] == ["ok"]
        mp3 = client.get(speech["result"]["content_url"])
        assert mp3.status_code == 200
        assert mp3.headers["content-type"] == "audio/mpeg"
        assert len(mp3.content) == speech["result"]["bytes"]

        files = {"file": ("speech.mp3", mp3.content, "audio/mpeg")}
        submitted = client.post("/v1/jobs/transcriptions", data={"model": "local-stt"}, files=files)
        assert submitted.status_code == 202, submitted.text
        transcription = stack.wait_for_job(client, submitted.json()["id"])
        assert transcription["status"] == "succeeded", transcription
        text = transcription["result"]["text"]
        assert jiwer.wer(_normalise(SENTENCE), _normalise(text)) <= 0.15, text
        assert transcription["usage"]["audio_seconds"] == pytest.approx(
            speech["result"]["duration_seconds"], abs=0.2
        )
        content = client.get(transcription["result"]["content_url"])
        assert content.json() == {"text": text}


def test_transcript_content_in_every_format(stack: Stack) -> None:
    with stack.client() as client:
        speech = stack.wait_for_job(
            client,
            client.post(
                "/v1/jobs/speech",
                json={"model": "tts-1", "input": SENTENCE, "response_format": "wav"},
            ).json()["id"],
        )
        wav = client.get(speech["result"]["content_url"]).content
        assert wav[:4] == b"RIFF"
        bodies = {}
        for fmt in ("json", "text", "srt", "vtt", "verbose_json"):
            job = client.post(
                "/v1/jobs/transcriptions",
                data={"model": "whisper-1", "response_format": fmt},
                files={"file": ("a.wav", wav, "audio/wav")},
            ).json()
            done = stack.wait_for_job(client, job["id"])
            assert done["status"] == "succeeded", done
            response = client.get(done["result"]["content_url"])
            assert response.status_code == 200
            assert len(response.content) == done["result"]["bytes"]
            bodies[fmt] = response
    assert "fox" in bodies["json"].json()["text"].lower()
    assert bodies["text"].headers["content-type"].startswith("text/plain")
    assert "fox" in bodies["text"].text.lower()
    assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n", bodies["srt"].text)
    assert bodies["vtt"].text.startswith("WEBVTT\n\n")
    assert re.search(r"00:00:\d\d\.\d{3} --> ", bodies["vtt"].text)
    verbose = bodies["verbose_json"].json()
    assert verbose["language"] == "en"
    assert verbose["duration"] > 1.0
    assert verbose["segments"] and verbose["segments"][0]["start"] >= 0.0


def test_speech_through_openai_provider_is_billed(stack: Stack, fake_openai: FakeOpenAI) -> None:
    with stack.client() as client:
        job = client.post(
            "/v1/jobs/speech",
            json={
                "model": "openai-tts",
                "input": "Hello from the fake.",
                "voice": "nova",
                "response_format": "flac",
                "speed": 1.25,
                "user": "end-user-1",
            },
        ).json()
        done = stack.wait_for_job(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["content_type"] == "audio/flac"
    assert done["usage"]["provider"] == "openai"
    assert done["usage"]["cost_usd"] == pytest.approx(len("Hello from the fake.") * 0.000015)
    sent = [r for r in fake_openai.requests if b"Hello from the fake." in r.body]
    assert sent, "the provider was never called"
    assert sent[-1].path == "/v1/audio/speech"
    assert sent[-1].headers["Authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    assert json.loads(sent[-1].body) == {
        "model": "tts-1",
        "input": "Hello from the fake.",
        "voice": "nova",
        "response_format": "flac",
        "speed": 1.25,
    }


def test_provider_auth_failure_fails_job_with_attempt(stack: Stack) -> None:
    with stack.client() as client:
        job = client.post("/v1/jobs/speech", json={"model": "broken-tts", "input": "x y z"}).json()
        done = stack.wait_for_job(client, job["id"])
        content = client.get(f"/v1/jobs/{job['id']}/content")
    assert done["status"] == "failed"
    assert done["error"]["code"] == "provider_error"
    assert done["usage"] is None
    assert [a["status"] for a in done["attempts"]] == ["error"]
    assert "AuthenticationFailed" in done["attempts"][0]["error"]
    assert "sk-wrong" not in json.dumps(done)
    assert content.status_code == 409
    assert content.json()["error"]["code"] == "job_not_finished"


def test_content_before_success_is_409_and_range_after(stack: Stack) -> None:
    with stack.client() as client:
        job = client.post(
            "/v1/jobs/speech", json={"model": "slow-tts", "input": "Slow one."}
        ).json()
        early = client.get(f"/v1/jobs/{job['id']}/content")
        assert early.status_code == 409
        assert early.json()["error"]["code"] == "job_not_finished"
        done = stack.wait_for_job(client, job["id"])
        assert done["status"] == "succeeded", done
        whole = client.get(f"/v1/jobs/{job['id']}/content").content
        part = client.get(f"/v1/jobs/{job['id']}/content", headers={"Range": "bytes=10-99"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 10-99/{len(whole)}"
        assert part.content == whole[10:100]
        suffix = client.get(f"/v1/jobs/{job['id']}/content", headers={"Range": "bytes=-16"})
        assert suffix.content == whole[-16:]
        bad = client.get(
            f"/v1/jobs/{job['id']}/content", headers={"Range": f"bytes={len(whole) + 5}-"}
        )
        assert bad.status_code == 416
        assert bad.json()["error"]["code"] == "range_not_satisfiable"
        # RFC 9110: a Range that is not one valid byte range is ignored, the whole content
        # goes out.
        for invalid in ("bytes=abc", "bytes=20-10", "items=0-5", "bytes=0-5,10-20", "bytes=-"):
            ignored = client.get(f"/v1/jobs/{job['id']}/content", headers={"Range": invalid})
            assert ignored.status_code == 200, (invalid, ignored.text)
            assert ignored.content == whole


def test_cancel_running_job_is_not_billed(stack: Stack) -> None:
    with stack.client() as client:
        job = client.post(
            "/v1/jobs/speech", json={"model": "slow-tts", "input": "Cancel me."}
        ).json()
        deadline = time.monotonic() + 20
        while client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued":
            assert time.monotonic() < deadline, "job never started"
            time.sleep(0.1)
        canceled = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled"
        time.sleep(SLOW_SECONDS_MARGIN)
        after = client.get(f"/v1/jobs/{job['id']}").json()
        again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert after["status"] == "canceled"
    assert after["usage"] is None and after["result"] is None
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_finished"
    with stack.db_session() as session:
        rows = session.scalar(select(func.count()).where(UsageRecord.job_id == job["id"]))
    assert rows == 0


SLOW_SECONDS_MARGIN = 7.0
assert SLOW_MODEL  # the slow fake deployment backs `slow-tts`


def test_cancel_queued_job(stack: Stack) -> None:
    with stack.db_session() as session:
        # A job row with no message: it stays queued until the sweeper republishes it.
        job = queries.create_job(
            session,
            type="speech",
            model="local-tts",
            tenant="admin",
            key_id=None,
            team=None,
            user=None,
            metadata=None,
            webhook_url=None,
            request={"input": "never"},
        )
        session.commit()
        job_id = job.id
    with stack.client() as client:
        canceled = client.post(f"/v1/jobs/{job_id}/cancel")
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled"
        time.sleep(1)
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled"


def test_sweeper_publishes_a_lost_job(stack: Stack) -> None:
    """The database row is the truth: a job whose publish was lost still runs."""
    with stack.db_session() as session:
        job = queries.create_job(
            session,
            type="speech",
            model="local-tts",
            tenant="admin",
            key_id=None,
            team=None,
            user=None,
            metadata=None,
            webhook_url=None,
            request={"input": "Found by the sweeper.", "response_format": "mp3", "speed": 1.0},
        )
        session.commit()
        job_id = job.id
    with stack.client() as client:
        done = stack.wait_for_job(client, job_id, timeout_s=60)
    assert done["status"] == "succeeded", done
    with stack.db_session() as session:
        row = session.get(Job, job_id)
        assert row is not None and row.runs == 1


def test_redelivered_message_does_not_rerun_finished_job(stack: Stack) -> None:
    with stack.client() as client:
        job = client.post("/v1/jobs/speech", json={"model": "tts-1", "input": "Only once."}).json()
        done = stack.wait_for_job(client, job["id"])
    assert done["status"] == "succeeded"
    from celery import Celery

    app = Celery(broker=_broker_url(stack))
    from worker import sqlite_broker

    sqlite_broker.register()
    app.send_task("speechq.run_speech_job", args=[job["id"]], queue="speech")
    time.sleep(2)
    with stack.client() as client:
        again = client.get(f"/v1/jobs/{job['id']}").json()
    assert again["finished_at"] == done["finished_at"]
    assert len(again["attempts"]) == 1
    with stack.db_session() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.runs == 1
        assert session.scalar(select(func.count()).where(UsageRecord.job_id == job["id"])) == 1


def _broker_url(stack: Stack) -> str:
    return Settings(
        broker_url=stack.env.get("SPEECHQ_BROKER_URL"), data_dir=stack.data_dir
    ).resolved_broker_url


def test_long_input_is_split_synthesized_in_pieces_and_joined(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    sentence = "This sentence is part of a long chapter that no single request can hold. "
    text = sentence * 120  # about 8,900 characters: three pieces at OpenAI's 4,096
    seen_before = len(fake_openai.requests)
    with stack.client() as client:
        job = client.post(
            "/v1/jobs/speech",
            json={"model": "openai-tts", "input": text, "response_format": "wav"},
        ).json()
        done = stack.wait_for_job(client, job["id"])
    assert done["status"] == "succeeded", done
    assert [a["status"] for a in done["attempts"]] == ["ok"] * 3
    sent = [json.loads(r.body)["input"] for r in fake_openai.requests[seen_before:]]
    assert len(sent) == 3
    assert max(len(s) for s in sent) <= 4096
    assert sum(len(s) for s in sent) == len(text)
    assert all(s.startswith("This sentence") and s.endswith("can hold. ") for s in sent)
    # The fake answers one second of tone per piece; the joins add two short pauses.
    assert 3.2 < done["result"]["duration_seconds"] < 4.0
    assert done["usage"]["characters"] == len(text)
    assert done["usage"]["cost_usd"] == pytest.approx(len(text) * 0.000015)
    with stack.db_session() as session:
        rows = session.scalars(select(UsageRecord).where(UsageRecord.job_id == job["id"])).all()
    assert sorted(r.call_key for r in rows) == ["piece-0", "piece-1", "piece-2"]


def test_fallback_model_answers_when_every_deployment_fails(stack: Stack) -> None:
    with stack.client() as client:
        job = client.post(
            "/v1/jobs/speech", json={"model": "fallback-tts", "input": "Caught by the net."}
        ).json()
        done = stack.wait_for_job(client, job["id"])
    assert done["status"] == "succeeded", done
    assert [(a["deployment"], a["status"]) for a in done["attempts"]] == [
        ("fallback-tts#0", "error"),
        ("openai-tts#0", "ok"),
    ]
    # Only the call that worked is billed, at the price of the deployment that made it.
    assert done["usage"]["cost_usd"] == pytest.approx(len("Caught by the net.") * 0.000015)
    with stack.db_session() as session:
        assert session.scalar(select(func.count()).where(UsageRecord.job_id == job["id"])) == 1


def test_expired_result_is_deleted_and_its_content_is_410(stack: Stack) -> None:
    from datetime import timedelta

    from storage.models import utcnow
    from storage.objects import open_object_store
    from worker.retention import expire_results

    with stack.client() as client:
        job = client.post("/v1/jobs/speech", json={"model": "tts-1", "input": "Gone soon."}).json()
        done = stack.wait_for_job(client, job["id"])
        assert client.get(done["result"]["content_url"]).status_code == 200
    settings = Settings(
        database_url=stack.env.get("SPEECHQ_DATABASE_URL"),
        storage_url=stack.env.get("SPEECHQ_STORAGE_URL"),
        s3_endpoint_url=stack.env.get("SPEECHQ_S3_ENDPOINT_URL"),
        data_dir=stack.data_dir,
    )
    store = open_object_store(settings.resolved_storage_url, endpoint_url=settings.s3_endpoint_url)
    with stack.db_session() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.expires_at is not None
        key = row.result["object_key"]  # type: ignore[index]
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    assert store.exists(key)
    assert expire_results(settings.resolved_database_url, store) >= 1
    assert not store.exists(key)
    with stack.client() as client:
        gone = client.get(f"/v1/jobs/{job['id']}/content")
        still = client.get(f"/v1/jobs/{job['id']}").json()
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "expired"
    assert still["status"] == "succeeded"
