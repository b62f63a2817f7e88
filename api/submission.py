"""Create a job and publish it. The row is committed first: if the publish fails the job
stays queued, safe in the database, and the sweeper publishes it again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import Principal
from api.errors import ApiError
from api.idempotency import Idempotency, find_previous
from api.limits import check_budgets, check_rate_limit
from api.metrics import JOBS_SUBMITTED
from api.schemas import SpeechJobCreate
from api.state import AppState
from speechq.guardrails import GuardrailViolation
from speechq.net_guard import UnsafeURL, resolve_safe
from speechq.registry import SPEECH, TRANSCRIPTION
from storage import queries
from storage.models import Job
from worker.celery_app import publish_job

__all__ = [
    "apply_guardrails",
    "check_speech_input",
    "check_model",
    "check_webhook_url",
    "submit_speech",
    "submit_job",
    "Submitted",
    "publish",
]

log = logging.getLogger(__name__)

_MODE_WORDS = {SPEECH: "text-to-speech", TRANSCRIPTION: "transcription"}


def check_speech_input(text: str, max_characters: int) -> None:
    if not text.strip():
        raise ApiError(400, "invalid_request", "'input' is empty.", param="input")
    if len(text) > max_characters:
        raise ApiError(
            400,
            "input_too_long",
            f"'input' has {len(text)} characters; at most {max_characters} are accepted here.",
            param="input",
        )


def _model_max_characters(state: AppState, model: str) -> int | None:
    """`model_info.max_characters`: the most one speech job for this model may hold."""
    limits = [
        int(d.model_info["max_characters"])
        for d in state.registry.deployments_for(model)
        if d.model_info.get("max_characters")
    ]
    return min(limits) if limits else None


def apply_guardrails(
    state: AppState, principal: Principal, model: str, text: str, *, param: str
) -> str:
    """The text the provider will get (and that is billed): masked or rewritten by the
    guardrails that apply, or refused with 400 guardrail_violation."""
    try:
        result = state.guardrails.check(
            text, model=model, param=param, selected=principal.guardrails, stage="input"
        )
    except GuardrailViolation as exc:
        raise ApiError(400, "guardrail_violation", exc.message, param=exc.param) from None
    return result.text


def check_model(state: AppState, model: str, mode: str) -> str:
    """The model's canonical name; 404 if unknown, 400 if it does the other job."""
    canonical = state.registry.resolve(model)
    if canonical is None:
        raise ApiError(
            404,
            "model_not_found",
            f"The model '{model}' does not exist. GET /v1/models lists the models you can use.",
            param="model",
        )
    actual = state.registry.mode_of(canonical)
    if actual != mode:
        raise ApiError(
            400,
            "invalid_request",
            f"The model '{model}' is a {_MODE_WORDS.get(actual or '', actual)} model; "
            f"this route needs a {_MODE_WORDS[mode]} model.",
            param="model",
        )
    return canonical


def check_webhook_url(state: AppState, url: str | None) -> None:
    """400 invalid_webhook_url unless `url` is http(s) and its host resolves to addresses
    webhooks may go to (public ones, unless SPEECHQ_WEBHOOK_ALLOW_PRIVATE). Resolves the
    host, so call it from a thread. Checked again at each delivery."""
    if url is None:
        return
    try:
        resolve_safe(url, allow_private=state.settings.webhook_allow_private)
    except UnsafeURL as exc:
        raise ApiError(400, "invalid_webhook_url", str(exc), param="webhook_url") from None


def submit_speech(
    state: AppState,
    session: Session,
    principal: Principal,
    body: SpeechJobCreate,
    *,
    max_characters: int,
    idempotency: Idempotency | None = None,
) -> Submitted:
    if idempotency is not None and (previous := find_previous(session, principal, idempotency)):
        return Submitted(previous, created=False)
    check_rate_limit(state, principal)
    canonical = check_model(state, body.model, SPEECH)
    limit = min(max_characters, _model_max_characters(state, canonical) or max_characters)
    check_speech_input(body.input, limit)
    text = apply_guardrails(state, principal, canonical, body.input, param="input")
    if text != body.input:
        check_speech_input(text, limit)  # a rewrite may have emptied or grown it
    check_webhook_url(state, body.webhook_url)
    check_budgets(state, session, principal, body.user)
    request = {
        "input": text,
        "voice": body.voice,
        "response_format": body.response_format,
        "speed": body.speed,
        "instructions": body.instructions,
    }
    return submit_job(
        state,
        session,
        principal,
        job_type="speech",
        model=body.model,
        request=request,
        user=body.user,
        metadata=body.metadata,
        webhook_url=body.webhook_url,
        idempotency=idempotency,
    )


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False: an Idempotency-Key replay of an earlier job

    @property
    def status_code(self) -> int:
        return 202 if self.created else 200


def submit_job(
    state: AppState,
    session: Session,
    principal: Principal,
    *,
    job_type: str,
    model: str,
    request: dict[str, Any],
    user: str | None,
    metadata: dict[str, str] | None,
    webhook_url: str | None,
    job_id: str | None = None,
    idempotency: Idempotency | None = None,
) -> Submitted:
    """Create the job row, commit, publish. The caller has checked limits and budgets."""
    try:
        job = queries.create_job(
            session,
            job_id=job_id,
            type=job_type,
            model=model,
            tenant=principal.tenant,
            key_id=principal.key_id,
            team=principal.team,
            user=user,
            metadata=metadata,
            webhook_url=webhook_url,
            request=request,
            idempotency_key=idempotency.key if idempotency else None,
            request_hash=idempotency.request_hash if idempotency else None,
        )
        session.commit()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        session.rollback()
        previous = find_previous(session, principal, idempotency) if idempotency else None
        if previous is None:
            raise
        return Submitted(previous, created=False)
    JOBS_SUBMITTED.labels(job_type).inc()
    publish(state, job)
    return Submitted(job, created=True)


def publish(state: AppState, job: Job) -> None:
    """Publish "run job X". The row was stamped `enqueued_at` when it was created, so a
    publish that fails here is retried by the sweeper after SPEECHQ_REQUEUE_AFTER_SECONDS."""
    try:
        publish_job(state.celery, job_id=job.id, job_type=job.type)
    except Exception:
        log.warning("broker publish failed for %s; the sweeper will publish it", job.id)
