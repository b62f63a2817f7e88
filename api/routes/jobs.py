"""`/v1/jobs`: submit speech and transcription jobs, poll them, fetch their content, cancel."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.deps import CurrentKey, SessionDep, StateDep
from api.errors import ApiError
from api.idempotency import idempotency_of
from api.job_access import content_response, load, public, read_job, wait_for_end
from api.schemas import (
    MAX_SPEECH_JOB_CHARACTERS,
    JobPublic,
    JobsPublic,
    SpeechJobCreate,
    job_public,
)
from api.submission import Submitted, submit_speech
from api.transcription_form import TRANSCRIPTION_FORM_OPENAPI, accept_transcription
from speechq.domain import TERMINAL_STATUSES, JobStatus
from storage import queries
from storage.models import utcnow
from worker.webhooks import enqueue_job_event, publish_delivery

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


_REPLAY = {200: {"model": JobPublic, "description": "An Idempotency-Key replay: the first job"}}


@router.post("/speech", status_code=202, response_model=JobPublic, responses=_REPLAY)
def create_speech_job(
    body: SpeechJobCreate,
    request: Request,
    state: StateDep,
    session: SessionDep,
    principal: CurrentKey,
) -> JSONResponse:
    submitted = submit_speech(
        state,
        session,
        principal,
        body,
        max_characters=MAX_SPEECH_JOB_CHARACTERS,
        idempotency=idempotency_of(request, body.model_dump(mode="json")),
    )
    return _submitted_response(session, submitted)


def _submitted_response(session: Session, submitted: Submitted) -> JSONResponse:
    # A new job has no attempts yet; a replayed one may.
    job = public(session, submitted.job) if not submitted.created else job_public(submitted.job, [])
    return JSONResponse(job.model_dump(mode="json"), status_code=submitted.status_code)


@router.post(
    "/transcriptions",
    status_code=202,
    response_model=JobPublic,
    responses=_REPLAY,
    openapi_extra=TRANSCRIPTION_FORM_OPENAPI,
)
async def create_transcription_job(
    request: Request, state: StateDep, principal: CurrentKey
) -> JSONResponse:
    submitted = await accept_transcription(request, state, principal)
    if submitted.created:
        job = job_public(submitted.job, [])
    else:
        job = await run_in_threadpool(read_job, state, principal, submitted.job.id)
    return JSONResponse(job.model_dump(mode="json"), status_code=submitted.status_code)


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
    job = await run_in_threadpool(read_job, state, principal, job_id)
    if wait <= 0 or job.status in TERMINAL_STATUSES:
        return job
    await wait_for_end(state, principal, job_id, min(wait, state.settings.max_wait_seconds))
    return await run_in_threadpool(read_job, state, principal, job_id)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(
    job_id: str, state: StateDep, session: SessionDep, principal: CurrentKey
) -> JobPublic:
    job = load(session, principal, job_id)
    retention = timedelta(hours=state.settings.result_ttl_hours)
    if not queries.cancel_job(session, job_id=job.id, expires_at=utcnow() + retention):
        raise ApiError(
            409, "job_finished", f"The job has already ended ({job.status}).", param="id"
        )
    event = enqueue_job_event(session, job_id=job.id) if job.webhook_url else None
    session.commit()
    state.events.job_ended(job.id)
    publish_delivery(event, app=state.celery)
    session.refresh(job)
    return public(session, job)


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
    return content_response(state, load(session, principal, job_id), request.headers.get("range"))
