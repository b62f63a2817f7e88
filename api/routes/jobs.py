"""`/v1/jobs`: submit speech and transcription jobs, poll them, fetch their content, cancel."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from api.deps import CurrentKey, Principal, SessionDep, StateDep
from api.errors import ApiError
from api.schemas import (
    MAX_SPEECH_JOB_CHARACTERS,
    JobPublic,
    JobsPublic,
    SpeechJobCreate,
    job_public,
)
from api.state import AppState
from api.submission import check_model, submit_job
from api.uploads import store_upload
from speechq.domain import TERMINAL_STATUSES, TRANSCRIPT_FORMATS, JobStatus
from speechq.ids import new_id
from speechq.registry import SPEECH, TRANSCRIPTION
from speechq.transcripts import render_transcript
from storage import queries
from storage.db import get_sessionmaker
from storage.models import Job
from storage.objects import tenant_key

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_POLL_START_S = 0.05
_POLL_MAX_S = 0.5


def _public(session: Session, job: Job) -> JobPublic:
    attempts = queries.attempts_for_jobs(session, job_ids=[job.id])[job.id]
    return job_public(job, attempts)


def _load(session: Session, principal: Principal, job_id: str) -> Job:
    job = queries.get_job(session, job_id=job_id, tenant=principal.scope)
    if job is None:
        raise ApiError(404, "not_found", f"No job with id '{job_id}'.", param="id")
    return job


@router.post("/speech", status_code=202, response_model=JobPublic)
def create_speech_job(
    body: SpeechJobCreate, state: StateDep, session: SessionDep, principal: CurrentKey
) -> JobPublic:
    if not body.input.strip():
        raise ApiError(400, "invalid_request", "'input' is empty.", param="input")
    if len(body.input) > MAX_SPEECH_JOB_CHARACTERS:
        raise ApiError(
            400,
            "input_too_long",
            f"'input' has {len(body.input)} characters; a speech job takes at most "
            f"{MAX_SPEECH_JOB_CHARACTERS}.",
            param="input",
        )
    check_model(state, body.model, SPEECH)
    request = {
        "input": body.input,
        "voice": body.voice,
        "response_format": body.response_format,
        "speed": body.speed,
        "instructions": body.instructions,
    }
    job = submit_job(
        state,
        session,
        principal,
        job_type="speech",
        model=body.model,
        request=request,
        user=body.user,
        metadata=body.metadata,
        webhook_url=body.webhook_url,
    )
    return _public(session, job)


@router.post(
    "/transcriptions",
    status_code=202,
    response_model=JobPublic,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file", "model"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "model": {"type": "string"},
                            "language": {"type": "string"},
                            "prompt": {"type": "string"},
                            "response_format": {"type": "string", "enum": list(TRANSCRIPT_FORMATS)},
                            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
                            "user": {"type": "string"},
                            "webhook_url": {"type": "string"},
                            "metadata": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def create_transcription_job(
    request: Request, state: StateDep, principal: CurrentKey
) -> JobPublic:
    form = await request.form(max_files=1, max_fields=32)
    try:
        fields = _transcription_fields(form)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(
                400, "invalid_request", "Send the audio as the 'file' field.", param="file"
            )
        model = fields["model"]
        canonical = check_model(state, model, TRANSCRIPTION)
        job_id = new_id("job")
        key = tenant_key(principal.tenant, "uploads", job_id, "input")
        stored = await store_upload(state, canonical, upload, key)
        job_request = {
            "input_key": key,
            "filename": f"input.{stored.extension}",
            "bytes": stored.bytes,
            "language": fields.get("language"),
            "prompt": fields.get("prompt"),
            "response_format": fields.get("response_format") or "json",
            "temperature": fields.get("temperature"),
        }

        def submit() -> JobPublic:
            with get_sessionmaker(state.database_url)() as session:
                job = submit_job(
                    state,
                    session,
                    principal,
                    job_type="transcription",
                    model=model,
                    request=job_request,
                    user=fields.get("user"),
                    metadata=fields.get("metadata"),
                    webhook_url=fields.get("webhook_url"),
                    job_id=job_id,
                )
                return _public(session, job)

        return await run_in_threadpool(submit)
    finally:
        await form.close()


def _transcription_fields(form: Any) -> dict[str, Any]:
    def text(name: str, max_length: int = 4096) -> str | None:
        value = form.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ApiError(400, "invalid_request", f"'{name}' must be a text field.", param=name)
        if len(value) > max_length:
            raise ApiError(
                400,
                "invalid_request",
                f"'{name}' is longer than {max_length} characters.",
                param=name,
            )
        return value

    model = text("model", 200)
    if not model:
        raise ApiError(400, "invalid_request", "'model' is required.", param="model")
    fields: dict[str, Any] = {
        "model": model,
        "language": text("language", 32),
        "prompt": text("prompt"),
        "user": text("user", 256),
        "webhook_url": text("webhook_url", 2048),
    }
    fmt = text("response_format", 32)
    if fmt is not None and fmt not in TRANSCRIPT_FORMATS:
        raise ApiError(
            400,
            "invalid_request",
            f"'response_format' must be one of {', '.join(TRANSCRIPT_FORMATS)}.",
            param="response_format",
        )
    fields["response_format"] = fmt
    temperature = text("temperature", 32)
    if temperature is not None:
        try:
            value = float(temperature)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise ApiError(
                400,
                "invalid_request",
                "'temperature' must be a number from 0 to 1.",
                param="temperature",
            )
        fields["temperature"] = value
    metadata = text("metadata", 16384)
    if metadata is not None:
        try:
            parsed = json.loads(metadata)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
        ):
            raise ApiError(
                400,
                "invalid_request",
                "'metadata' must be a JSON object of string keys and string values.",
                param="metadata",
            )
        fields["metadata"] = parsed
    return fields


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    principal: CurrentKey,
    status: Annotated[JobStatus | None, Query()] = None,
    type: Annotated[str | None, Query(pattern="^(speech|transcription)$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> JobsPublic:
    jobs, has_more = queries.list_jobs(
        session,
        tenant=principal.scope,
        status=status.value if status else None,
        type=type,
        limit=limit,
        after=after,
    )
    attempts = queries.attempts_for_jobs(session, job_ids=[j.id for j in jobs])
    data = [job_public(job, attempts[job.id]) for job in jobs]
    return JobsPublic(data=data, has_more=has_more, next_after=data[-1].id if has_more else None)


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(
    job_id: str,
    state: StateDep,
    principal: CurrentKey,
    wait: Annotated[float, Query(ge=0, le=60)] = 0,
) -> JobPublic:
    deadline = time.monotonic() + min(wait, state.settings.max_wait_seconds)
    delay = _POLL_START_S
    while True:
        job = await run_in_threadpool(_read_job, state, principal, job_id)
        if job.status in TERMINAL_STATUSES or time.monotonic() >= deadline:
            return job
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, _POLL_MAX_S)


def _read_job(state: AppState, principal: Principal, job_id: str) -> JobPublic:
    with get_sessionmaker(state.database_url)() as session:
        return _public(session, _load(session, principal, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, session: SessionDep, principal: CurrentKey) -> JobPublic:
    job = _load(session, principal, job_id)
    if not queries.cancel_job(session, job_id=job.id):
        raise ApiError(
            409, "job_finished", f"The job has already ended ({job.status}).", param="id"
        )
    session.commit()
    session.refresh(job)
    return _public(session, job)


@router.get(
    "/{job_id}/content",
    responses={
        200: {"content": {"audio/mpeg": {}, "application/json": {}, "text/plain": {}}},
        206: {"description": "Partial audio (Range)"},
    },
)
def get_job_content(
    job_id: str, request: Request, state: StateDep, session: SessionDep, principal: CurrentKey
) -> Response:
    job = _load(session, principal, job_id)
    if job.status != JobStatus.succeeded.value or not job.result:
        raise ApiError(
            409,
            "job_not_finished",
            f"The job is {job.status}; its content exists once it has succeeded.",
            param="id",
        )
    if job.result.get("expired"):
        raise ApiError(
            410, "expired", "The job's result passed its retention time and was deleted."
        )
    key = job.result["object_key"]
    if job.type == "transcription":
        transcript = json.loads(state.store.get_bytes(key))
        body, content_type = render_transcript(
            transcript, job.request.get("response_format", "json")
        )
        return Response(body, media_type=content_type)
    return _audio_response(state, key, job.result["content_type"], request.headers.get("range"))


def _audio_response(
    state: AppState, key: str, content_type: str, range_header: str | None
) -> Response:
    total = state.store.size(key)
    headers = {"Accept-Ranges": "bytes"}
    if range_header:
        start, end = _parse_range(range_header, total)
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        headers["Content-Length"] = str(end - start + 1)
        return StreamingResponse(
            state.store.open_stream(key, start, end), 206, headers, media_type=content_type
        )
    headers["Content-Length"] = str(total)
    return StreamingResponse(state.store.open_stream(key), 200, headers, media_type=content_type)


def _parse_range(header: str, total: int) -> tuple[int, int]:
    """One `bytes=` range (RFC 9110); several ranges are not supported."""
    unsatisfiable = ApiError(
        416,
        "range_not_satisfiable",
        f"The Range '{header}' does not fit the content of {total} bytes.",
        headers={"Content-Range": f"bytes */{total}"},
    )
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise unsatisfiable
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                raise unsatisfiable
            return max(0, total - length), total - 1
        start = int(first)
        end = int(last) if last else total - 1
    except ValueError:
        raise unsatisfiable from None
    if start >= total or end < start:
        raise unsatisfiable
    return start, min(end, total - 1)
