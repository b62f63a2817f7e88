"""`/v1/audiobooks`: a book in (chapters, text or a file), a chaptered M4B and per-chapter
files out; quote, progress, cancel, retry of failed segments, re-render of one chapter."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.audiobook_schemas import (
    MAX_CHAPTERS,
    MAX_SEGMENTS,
    AudiobookCreate,
    AudiobookPublic,
    AudiobookQuote,
    AudiobooksPublic,
    ChapterRerender,
    audiobook_public,
    audiobooks_public,
)
from api.audiobook_submission import (
    BookRequest,
    prepare,
    quote_of,
    read_request,
    segment_rows,
    submit_book,
)
from api.book_process import in_book_process
from api.deps import CurrentKey, Principal, SessionDep, StateDep
from api.errors import ApiError
from api.idempotency import Idempotency, find_previous, idempotency_of
from api.job_access import audio_response
from api.state import AppState
from api.submission import apply_guardrails
from speechq.domain import AUDIO_CONTENT_TYPES, TERMINAL_STATUSES, JobStatus
from storage import audiobook_queries as books
from storage.audiobook_models import Audiobook, AudiobookChapter
from storage.db import get_sessionmaker
from storage.models import utcnow
from worker import webhooks
from worker.audiobook.dispatch import dispatch
from worker.audiobook.plan import DEFAULT_PARAGRAPH_PAUSE_MS, ChapterInput, plan_chapter
from worker.audiobook.progress import advance, end_book_event

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/audiobooks", tags=["audiobooks"])

# No book has more chapters than MAX_CHAPTERS: a larger index is a bad request, decided
# before it reaches a database column that cannot hold it.
ChapterIndex = Annotated[int, Path(ge=0, lt=MAX_CHAPTERS)]


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` written in place: a schema placed inside the
    OpenAPI document cannot point at `#/$defs/…` of its own root."""
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return inline(schema)  # type: ignore[no-any-return]


# The body is JSON or multipart (a book file), read by hand: document both.
_BOOK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline_defs(AudiobookCreate.model_json_schema())},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "model"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string"},
                        "title": {"type": "string"},
                        "voice": {"type": "string"},
                        "response_format": {"type": "string"},
                    },
                }
            },
        },
    }
}


@router.post("/quote", response_model=AudiobookQuote, openapi_extra=_BOOK_BODY)
async def quote_audiobook(
    request: Request, state: StateDep, principal: CurrentKey
) -> AudiobookQuote:
    book_request = await read_request(request, state)
    prepared = await run_in_threadpool(prepare, state, principal, book_request)
    return quote_of(prepared)


_REPLAY = {
    200: {"model": AudiobookPublic, "description": "An Idempotency-Key replay: the first book"}
}


@router.post(
    "", status_code=202, response_model=AudiobookPublic, responses=_REPLAY, openapi_extra=_BOOK_BODY
)
async def create_audiobook(
    request: Request, state: StateDep, principal: CurrentKey
) -> JSONResponse:
    """Accepts `Idempotency-Key` like the job routes: the same key and request within 24 h
    return the first book (200)."""
    book_request = await read_request(request, state)
    idempotency = idempotency_of(request, book_request.fingerprint)
    book, created = await run_in_threadpool(_create, state, principal, book_request, idempotency)
    return JSONResponse(book.model_dump(mode="json"), status_code=202 if created else 200)


def _create(
    state: AppState,
    principal: Principal,
    book_request: BookRequest,
    idempotency: Idempotency | None,
) -> tuple[AudiobookPublic, bool]:
    with get_sessionmaker(state.database_url)() as session:
        if idempotency is not None and (
            previous := find_previous(session, principal, idempotency, Audiobook)
        ):
            return audiobook_public(session, previous), False
        prepared = prepare(state, principal, book_request)
        book, created = submit_book(state, session, principal, prepared, idempotency)
        return audiobook_public(session, _load(session, principal, book.id)), created


@router.get("", response_model=AudiobooksPublic)
def list_audiobooks(
    session: SessionDep,
    principal: CurrentKey,
    status: Annotated[JobStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> AudiobooksPublic:
    rows, has_more = books.list_books(
        session,
        tenant=principal.scope,
        status=status.value if status else None,
        limit=limit,
        after=after,
    )
    data = audiobooks_public(session, rows)
    return AudiobooksPublic(
        data=data, has_more=has_more, next_after=data[-1].id if has_more else None
    )


def _load(session: Session, principal: Principal, book_id: str) -> Audiobook:
    book = books.get_book(session, book_id=book_id, tenant=principal.scope)
    if book is None:
        raise ApiError(404, "not_found", f"No audiobook with id '{book_id}'.", param="id")
    return book


def _read(state: AppState, principal: Principal, book_id: str) -> AudiobookPublic:
    with get_sessionmaker(state.database_url)() as session:
        return audiobook_public(session, _load(session, principal, book_id))


@router.get("/{book_id}", response_model=AudiobookPublic)
async def get_audiobook(
    book_id: str,
    state: StateDep,
    principal: CurrentKey,
    wait: Annotated[float, Query(ge=0, le=60)] = 0,
) -> AudiobookPublic:
    book = await run_in_threadpool(_read, state, principal, book_id)
    if wait <= 0 or book.status in TERMINAL_STATUSES:
        return book

    async def has_ended() -> bool:
        latest = await run_in_threadpool(_read, state, principal, book_id)
        return latest.status in TERMINAL_STATUSES

    await state.waiter.wait(book_id, min(wait, state.settings.max_wait_seconds), has_ended)
    return await run_in_threadpool(_read, state, principal, book_id)


@router.post("/{book_id}/cancel", response_model=AudiobookPublic)
def cancel_audiobook(
    book_id: str, state: StateDep, session: SessionDep, principal: CurrentKey
) -> AudiobookPublic:
    book = _load(session, principal, book_id)
    retention = timedelta(hours=state.settings.result_ttl_hours)
    if not books.cancel_book(session, book_id=book.id, expires_at=utcnow() + retention):
        raise ApiError(
            409, "job_finished", f"The audiobook has already ended ({book.status}).", param="id"
        )
    event = end_book_event(session, book.id)
    session.commit()
    state.events.job_ended(book.id)
    webhooks.publish_delivery(event, app=state.celery)
    return audiobook_public(session, _load(session, principal, book_id))


@router.post("/{book_id}/retry", response_model=AudiobookPublic)
def retry_audiobook(
    book_id: str, state: StateDep, session: SessionDep, principal: CurrentKey
) -> AudiobookPublic:
    """Run the failed (or canceled) segments again; the audio already made is kept."""
    book = _check_not_expired(_load(session, principal, book_id))
    if not books.retry_book(session, book_id=book.id):
        code = "job_not_finished" if book.status not in TERMINAL_STATUSES else "job_finished"
        raise ApiError(
            409,
            code,
            f"Only a failed or canceled audiobook can be retried; this one is {book.status}.",
            param="id",
        )
    session.commit()
    _restart(state, book)
    return audiobook_public(session, _load(session, principal, book_id))


@router.post("/{book_id}/chapters/{index}/rerender", response_model=AudiobookPublic)
def rerender_chapter(
    book_id: str,
    index: ChapterIndex,
    state: StateDep,
    session: SessionDep,
    principal: CurrentKey,
    body: ChapterRerender | None = None,
) -> AudiobookPublic:
    """Make one chapter again, with new text, title or voice if given; unchanged segments
    come from the cache, so only what changed is paid for."""
    body = body or ChapterRerender()
    book = _check_not_expired(_load(session, principal, book_id))
    chapter = _chapter(session, book, index)
    if book.status not in (books.SUCCEEDED, books.FAILED):
        raise ApiError(
            409,
            "job_not_finished",
            f"The audiobook is {book.status}; re-render a chapter once it has ended.",
            param="id",
        )
    title = body.title if body.title is not None else chapter.title
    voice = body.voice if body.voice is not None else chapter.voice
    segments: list[books.NewSegment] | None = None
    characters = chapter.characters
    if body.text is not None or body.voice is not None or body.title is not None:
        text = body.text if body.text is not None else chapter.text
        if body.text is not None:  # new text meets the guardrails a new book meets
            text = apply_guardrails(state, principal, book.model, text, param="text")
        try:
            planned = in_book_process(
                plan_chapter,
                index,
                ChapterInput(title, text, voice),
                limit=state.registry.request_character_limit(book.model),
                read_titles=bool(book.options.get("read_titles", True)),
                paragraph_pause_ms=int(
                    book.options.get("paragraph_pause_ms", DEFAULT_PARAGRAPH_PAUSE_MS)
                ),
                max_segments=MAX_SEGMENTS,
            )
        except ValueError as exc:
            raise ApiError(400, "invalid_request", str(exc), param="text") from None
        characters = planned.characters
        segments = segment_rows(planned, model=book.model, speed=book.speed)
    if not books.rerender_chapter(
        session,
        book=book,
        index=index,
        title=title,
        voice=voice,
        characters=characters,
        segments=segments,
        text=body.text,
    ):
        raise ApiError(409, "job_not_finished", "The audiobook changed meanwhile; try again.")
    session.commit()
    _restart(state, book)
    return audiobook_public(session, _load(session, principal, book_id))


def _check_not_expired(book: Audiobook) -> Audiobook:
    if (book.result or {}).get("expired"):
        raise ApiError(410, "expired", "The audiobook passed its retention time and was deleted.")
    return book


def _restart(state: AppState, book: Audiobook) -> None:
    try:
        dispatch(
            state.database_url, state.registry, state.settings, model=book.model, app=state.celery
        )
        # Nothing to synthesize (every chapter was made): assemble straight away.
        advance(state.settings, state.events, book.id)
    except Exception:
        # The sweeper dispatches and advances the book.
        log.warning("could not restart %s now; the sweeper will", book.id, exc_info=True)


def _chapter(session: Session, book: Audiobook, index: int) -> AudiobookChapter:
    chapter = session.get(AudiobookChapter, (book.id, index), populate_existing=True)
    if chapter is None:
        raise ApiError(404, "not_found", f"The audiobook has no chapter {index}.", param="index")
    return chapter


@router.get(
    "/{book_id}/content",
    responses={200: {"content": {"audio/mp4": {}}}, 206: {"description": "Partial audio"}},
)
def get_audiobook_content(
    book_id: str, request: Request, state: StateDep, session: SessionDep, principal: CurrentKey
) -> Response:
    """The whole book: one M4B (AAC in MP4) with a chapter marker per chapter."""
    book = _load(session, principal, book_id)
    if book.status != books.SUCCEEDED or not book.result:
        raise ApiError(
            409,
            "job_not_finished",
            f"The audiobook is {book.status}; its content exists once it has succeeded.",
            param="id",
        )
    _check_not_expired(book)
    return audio_response(
        state,
        book.result["object_key"],
        book.result["content_type"],
        request.headers.get("range"),
        book.result.get("bytes"),
    )


@router.get(
    "/{book_id}/chapters/{index}/content",
    responses={200: {"content": {"audio/mpeg": {}}}, 206: {"description": "Partial audio"}},
)
def get_chapter_content(
    book_id: str,
    index: ChapterIndex,
    request: Request,
    state: StateDep,
    session: SessionDep,
    principal: CurrentKey,
) -> Response:
    """One chapter in the book's `response_format`, as soon as that chapter is done."""
    book = _load(session, principal, book_id)
    chapter = _chapter(session, book, index)
    _check_not_expired(book)
    if chapter.status != books.SUCCEEDED or not chapter.content_key:
        raise ApiError(
            409,
            "job_not_finished",
            f"Chapter {index} is {chapter.status}; its audio exists once it has succeeded.",
            param="index",
        )
    return audio_response(
        state,
        chapter.content_key,
        AUDIO_CONTENT_TYPES[book.response_format],
        request.headers.get("range"),
        chapter.content_bytes,
    )
