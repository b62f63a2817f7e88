"""From a request to a planned, priced audiobook: read the body (JSON chapters, JSON text,
or an uploaded .txt/.md/.epub), find the chapters, plan the segments, apply guardrails,
quote it, and, on submit, store it and start its first segments."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.audiobook_schemas import (
    MAX_BOOK_CHARACTERS,
    MAX_CHAPTERS,
    MAX_SEGMENTS,
    AudiobookCreate,
    AudiobookOptions,
    AudiobookQuote,
)
from api.book_process import in_book_process
from api.deps import Principal
from api.errors import ApiError, validation_error
from api.idempotency import Idempotency, find_previous
from api.limits import check_budgets, check_rate_limit
from api.state import AppState
from api.submission import apply_guardrails, check_model, check_webhook_url
from api.upload_form import parse_limited_form
from speechq.ids import new_id
from speechq.pricing import cost_usd
from speechq.registry import SPEECH
from storage import audiobook_queries as books
from storage.audiobook_models import Audiobook, AudiobookChapter
from storage.models import utcnow
from worker.audiobook.book import (
    BookError,
    BookLimits,
    BookTooLarge,
    BookTooLong,
    UnsupportedBook,
    read_book,
    split_chapters,
)
from worker.audiobook.dispatch import dispatch
from worker.audiobook.plan import BookPlan, ChapterInput, ChapterPlan, plan_book
from worker.audiobook.segments import segment_cache_key

__all__ = [
    "BookRequest",
    "MAX_BOOK_FILE_BYTES",
    "book_limits",
    "read_json_request",
    "read_form_request",
    "read_request",
    "prepare",
    "quote_of",
    "submit_book",
    "segment_rows",
]

log = logging.getLogger(__name__)

MAX_BOOK_FILE_BYTES = 50 * 1024 * 1024
_FORM_LISTS = ("include_chapters", "chapter_voices", "metadata")


@dataclass(frozen=True)
class BookRequest:
    options: AudiobookOptions
    title: str
    chapters: tuple[ChapterInput, ...]
    # What the request asked for, for Idempotency-Key: the JSON body, or the form's
    # fields with the file's name and sha256.
    fingerprint: dict[str, Any]


@dataclass(frozen=True)
class Prepared:
    request: BookRequest
    chapters: tuple[ChapterInput, ...]  # after guardrails, voices resolved
    model: str  # canonical
    plan: BookPlan
    estimated_cost_usd: float
    estimated_audio_seconds: float


# --- reading the request ------------------------------------------------------------------


def _fingerprint(raw: object) -> dict[str, Any]:
    return raw if isinstance(raw, dict) else {"body": raw}


def book_limits(state: AppState) -> BookLimits:
    """What a book read from `text` or a file may hold; JSON `chapters` have the same caps
    in their schema."""
    return BookLimits(
        expanded_bytes=int(state.settings.max_book_expanded_mb * 1_000_000),
        characters=MAX_BOOK_CHARACTERS,
        chapters=MAX_CHAPTERS,
        paragraphs=MAX_SEGMENTS,
    )


def _book_error(exc: BookError, param: str) -> ApiError:
    """The answer to a book that cannot be taken; `param` names the field it came in."""
    if isinstance(exc, UnsupportedBook):
        return ApiError(415, "unsupported_format", str(exc), param=param)
    if isinstance(exc, BookTooLarge):
        return ApiError(413, "request_too_large", str(exc), param=param)
    if isinstance(exc, BookTooLong):
        return ApiError(400, "input_too_long", str(exc), param=param)
    return ApiError(400, "invalid_request", str(exc), param=param)


def read_json_request(raw: object, limits: BookLimits) -> BookRequest:
    try:
        body = AudiobookCreate.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
    if body.chapters is not None:
        # Whitespace collapses when planned: what is left is a floor of the characters to
        # read, so a book surely too long is refused before guardrails and planning.
        floor = sum(len("".join(c.text.split())) for c in body.chapters)
        if floor > MAX_BOOK_CHARACTERS:
            raise ApiError(
                400,
                "input_too_long",
                f"The book has {floor:,} characters to read, not counting spaces; at most "
                f"{MAX_BOOK_CHARACTERS:,} are accepted. Split it into volumes.",
                param="chapters",
            )
        chapters = tuple(ChapterInput(c.title, c.text, c.voice) for c in body.chapters)
        return BookRequest(body, body.title or "Untitled", chapters, _fingerprint(raw))
    assert body.text is not None
    try:
        found = in_book_process(split_chapters, body.text, title=body.title, limits=limits)
    except BookError as exc:
        raise _book_error(exc, "text") from None
    chapters = tuple(ChapterInput(c.title, c.text) for c in found.chapters)
    return BookRequest(body, body.title or found.title or "Untitled", chapters, _fingerprint(raw))


async def read_form_request(request: Request, limits: BookLimits) -> BookRequest:
    form = await parse_limited_form(request, lambda _model: MAX_BOOK_FILE_BYTES)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "invalid_request", "Upload the book as a 'file' field.", param="file")
    fields: dict[str, object] = {}
    for name, value in form.multi_items():
        if name == "file" or not isinstance(value, str):
            continue
        if name in _FORM_LISTS:
            try:
                fields[name] = json.loads(value)
            except ValueError:
                raise ApiError(
                    400, "invalid_request", f"'{name}' must be JSON in a form field.", param=name
                ) from None
        else:
            fields[name] = value
    try:
        options = AudiobookOptions.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
    data = await upload.read()
    filename = upload.filename or ""
    try:
        found = await run_in_threadpool(in_book_process, read_book, data, filename, limits=limits)
    except BookError as exc:
        raise _book_error(exc, "file") from None
    chapters = tuple(ChapterInput(c.title, c.text) for c in found.chapters)
    fingerprint = {**fields, "file": [filename, hashlib.sha256(data).hexdigest()]}
    return BookRequest(options, options.title or found.title or "Untitled", chapters, fingerprint)


async def read_request(request: Request, state: AppState) -> BookRequest:
    """The book in the request, JSON or a file, read within `book_limits` (in a thread:
    finding chapters in a long text takes a while)."""
    limits = book_limits(state)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await read_form_request(request, limits)
    try:
        raw = await request.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        raise ApiError(
            400,
            "invalid_request",
            "Send the book as JSON ({'title', 'model', 'chapters' or 'text'}) or as "
            "multipart/form-data with a 'file'.",
        ) from None
    return await run_in_threadpool(read_json_request, raw, limits)


# --- planning and pricing -----------------------------------------------------------------


def prepare(state: AppState, principal: Principal, request: BookRequest) -> Prepared:
    """Check the options, plan and price the book; raises 4xx for what a person can fix.
    The quote and the submit both come through here, so they refuse the same requests.
    Resolves the webhook's host, so call it from a thread."""
    options = request.options
    model = check_model(state, options.model, SPEECH)
    check_webhook_url(state, options.webhook_url)
    voices = options.chapter_voices or {}
    for key in voices:
        if not key.isdigit():
            raise ApiError(
                400,
                "invalid_request",
                f'\'chapter_voices\' keys are chapter indexes ("0", "1", …), not {key!r}.',
                param="chapter_voices",
            )
    chapters = []
    for index, chapter in enumerate(request.chapters):
        text = apply_guardrails(state, principal, model, chapter.text, param=f"chapters.{index}")
        title = chapter.title
        if title and options.read_titles:
            title = apply_guardrails(state, principal, model, title, param=f"chapters.{index}")
        voice = chapter.voice or voices.get(str(index)) or options.voice
        chapters.append(ChapterInput(title, text, voice))
    try:
        plan = in_book_process(
            plan_book,
            chapters,
            limit=state.registry.request_character_limit(model),
            read_titles=options.read_titles,
            paragraph_pause_ms=options.paragraph_pause_ms,
            only=options.include_chapters,
            max_segments=MAX_SEGMENTS,
        )
    except ValueError as exc:
        raise ApiError(400, "invalid_request", str(exc), param="chapters") from None
    if plan.characters > MAX_BOOK_CHARACTERS:
        raise ApiError(
            400,
            "input_too_long",
            f"The book has {plan.characters:,} characters to read; at most "
            f"{MAX_BOOK_CHARACTERS:,} are accepted. Split it into volumes.",
            param="chapters",
        )
    seconds = plan.estimated_audio_seconds(
        speed=options.speed, chapter_pause_ms=options.chapter_pause_ms
    )
    # The dearest deployment of the model: a quote is a ceiling, not a guess.
    cost = max(
        (
            cost_usd(d, characters=plan.characters, output_audio_seconds=seconds)
            for d in state.registry.deployments_for(model)
        ),
        default=0.0,
    )
    return Prepared(request, tuple(chapters), model, plan, round(cost, 6), round(seconds, 1))


def segment_rows(chapter: ChapterPlan, *, model: str, speed: float) -> list[books.NewSegment]:
    """A planned chapter's segments as rows to store, each with its cache key."""
    return [
        books.NewSegment(
            chapter_index=chapter.index,
            index=segment.index,
            text=segment.text,
            voice=chapter.voice,
            is_title=segment.is_title,
            pause_after_ms=segment.pause_after_ms,
            cache_key=segment_cache_key(
                model=model, voice=chapter.voice, speed=speed, text=segment.text
            ),
        )
        for segment in chapter.segments
    ]


def quote_of(prepared: Prepared) -> AudiobookQuote:
    plan = prepared.plan
    return AudiobookQuote(
        chapters=len(plan.chapters),
        segments=plan.segments,
        characters=plan.characters,
        estimated_cost_usd=prepared.estimated_cost_usd,
        estimated_audio_seconds=prepared.estimated_audio_seconds,
    )


# --- submitting ---------------------------------------------------------------------------


def submit_book(
    state: AppState,
    session: Session,
    principal: Principal,
    prepared: Prepared,
    idempotency: Idempotency | None = None,
) -> tuple[Audiobook, bool]:
    """Check limits, store the book with its chapters and segments, start dispatching.
    Returns the book and whether it is new (False: an Idempotency-Key replay)."""
    options = prepared.request.options
    if options.max_cost_usd is not None and prepared.estimated_cost_usd > options.max_cost_usd:
        raise ApiError(
            400,
            "budget_exceeded",
            f"The book is quoted at ${prepared.estimated_cost_usd:.4f}, above its "
            f"max_cost_usd of ${options.max_cost_usd:g}.",
            param="max_cost_usd",
        )
    check_rate_limit(state, principal)
    check_budgets(state, session, principal, options.user)
    book = Audiobook(
        id=new_id("book"),
        status=books.QUEUED,
        title=prepared.request.title,
        model=prepared.model,
        voice=options.voice,
        response_format=options.response_format,
        speed=options.speed,
        options={
            "read_titles": options.read_titles,
            "paragraph_pause_ms": options.paragraph_pause_ms,
            "chapter_pause_ms": options.chapter_pause_ms,
        },
        tenant=principal.tenant,
        key_id=principal.key_id,
        team=principal.team,
        user=options.user,
        metadata_=options.metadata,
        webhook_url=options.webhook_url,
        max_cost_usd=options.max_cost_usd,
        idempotency_key=idempotency.key if idempotency else None,
        request_hash=idempotency.request_hash if idempotency else None,
        estimated_cost_usd=prepared.estimated_cost_usd,
        round=0,
        assembly_runs=0,
        created_at=utcnow(),
    )
    source = prepared.chapters
    chapters = [
        AudiobookChapter(
            book_id=book.id,
            index=chapter.index,
            title=chapter.title,
            voice=chapter.voice,
            status=books.QUEUED,
            text=source[chapter.index].text,
            characters=chapter.characters,
            version=0,
            assembly_runs=0,
        )
        for chapter in prepared.plan.chapters
    ]
    segments = [
        segment
        for chapter in prepared.plan.chapters
        for segment in segment_rows(chapter, model=prepared.model, speed=options.speed)
    ]
    try:
        books.create_book(session, book=book, chapters=chapters, segments=segments)
        session.commit()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        session.rollback()
        previous = (
            find_previous(session, principal, idempotency, Audiobook) if idempotency else None
        )
        if previous is None:
            raise
        return previous, False
    try:
        dispatch(
            state.database_url, state.registry, state.settings, model=book.model, app=state.celery
        )
    except Exception:
        log.warning("could not dispatch %s now; the sweeper will", book.id, exc_info=True)
    return book, True
