"""Audiobooks end to end with real processes and the real local Piper voice: a book in,
an M4B with chapter markers and per-chapter files out; cancel, retry, re-render, and a
worker killed in the middle of a book."""

from __future__ import annotations

import io
import json
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from sqlalchemy import func, select

from storage.audiobook_models import AudiobookSegment
from storage.models import UsageRecord
from tests.fakes import FakeOpenAI, ScriptedOpenAI
from tests.integration.conftest import Stack
from worker.audiobook.assemble import TARGET_LUFS, LoudnessMeter, read_chapter_markers

pytestmark = pytest.mark.integration

THREE_CHAPTERS = [
    {"title": "The Harbor", "text": "The boats came in at dawn.\n\nGulls followed them home."},
    {"title": "The Market", "text": "Fish were sold by noon. The square was loud."},
    {"title": "The Evening", "text": "Lamps were lit along the quay.\n\nThen it was quiet."},
]


def submit_chapters(
    client: httpx.Client, title: str, model: str, chapters: list[dict[str, str]]
) -> dict[str, Any]:
    """A book of these chapters, titles not read aloud."""
    created = client.post(
        "/v1/audiobooks",
        json={"title": title, "model": model, "chapters": chapters, "read_titles": False},
    )
    assert created.status_code == 202, created.text
    return dict(created.json())


def wait_until_running(client: httpx.Client, book_id: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get(f"/v1/audiobooks/{book_id}").json()["status"] != "running":
        assert time.monotonic() < deadline, "the book never started"
        time.sleep(0.1)


def wait_for_a_segment_at_the_provider(stack: Stack, book_id: str, timeout_s: float = 30) -> None:
    """A segment is `running` from its claim to its end; the slow fake holds it for seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        with stack.db_session() as session:
            running = session.scalar(
                select(func.count()).where(
                    AudiobookSegment.book_id == book_id, AudiobookSegment.status == "running"
                )
            )
        if running:
            return
        assert time.monotonic() < deadline, "no segment started"
        time.sleep(0.1)


def billed(stack: Stack, book_id: str) -> int:
    with stack.db_session() as session:
        return int(
            session.scalar(select(func.count()).where(UsageRecord.audiobook_id == book_id)) or 0
        )


def test_three_chapter_book_becomes_an_m4b_with_chapter_markers(
    stack: Stack, tmp_path: Path
) -> None:
    with stack.client() as client:
        created = client.post(
            "/v1/audiobooks",
            json={"title": "Harbor Days", "model": "local-tts", "chapters": THREE_CHAPTERS},
        )
        assert created.status_code == 202, created.text
        book = stack.wait_for_book(client, created.json()["id"])
        assert book["status"] == "succeeded", book
        progress = book["progress"]
        assert progress["chapters_total"] == progress["chapters_done"] == 3
        assert progress["segments_done"] == progress["segments_total"] == 3 + 5
        assert progress["segments_failed"] == 0
        assert [c["title"] for c in book["chapters"]] == [c["title"] for c in THREE_CHAPTERS]
        assert book["result"]["content_type"] == "audio/mp4"
        listed = client.get("/v1/audiobooks", params={"status": "succeeded", "limit": 100})
        assert [b for b in listed.json()["data"] if b["id"] == book["id"]] == [book]
        m4b = client.get(book["result"]["content_url"])
        assert m4b.status_code == 200
        assert m4b.headers["content-type"] == "audio/mp4"
        path = tmp_path / "book.m4b"
        path.write_bytes(m4b.content)
        markers = read_chapter_markers(path)
        assert [title for title, _, _ in markers] == [c["title"] for c in THREE_CHAPTERS]
        starts = [start for _, start, _ in markers]
        assert starts[0] == 0 and starts == sorted(starts) and len(set(starts)) == 3
        # Each chapter lasts its own audio plus the default 2 s pause between chapters.
        for number in range(2):
            gap = starts[number + 1] - starts[number]
            assert abs(gap - (book["chapters"][number]["duration_seconds"] + 2.0)) < 0.1
        with av.open(str(path)) as container:
            assert container.streams.audio[0].codec_context.name == "aac"
            assert container.metadata.get("title") == "Harbor Days"
            total = float(container.duration or 0) / av.time_base
        assert abs(total - book["result"]["duration_seconds"]) < 0.5
        assert total > sum(c["duration_seconds"] for c in book["chapters"]) - 0.5
        for chapter in book["chapters"]:
            assert chapter["status"] == "succeeded"
            audio = client.get(chapter["content_url"])
            assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
            with av.open(io.BytesIO(audio.content)) as container:
                frames = list(container.decode(audio=0))
            decoded = sum(f.samples for f in frames) / frames[0].sample_rate
            assert abs(decoded - chapter["duration_seconds"]) < 0.2
            # Every chapter normalized to the same loudness.
            meter = LoudnessMeter(frames[0].sample_rate)
            for frame in frames:
                meter.add(frame.to_ndarray().mean(axis=0).astype("float64"))
            loudness = meter.integrated_lufs()
            assert loudness is not None and abs(loudness - TARGET_LUFS) < 1.0
        # One usage row per synthesized segment, and the book's usage is their sum.
        assert billed(stack, book["id"]) == 8
        assert book["usage"]["characters"] == sum(
            len(c["title"]) + len(c["text"].replace("\n\n", "")) for c in THREE_CHAPTERS
        )


def _epub_bytes() -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("speechq-test")
    book.set_title("A Small Epub")
    book.set_language("en")
    items = []
    for number, text in enumerate(["It began with rain.", "It ended with sun."], start=1):
        item = epub.EpubHtml(title=f"Part {number}", file_name=f"c{number}.xhtml", lang="en")
        item.content = f"<html><body><h1>Part {number}</h1><p>{text}</p></body></html>"
        book.add_item(item)
        items.append(item)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    out = io.BytesIO()
    epub.write_epub(out, book)
    return out.getvalue()


def test_an_uploaded_epub_is_read_in_spine_order(stack: Stack) -> None:
    with stack.client() as client:
        files = {"file": ("small.epub", _epub_bytes(), "application/epub+zip")}
        quoted = client.post("/v1/audiobooks/quote", data={"model": "local-tts"}, files=files)
        assert quoted.status_code == 200, quoted.text
        assert quoted.json()["chapters"] == 2
        created = client.post(
            "/v1/audiobooks",
            data={"model": "local-tts", "read_titles": "false", "response_format": "opus"},
            files=files,
        )
        assert created.status_code == 202, created.text
        book = stack.wait_for_book(client, created.json()["id"])
    assert book["status"] == "succeeded", book
    assert book["title"] == "A Small Epub"
    assert [c["title"] for c in book["chapters"]] == ["Part 1", "Part 2"]
    assert book["progress"]["segments_total"] == 2  # titles not read


def test_quote_and_refusals(stack: Stack) -> None:
    text = "CHAPTER ONE\n\nIt was cold.\n\nCHAPTER TWO\n\nIt was warm.\n\n# Finale\n\nThe end."
    with stack.client() as client:
        quote = client.post(
            "/v1/audiobooks/quote", json={"title": "T", "model": "openai-tts", "text": text}
        )
        assert quote.status_code == 200, quote.text
        body = quote.json()
        assert body["chapters"] == 3 and body["segments"] == 6
        assert body["estimated_cost_usd"] > 0 and body["estimated_audio_seconds"] > 0
        refused = client.post(
            "/v1/audiobooks",
            json={"title": "T", "model": "openai-tts", "text": text, "max_cost_usd": 0.0000001},
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert client.get("/v1/audiobooks").json()["data"] == [] or all(
            b["title"] != "T" for b in client.get("/v1/audiobooks").json()["data"]
        )
        pdf = client.post(
            "/v1/audiobooks",
            data={"model": "local-tts"},
            files={"file": ("book.pdf", b"%PDF-1.4 not a book we read", "application/pdf")},
        )
        assert pdf.status_code == 415 and pdf.json()["error"]["code"] == "unsupported_format"
        both = client.post(
            "/v1/audiobooks", json={"model": "local-tts", "text": "x", "chapters": THREE_CHAPTERS}
        )
        assert both.status_code == 400 and both.json()["error"]["code"] == "invalid_request"
        unknown = client.post("/v1/audiobooks", json={"model": "nope", "text": "Hello."})
        assert unknown.status_code == 404


def test_cancel_stops_a_book(stack: Stack) -> None:
    chapters = [{"title": "", "text": f"Slow sentence number {n}."} for n in range(6)]
    with stack.client() as client:
        book = submit_chapters(client, "Slow", "slow-tts", chapters)
        canceled = client.post(f"/v1/audiobooks/{book['id']}/cancel")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        again = client.post(f"/v1/audiobooks/{book['id']}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
        content = client.get(f"/v1/audiobooks/{book['id']}/content")
        assert content.status_code == 409
    time.sleep(8)  # any segment already at the provider ends; nothing more starts
    with stack.db_session() as session:
        statuses = session.scalars(
            select(AudiobookSegment.status).where(AudiobookSegment.book_id == book["id"])
        ).all()
    assert "succeeded" not in statuses or statuses.count("succeeded") <= 4
    assert not {"queued", "running", "pending"} & set(statuses)


def test_retry_runs_only_the_failed_segments(stack: Stack, scripted_openai: ScriptedOpenAI) -> None:
    marker = f"{stack.kind}-{time.monotonic_ns()}"
    chapters = [
        {"title": "", "text": f"Fine words {marker}."},
        {"title": "", "text": f"Unlucky words {marker}."},
    ]
    with stack.client() as client:
        first = submit_chapters(client, "R", "down-until-healed-tts", chapters)
        failed = stack.wait_for_book(client, first["id"])
        assert failed["status"] == "failed", failed
        assert failed["error"]["code"] == "provider_error"
        assert failed["progress"]["segments_failed"] == 2
        assert billed(stack, first["id"]) == 0
        calls_before = [scripted_openai.count("down-until-healed", c["text"]) for c in chapters]
        assert all(calls_before)
        for chapter in chapters:
            scripted_openai.heal("down-until-healed", chapter["text"])
        retried = client.post(f"/v1/audiobooks/{first['id']}/retry")
        assert retried.status_code == 200, retried.text
        done = stack.wait_for_book(client, first["id"])
        assert done["status"] == "succeeded", done
        assert billed(stack, first["id"]) == 2
        calls_after = [scripted_openai.count("down-until-healed", c["text"]) for c in chapters]
        assert calls_after == [n + 1 for n in calls_before]  # one new call per failed segment
        again = client.post(f"/v1/audiobooks/{first['id']}/retry")
        assert again.status_code == 409


def test_a_rate_limited_segment_waits_and_goes_again(
    stack: Stack, scripted_openai: ScriptedOpenAI
) -> None:
    """429s past the router's retries: the segment waits and goes again; it is not failed."""
    marker = f"{stack.kind}-{time.monotonic_ns()}"
    chapters = [{"title": "", "text": f"Busy provider, part {n}, {marker}."} for n in range(2)]
    with stack.client() as client:
        book = submit_chapters(client, "Busy", "rate-limited-longer-tts", chapters)
        done = stack.wait_for_book(client, book["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["segments_failed"] == 0
    # Three refused calls, then the audio, for each segment (over two or more runs: a
    # deployment cooled down by the other segment's 429s cuts a run's tries short).
    calls = [scripted_openai.count("rate-limited-longer", c["text"]) for c in chapters]
    assert calls == [4, 4]
    with stack.db_session() as session:
        rows = session.execute(
            select(AudiobookSegment.runs, AudiobookSegment.deferrals, AudiobookSegment.losses)
            .where(AudiobookSegment.book_id == book["id"])
            .order_by(AudiobookSegment.id)
        ).all()
    for runs, deferrals, losses in rows:
        assert deferrals >= 1 and runs == deferrals + 1 and losses == 0
    assert billed(stack, book["id"]) == 2


def test_rerender_one_chapter_pays_only_for_what_changed(stack: Stack, tmp_path: Path) -> None:
    marker = f"{stack.kind} {time.monotonic_ns()}"
    chapters = [
        {"title": "One", "text": f"First chapter text {marker}."},
        {"title": "Two", "text": f"Second chapter text {marker}."},
    ]
    with stack.client() as client:
        book = client.post(
            "/v1/audiobooks", json={"title": "Re", "model": "local-tts", "chapters": chapters}
        ).json()
        done = stack.wait_for_book(client, book["id"])
        assert done["status"] == "succeeded", done
        assert billed(stack, book["id"]) == 4
        old_chapter = client.get(done["chapters"][1]["content_url"]).content
        busy = client.post(f"/v1/audiobooks/{book['id']}/chapters/9/rerender", json={})
        assert busy.status_code == 404
        rerender = client.post(
            f"/v1/audiobooks/{book['id']}/chapters/1/rerender",
            json={"text": f"Second chapter, better told {marker}."},
        )
        assert rerender.status_code == 200, rerender.text
        assert rerender.json()["status"] == "running"
        again = stack.wait_for_book(client, book["id"])
        assert again["status"] == "succeeded", again
        # The title segment came from the cache; only the new text was synthesized.
        assert billed(stack, book["id"]) == 5
        new_chapter = client.get(again["chapters"][1]["content_url"]).content
        assert new_chapter != old_chapter
        assert client.get(again["chapters"][0]["content_url"]).status_code == 200
        path = tmp_path / "re.m4b"
        path.write_bytes(client.get(again["result"]["content_url"]).content)
        assert [t for t, _, _ in read_chapter_markers(path)] == ["One", "Two"]
        # A re-render with only a new voice re-plans the stored text.
        voiced = client.post(
            f"/v1/audiobooks/{book['id']}/chapters/0/rerender", json={"voice": "alloy"}
        )
        assert voiced.status_code == 200, voiced.text
        assert stack.wait_for_book(client, book["id"])["status"] == "succeeded"


def test_a_worker_killed_mid_book_finishes_it_without_billing_twice(stack: Stack) -> None:
    chapters = [
        {"title": "", "text": f"Survive the crash, part {n}, {stack.kind}."} for n in range(4)
    ]
    with stack.client() as client:
        book = submit_chapters(client, "K", "slow-tts", chapters)
        wait_until_running(client, book["id"])
        wait_for_a_segment_at_the_provider(stack, book["id"])
        for name in [n for n in stack.processes if n.startswith("worker")]:
            stack.stop(name, signal.SIGKILL)
        stack.start(
            "worker-after-book-kill",
            "worker",
            "--concurrency",
            "2",
            "--hostname",
            f"wb-{stack.kind}@%h",
        )
        done = stack.wait_for_book(client, book["id"], timeout_s=150)
    assert done["status"] == "succeeded", done
    with stack.db_session() as session:
        runs = session.scalars(
            select(AudiobookSegment.runs).where(AudiobookSegment.book_id == book["id"])
        ).all()
        keys = session.scalars(
            select(UsageRecord.call_key).where(UsageRecord.audiobook_id == book["id"])
        ).all()
    assert max(runs) >= 2  # some segment was taken back from the killed worker
    assert len(keys) == len(set(keys)) == 4


def test_a_big_book_does_not_hold_up_a_single_job(stack: Stack) -> None:
    chapters = [{"title": "", "text": f"Slow part {n}, {stack.kind}."} for n in range(8)]
    with stack.client() as client:
        book = submit_chapters(client, "Big", "slow-tts", chapters)
        wait_until_running(client, book["id"])
        job = client.post("/v1/jobs/speech", json={"model": "local-tts", "input": "Me first."})
        done = stack.wait_for_job(client, job.json()["id"], timeout_s=60)
        meanwhile = client.get(f"/v1/audiobooks/{book['id']}").json()
        client.post(f"/v1/audiobooks/{book['id']}/cancel")
    assert done["status"] == "succeeded"
    # The job did not wait for the book: most of the book was still to be made.
    assert meanwhile["status"] == "running"
    assert meanwhile["progress"]["segments_done"] <= 4


def test_chosen_chapters_voices_and_a_markdown_upload(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    marker = f"{stack.kind}-{time.monotonic_ns()}"
    chapters = [
        {"title": "", "text": f"Zero {marker}."},
        {"title": "", "text": f"One {marker}."},
        {"title": "", "text": f"Two {marker}.", "voice": "echo"},
    ]
    with stack.client() as client:
        quote = client.post(
            "/v1/audiobooks/quote",
            json={"model": "openai-tts", "chapters": chapters, "include_chapters": [0, 2]},
        ).json()
        assert quote["chapters"] == 2 and quote["segments"] == 2
        bad = client.post(
            "/v1/audiobooks/quote",
            json={"model": "openai-tts", "chapters": chapters, "include_chapters": [7]},
        )
        assert bad.status_code == 400 and "7" in bad.json()["error"]["message"]
        book = client.post(
            "/v1/audiobooks",
            json={
                "title": "Voices",
                "model": "openai-tts",
                "voice": "alloy",
                "chapters": chapters,
                "chapter_voices": {"1": "nova"},
                "read_titles": False,
            },
        ).json()
        done = stack.wait_for_book(client, book["id"])
        assert done["status"] == "succeeded", done
        assert [c["voice"] for c in done["chapters"]] == ["alloy", "nova", "echo"]
        markdown = (
            b"# Sea Book\n\nA title page.\n\n## Waves\n\nThey rise.\n\n## Tides\n\nThey turn."
        )
        quoted = client.post(
            "/v1/audiobooks/quote",
            data={"model": "local-tts"},
            files={"file": ("sea.md", markdown, "text/markdown")},
        )
        assert quoted.status_code == 200, quoted.text
        assert quoted.json()["chapters"] == 2
    # The provider was asked for each chapter's own voice, in lossless pcm.
    sent = {}
    for request in fake_openai.requests:
        body = json.loads(request.body)
        if marker in body.get("input", ""):
            sent[body["input"].split()[0]] = (body["voice"], body["response_format"])
    assert sent == {"Zero": ("alloy", "pcm"), "One": ("nova", "pcm"), "Two": ("echo", "pcm")}


def test_idempotency_key_returns_the_first_book(stack: Stack) -> None:
    key = f"book-{stack.kind}-{time.monotonic_ns()}"
    body = {"title": "Once", "model": "local-tts", "text": "Only one book, please."}
    files = {"file": ("once.txt", b"Only one uploaded book, please.", "text/plain")}
    with stack.client() as client:
        first = client.post("/v1/audiobooks", json=body, headers={"Idempotency-Key": key})
        again = client.post("/v1/audiobooks", json=body, headers={"Idempotency-Key": key})
        other = client.post(
            "/v1/audiobooks", json={**body, "title": "Twice"}, headers={"Idempotency-Key": key}
        )
        upload_key = {"Idempotency-Key": key + "-file"}
        uploaded = client.post(
            "/v1/audiobooks", data={"model": "local-tts"}, files=files, headers=upload_key
        )
        reuploaded = client.post(
            "/v1/audiobooks", data={"model": "local-tts"}, files=files, headers=upload_key
        )
        changed = client.post(
            "/v1/audiobooks",
            data={"model": "local-tts"},
            files={"file": ("once.txt", b"Another text.", "text/plain")},
            headers=upload_key,
        )
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    assert uploaded.status_code == 202 and reuploaded.status_code == 200
    assert reuploaded.json()["id"] == uploaded.json()["id"]
    assert changed.status_code == 409


def test_an_expired_book_is_deleted_and_answers_410(stack: Stack) -> None:
    from sqlalchemy import update

    from storage.audiobook_models import Audiobook
    from storage.models import utcnow

    with stack.client() as client:
        book = client.post(
            "/v1/audiobooks",
            json={"title": "Brief", "model": "local-tts", "text": f"Soon gone, {stack.kind}."},
        ).json()
        done = stack.wait_for_book(client, book["id"])
        assert done["status"] == "succeeded", done
        prefix = f"tenants/admin/audiobooks/{book['id']}"
        assert stack.stored_keys(prefix)
        with stack.db_session() as session:
            session.execute(
                update(Audiobook)
                .where(Audiobook.id == book["id"])
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
            session.commit()
        deadline = time.monotonic() + 40  # the next sweep (every 15 s) deletes it
        while client.get(done["result"]["content_url"]).status_code != 410:
            assert time.monotonic() < deadline, "the book was not expired"
            time.sleep(1)
        chapter = client.get(done["chapters"][0]["content_url"])
        retry = client.post(f"/v1/audiobooks/{book['id']}/chapters/0/rerender", json={})
    assert chapter.status_code == 410 and retry.status_code == 410
    assert retry.json()["error"]["code"] == "expired"
    assert stack.stored_keys(prefix) == []
