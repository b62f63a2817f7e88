"""Audiobook state on SQLite and PostgreSQL: dispatch within capacity, per-deployment
slots, claims fenced by run number, and the sweeper's reclaim."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from speechq.registry import parse_config
from speechq.settings import Settings
from storage import audiobook_queries as books
from storage.audiobook_models import Audiobook, AudiobookChapter, AudiobookSegment
from storage.db import get_sessionmaker
from storage.migrate import upgrade
from storage.models import UsageRecord, utcnow
from tests.services import temporary_postgres_database
from worker.audiobook.dispatch import AUDIOBOOK_QUEUE, capacity, dispatch

CONFIG = {
    "model_list": [
        {
            "model_name": "book-tts",
            "litellm_params": {
                "model": "openai/tts-1",
                "api_key": "sk-a",
                "audiobook_concurrency": 2,
            },
        },
        {"model_name": "book-tts", "litellm_params": {"model": "openai/tts-1", "api_key": "sk-b"}},
    ]
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/books.db"
        upgrade(url)
        yield url
    else:
        with temporary_postgres_database() as url:
            upgrade(url)
            yield url
            get_sessionmaker(url).kw["bind"].dispose()


def _book(session: Session, segments: int, book_id: str = "book_a") -> None:
    book = Audiobook(
        id=book_id,
        status=books.QUEUED,
        title="T",
        model="book-tts",
        response_format="mp3",
        speed=1.0,
        options={},
        tenant="t1",
        estimated_cost_usd=0.0,
        round=0,
        assembly_runs=0,
        created_at=utcnow(),
    )
    chapter = AudiobookChapter(
        book_id=book_id,
        index=0,
        title="",
        text="",
        status=books.QUEUED,
        characters=0,
        version=0,
        assembly_runs=0,
    )
    books.create_book(
        session,
        book=book,
        chapters=[chapter],
        segments=[
            books.NewSegment(0, n, f"text {n}", None, False, 0, f"key-{book_id}-{n}")
            for n in range(segments)
        ],
    )
    session.commit()


def _usage(book_id: str, call_key: str) -> UsageRecord:
    """A provider call of 6 characters that cost a cent."""
    return UsageRecord(
        audiobook_id=book_id,
        call_key=call_key,
        tenant="t1",
        provider="p",
        deployment="d",
        model="m",
        provider_model="m",
        characters=6,
        cost_usd=0.01,
    )


def _statuses(session: Session) -> list[str]:
    return list(session.scalars(select(AudiobookSegment.status).order_by(AudiobookSegment.id)))


def _queued_messages(app: Celery) -> int:
    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_declare(AUDIOBOOK_QUEUE).message_count)


def test_dispatch_publishes_only_the_free_capacity(database_url: str) -> None:
    registry = parse_config(CONFIG)
    settings = Settings(audiobook_concurrency=3)
    # One deployment's own cap (2) plus the default for the other (3).
    assert capacity(registry, "book-tts", settings) == 5
    app = Celery("t", broker="memory://")
    # The memory transport is one per process: count what this test adds.
    before = _queued_messages(app)
    with get_sessionmaker(database_url)() as session:
        _book(session, 12)
    assert dispatch(database_url, registry, settings, model="book-tts", app=app) == 5
    assert dispatch(database_url, registry, settings, model="book-tts", app=app) == 0
    assert _queued_messages(app) - before == 5
    with get_sessionmaker(database_url)() as session:
        assert _statuses(session) == ["queued"] * 5 + ["pending"] * 7
        book = session.get(Audiobook, "book_a")
        chapter = session.get(AudiobookChapter, ("book_a", 0))
        assert book is not None and book.status == "running" and book.started_at is not None
        assert chapter is not None and chapter.status == "running"
        # Two segments end: exactly two more go.
        first, second = session.scalars(
            select(AudiobookSegment.id).order_by(AudiobookSegment.id).limit(2)
        ).all()
        for segment_id in (first, second):
            claimed = books.claim_segment(session, segment_id=segment_id, lease_seconds=60)
            assert claimed is not None
            assert books.finish_segment(
                session, segment_id=segment_id, run=claimed.runs, cached=True, usage=None
            )
        session.commit()
    assert dispatch(database_url, registry, settings, model="book-tts", app=app) == 2
    with get_sessionmaker(database_url)() as session:
        assert _statuses(session).count("queued") == 5


def test_slots_cap_each_deployment_and_free_with_the_segment(database_url: str) -> None:
    with get_sessionmaker(database_url)() as session:
        _book(session, 4)
        session.execute(update(AudiobookSegment).values(status=books.QUEUED))
        ids = list(session.scalars(select(AudiobookSegment.id).order_by(AudiobookSegment.id)))
        runs = {}
        for segment_id in ids:
            claimed = books.claim_segment(session, segment_id=segment_id, lease_seconds=60)
            assert claimed is not None
            runs[segment_id] = claimed.runs
        take = [
            books.take_slot(session, segment_id=i, run=runs[i], deployment="dep-a", cap=2)
            for i in ids
        ]
        assert take == [True, True, False, False]
        # Another deployment's slots are its own.
        assert books.take_slot(
            session, segment_id=ids[2], run=runs[ids[2]], deployment="dep-b", cap=1
        )
        # A stale run cannot take a slot; a freed slot can be taken again.
        assert not books.take_slot(session, segment_id=ids[3], run=99, deployment="dep-a", cap=5)
        books.release_slot(session, segment_id=ids[0])
        assert books.take_slot(
            session, segment_id=ids[3], run=runs[ids[3]], deployment="dep-a", cap=2
        )
        session.commit()


def test_a_taken_back_segment_cannot_finish_or_bill_and_gets_worker_lost(database_url: str) -> None:
    with get_sessionmaker(database_url)() as session:
        _book(session, 1)
        session.execute(update(AudiobookSegment).values(status=books.QUEUED))
        segment_id = session.scalar(select(AudiobookSegment.id))
        assert segment_id is not None
        first = books.claim_segment(session, segment_id=segment_id, lease_seconds=60)
        assert first is not None
        run_one = first.runs
        # The first run's worker dies: its lease runs out and the sweeper takes it back.
        session.execute(
            update(AudiobookSegment).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        requeued, lost = books.reclaim_segments(session, max_runs=2)
        assert (requeued, lost) == ([segment_id], [])
        second = books.claim_segment(session, segment_id=segment_id, lease_seconds=60)
        assert second is not None and second.runs == run_one + 1
        usage = _usage("book_a", f"segment-{segment_id}")
        # The stalled first run wakes up: it can neither finish nor bill.
        assert not books.finish_segment(
            session, segment_id=segment_id, run=run_one, cached=False, usage=usage
        )
        assert not books.segment_still_running(session, segment_id=segment_id, run=run_one)
        assert books.segment_still_running(session, segment_id=segment_id, run=second.runs)
        # The second run dies too: after max_runs the segment fails with worker_lost.
        session.execute(
            update(AudiobookSegment).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        assert books.reclaim_segments(session, max_runs=2) == ([], [segment_id])
        row = session.get(AudiobookSegment, segment_id, populate_existing=True)
        assert row is not None and row.status == "failed"
        assert row.error is not None and row.error["code"] == "worker_lost"
        assert session.scalar(select(UsageRecord.id)) is None
        session.commit()


def test_a_page_of_books_is_read_in_a_fixed_number_of_queries(database_url: str) -> None:
    from sqlalchemy import event

    from api.audiobook_schemas import audiobook_public, audiobooks_public

    session_factory = get_sessionmaker(database_url)
    with session_factory() as session:
        for book_id, segments in (("book_a", 3), ("book_b", 2), ("book_c", 1)):
            _book(session, segments, book_id=book_id)
        first_a, second_a = session.scalars(
            select(AudiobookSegment.id)
            .where(AudiobookSegment.book_id == "book_a")
            .order_by(AudiobookSegment.id)
            .limit(2)
        ).all()
        session.execute(
            update(AudiobookSegment)
            .where(AudiobookSegment.id == first_a)
            .values(status="succeeded")
        )
        session.execute(
            update(AudiobookSegment).where(AudiobookSegment.id == second_a).values(status="failed")
        )
        session.add(_usage("book_a", "segment-a"))
        session.commit()
        rows = [books.get_book(session, book_id=b, tenant=None) for b in ("book_a", "book_b")]
        page = [row for row in rows if row is not None]

        statements: list[str] = []
        engine = session.get_bind()
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            listed = audiobooks_public(session, page)
            reads_for_two = len(statements)
            statements.clear()
            audiobooks_public(
                session, [*page, books.get_book(session, book_id="book_c", tenant=None)]
            )
            reads_for_three = len(statements) - 1  # the get_book above
        finally:
            event.remove(engine, "before_cursor_execute", listener)

        assert reads_for_two == reads_for_three == 4
        # The same objects as reading each book alone.
        assert listed == [audiobook_public(session, book) for book in page]
    a, b = listed
    assert (a.progress.segments_total, a.progress.segments_done, a.progress.segments_failed) == (
        3,
        1,
        1,
    )
    assert (b.progress.segments_total, b.progress.segments_done) == (2, 0)
    assert a.progress.chapters_total == b.progress.chapters_total == 1
    assert a.usage is not None and a.usage.cost_usd == 0.01 and a.usage.characters == 6
    assert b.usage is None
    assert [c.index for c in a.chapters] == [0]


def _lapse(session: Session, model: type[Audiobook] | type[AudiobookChapter]) -> None:
    """As if the holder's worker died a lease ago."""
    session.execute(update(model).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()


def test_assembly_leases_are_renewed_for_their_own_run_only(database_url: str) -> None:
    from worker.lease import BookAssemblyLease, ChapterAssemblyLease

    chapter = {"book_id": "book_a", "index": 0, "version": 0}
    with get_sessionmaker(database_url)() as session:
        _book(session, 1)
        session.execute(update(AudiobookSegment).values(status=books.SUCCEEDED))
        session.execute(update(Audiobook).values(status=books.RUNNING))
        assert books.start_chapter_assembly(session, **chapter)
        first = books.claim_chapter_assembly(session, **chapter, lease_seconds=60)
        assert first is not None
        session.commit()

        # A live run's heartbeat keeps its chapter: nobody else may claim it.
        _lapse(session, AudiobookChapter)
        ChapterAssemblyLease(database_url, **chapter, run=first, lease_seconds=60).beat()
        assert books.claim_chapter_assembly(session, **chapter, lease_seconds=60) is None
        # A dead run's chapter is taken over, and its late beats do not touch the new lease.
        _lapse(session, AudiobookChapter)
        second = books.claim_chapter_assembly(session, **chapter, lease_seconds=60)
        assert second == first + 1
        session.commit()
        held = session.scalar(select(AudiobookChapter.lease_expires_at))
        ChapterAssemblyLease(database_url, **chapter, run=first, lease_seconds=600).beat()
        session.expire_all()
        assert session.scalar(select(AudiobookChapter.lease_expires_at)) == held

        assert books.complete_chapter(session, **chapter, run=second, values={"part_key": "p"})
        run = books.claim_book_assembly(session, book_id="book_a", round=0, lease_seconds=60)
        assert run is not None
        session.commit()
        _lapse(session, Audiobook)
        BookAssemblyLease(database_url, book_id="book_a", round=0, run=run, lease_seconds=60).beat()
        assert (
            books.claim_book_assembly(session, book_id="book_a", round=0, lease_seconds=60) is None
        )
        _lapse(session, Audiobook)
        taken = books.claim_book_assembly(session, book_id="book_a", round=0, lease_seconds=60)
        assert taken == run + 1
        session.commit()
        held = session.scalar(select(Audiobook.lease_expires_at))
        BookAssemblyLease(
            database_url, book_id="book_a", round=0, run=run, lease_seconds=600
        ).beat()
        session.expire_all()
        assert session.scalar(select(Audiobook.lease_expires_at)) == held


def test_only_lost_runs_count_towards_worker_lost(database_url: str) -> None:
    """A run that found no free slot or was rate limited ended on purpose: it is not a
    loss, so it does not bring `worker_lost` nearer."""
    with get_sessionmaker(database_url)() as session:
        _book(session, 1)
        segment_id = session.scalar(select(AudiobookSegment.id))
        assert segment_id is not None

        def claim() -> int:
            if session.scalar(select(AudiobookSegment.status)) == books.PENDING:
                assert books.take_pending(session, model="book-tts", limit=1) == [segment_id]
            claimed = books.claim_segment(session, segment_id=segment_id, lease_seconds=60)
            assert claimed is not None
            return claimed.runs

        def die() -> tuple[list[int], list[int]]:
            session.execute(
                update(AudiobookSegment).values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
            return books.reclaim_segments(session, max_runs=2)

        assert books.segment_back_to_pending(session, segment_id=segment_id, run=claim())
        later = utcnow() + timedelta(minutes=5)
        assert books.defer_segment(session, segment_id=segment_id, run=claim(), until=later)
        # Deferred: queued, and not published again by the sweeper before it is due.
        assert books.segments_to_republish(session, older_than_s=0) == []
        assert die() == ([], [])  # nothing running
        claim()
        assert die() == ([segment_id], [])  # the first loss, on the third run
        claim()
        assert die() == ([], [segment_id])  # the second loss: worker_lost
        session.commit()
        row = session.scalars(select(AudiobookSegment)).one()
        assert (row.runs, row.losses, row.deferrals) == (4, 2, 1)
        assert row.error is not None and row.error["code"] == "worker_lost"

        # A retry starts both counts again.
        session.execute(update(Audiobook).values(status=books.FAILED))
        session.execute(update(AudiobookChapter).values(status=books.FAILED))
        assert books.retry_book(session, book_id="book_a")
        session.commit()
        session.expire_all()
        row = session.scalars(select(AudiobookSegment)).one()
        assert (row.status, row.losses, row.deferrals) == (books.PENDING, 0, 0)
