"""OpenAI-compatible `/v1/audio/speech` and `/v1/audio/transcriptions`.

Each submits an ordinary job and waits for it, so every provider call goes through the
queue, the router (retries, fallbacks) and billing. The job id and its cost come back in
`x-speechq-job-id` and `x-speechq-cost-usd`; a job that outlives the wait answers 504 and
goes on, to be fetched from `/v1/jobs/{id}`.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.deps import CurrentKey, Principal, StateDep
from api.errors import ApiError
from api.idempotency import idempotency_of
from api.job_access import content_response, wait_for_end
from api.schemas import SpeechJobCreate
from api.state import AppState
from api.submission import submit_speech
from api.transcription_form import TRANSCRIPTION_FORM_OPENAPI, accept_transcription
from speechq.domain import JobStatus
from storage.db import get_sessionmaker
from storage.models import Job

router = APIRouter(prefix="/v1/audio", tags=["openai-compatible"])

OPENAI_SPEECH_MAX_CHARACTERS = 4096


class AudioSpeechCreate(SpeechJobCreate):
    """OpenAI's speech body (`voice` may be left out: the deployment's default)."""

    stream_format: Literal["audio", "sse"] | None = None


@router.post(
    "/speech",
    response_class=Response,
    responses={200: {"content": {"audio/mpeg": {}}, "description": "The audio"}},
)
async def create_speech(
    body: AudioSpeechCreate, request: Request, state: StateDep, principal: CurrentKey
) -> Response:
    if body.stream_format == "sse":
        raise ApiError(
            400,
            "invalid_request",
            "stream_format 'sse' is not supported; leave it out to get the audio bytes.",
            param="stream_format",
        )

    idempotency = idempotency_of(request, body.model_dump(mode="json"))

    def submit() -> Job:
        with get_sessionmaker(state.database_url)() as session:
            return submit_speech(
                state,
                session,
                principal,
                body,
                max_characters=OPENAI_SPEECH_MAX_CHARACTERS,
                idempotency=idempotency,
            ).job

    job = await run_in_threadpool(submit)
    return await _answer(state, principal, job.id)


@router.post(
    "/transcriptions",
    response_class=Response,
    openapi_extra=TRANSCRIPTION_FORM_OPENAPI,
    responses={200: {"content": {"application/json": {}, "text/plain": {}}}},
)
async def create_transcription(
    request: Request, state: StateDep, principal: CurrentKey
) -> Response:
    submitted = await accept_transcription(request, state, principal)
    return await _answer(state, principal, submitted.job.id)


async def _answer(state: AppState, principal: Principal, job_id: str) -> Response:
    ended, job = await wait_for_end(state, principal, job_id, state.settings.sync_timeout_seconds)
    headers = {"x-speechq-job-id": job.id}
    if not ended:
        raise ApiError(
            504,
            "timeout",
            f"The job did not finish within {state.settings.sync_timeout_seconds:g} s; it goes "
            f"on. Fetch it from /v1/jobs/{job.id}.",
            headers=headers,
        )
    if job.status != JobStatus.succeeded.value:
        raise _job_error(job, headers)
    response = await run_in_threadpool(content_response, state, job)
    response.headers.update(headers)
    response.headers["x-speechq-cost-usd"] = f"{(job.usage or {}).get('cost_usd', 0.0):.8f}"
    return response


def _job_error(job: Job, headers: dict[str, str]) -> ApiError:
    error = job.error or {}
    code = error.get("code", "")
    message = error.get("message") or f"The job ended {job.status}."
    if job.status == JobStatus.canceled.value:
        return ApiError(409, "job_finished", "The job was canceled.", headers=headers)
    if code == "invalid_audio":
        return ApiError(400, "invalid_audio", message, param="file", headers=headers)
    if code == "invalid_input":
        return ApiError(400, "invalid_request", message, param="input", headers=headers)
    return ApiError(502, "provider_error", message, headers=headers)
