"""Reading jobs for a caller: tenant-scoped loads, waiting for the end, content responses.
Shared by `/v1/jobs` and the OpenAI-compatible `/v1/audio` routes."""

from __future__ import annotations

import json
import re

from fastapi import Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api.deps import Principal
from api.errors import ApiError
from api.schemas import JobPublic, job_public
from api.state import AppState
from speechq.domain import TERMINAL_STATUSES, JobStatus
from speechq.transcripts import render_transcript
from storage import queries
from storage.db import get_sessionmaker
from storage.models import Job

__all__ = [
    "public",
    "load",
    "read_job",
    "read_job_row",
    "wait_for_end",
    "content_response",
    "transcript_response",
    "audio_response",
]

_BYTE_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*\Z", re.IGNORECASE | re.ASCII)


def public(session: Session, job: Job) -> JobPublic:
    attempts = queries.attempts_for_jobs(session, job_ids=[job.id])[job.id]
    return job_public(job, attempts)


def load(session: Session, principal: Principal, job_id: str) -> Job:
    job = queries.get_job(session, job_id=job_id, tenant=principal.scope)
    if job is None:
        raise ApiError(404, "not_found", f"No job with id '{job_id}'.", param="id")
    return job


async def wait_for_end(
    state: AppState, principal: Principal, job_id: str, timeout_s: float
) -> tuple[bool, Job]:
    """Hold until the job has ended or `timeout_s` passed. Returns whether it ended and
    the row as last read, so the caller need not read it again."""
    last: list[Job] = []

    async def has_ended() -> bool:
        job = await run_in_threadpool(read_job_row, state, principal, job_id)
        last[:] = [job]
        return job.status in TERMINAL_STATUSES

    ended = await state.waiter.wait(job_id, timeout_s, has_ended)
    return ended, last[0]


def read_job(state: AppState, principal: Principal, job_id: str) -> JobPublic:
    with get_sessionmaker(state.database_url)() as session:
        return public(session, load(session, principal, job_id))


def read_job_row(state: AppState, principal: Principal, job_id: str) -> Job:
    with get_sessionmaker(state.database_url)() as session:
        return load(session, principal, job_id)


def content_response(state: AppState, job: Job, range_header: str | None = None) -> Response:
    """The job's audio (Range supported) or its transcript in the job's format."""
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
        return transcript_response(state, job)
    return audio_response(
        state, key, job.result["content_type"], range_header, job.result.get("bytes")
    )


def transcript_response(state: AppState, job: Job) -> Response:
    assert job.result is not None
    transcript = json.loads(state.store.get_bytes(job.result["object_key"]))
    body, content_type = render_transcript(transcript, job.request.get("response_format", "json"))
    return Response(body, media_type=content_type)


def audio_response(
    state: AppState, key: str, content_type: str, range_header: str | None, total: int | None
) -> Response:
    if total is None:  # results written before `bytes` was recorded
        total = state.store.size(key)
    headers = {"Accept-Ranges": "bytes"}
    wanted = _parse_range(range_header, total) if range_header else None
    if wanted is not None:
        start, end = wanted
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        headers["Content-Length"] = str(end - start + 1)
        return StreamingResponse(
            state.store.open_stream(key, start, end), 206, headers, media_type=content_type
        )
    headers["Content-Length"] = str(total)
    return StreamingResponse(state.store.open_stream(key), 200, headers, media_type=content_type)


def _parse_range(header: str, total: int) -> tuple[int, int] | None:
    """One `bytes=` range (RFC 9110 section 14). A header that is not one valid byte range
    (another unit, bad syntax, last before first, several ranges) is ignored: None, and the
    whole content goes out. A valid range that starts past the end is 416."""
    found = _BYTE_RANGE.match(header)
    if found is None:
        return None
    first, last = found.group(1), found.group(2)
    if first == "" and last == "":
        return None
    if first and last and int(last) < int(first):
        return None
    if first == "":
        length = int(last)
        if length == 0 or total == 0:
            raise _unsatisfiable(header, total)
        return max(0, total - length), total - 1
    start = int(first)
    if start >= total:
        raise _unsatisfiable(header, total)
    end = int(last) if last else total - 1
    return start, min(end, total - 1)


def _unsatisfiable(header: str, total: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"The Range '{header}' does not fit the content of {total} bytes.",
        headers={"Content-Range": f"bytes */{total}"},
    )
