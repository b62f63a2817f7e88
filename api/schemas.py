"""Request and response schemas (`XCreate`, `XPublic`, `XsPublic`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from speechq.apikeys import NewKey
from speechq.text_checks import CheckedModel
from storage.models import ApiKey, Job, ProviderAttempt

__all__ = [
    "SpeechFormat",
    "SpeechJobCreate",
    "JobPublic",
    "JobsPublic",
    "KeyCreate",
    "KeyCreated",
    "KeyPublic",
    "KeysPublic",
    "KeyDeleted",
    "ModelPublic",
    "ModelsPublic",
    "UsageRow",
    "UsagePublic",
    "ErrorEnvelope",
    "METADATA",
    "ERROR_RESPONSES",
    "job_public",
    "key_public",
    "unix",
]

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
# Like OpenAI's metadata: up to 16 pairs, keys up to 64 and values up to 512 characters.
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]

MAX_SPEECH_JOB_CHARACTERS = 100_000


class SpeechJobCreate(CheckedModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    input: str
    voice: str | None = Field(default=None, max_length=200)
    response_format: SpeechFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(default=None, max_length=4096)
    user: str | None = Field(default=None, max_length=256)
    webhook_url: str | None = Field(default=None, max_length=2048)
    metadata: Metadata | None = None


class JobResultPublic(BaseModel):
    content_url: str
    content_type: str
    bytes: int
    duration_seconds: float | None = None
    text: str | None = None
    language: str | None = None


class JobUsagePublic(BaseModel):
    provider: str
    model: str
    characters: int
    audio_seconds: float
    cost_usd: float


class AttemptPublic(BaseModel):
    deployment: str
    provider: str
    model: str
    status: Literal["ok", "error"]
    latency_ms: int
    error: str | None = None


class JobErrorPublic(BaseModel):
    code: str
    message: str


class JobPublic(BaseModel):
    id: str
    object: Literal["job"] = "job"
    type: Literal["speech", "transcription"]
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    model: str
    user: str | None = None
    metadata: Metadata | None = None
    webhook_url: str | None = None
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    result: JobResultPublic | None = None
    usage: JobUsagePublic | None = None
    attempts: list[AttemptPublic] = []
    error: JobErrorPublic | None = None


class JobsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobPublic]
    has_more: bool
    next_after: str | None = None


class KeyCreate(NewKey):
    """`POST /v1/keys`; the rules are `NewKey`'s, shared with `speechq keys create`."""


class KeyPublic(BaseModel):
    id: str
    object: Literal["key"] = "key"
    name: str | None
    team: str | None
    budget_usd: float | None
    rpm_limit: int | None
    is_admin: bool
    guardrails: list[str] | None = None
    created_at: int
    revoked_at: int | None = None


class KeyCreated(KeyPublic):
    key: str
    webhook_secret: str


class KeysPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyPublic]


class KeyDeleted(BaseModel):
    id: str
    object: Literal["key"] = "key"
    deleted: bool = True


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str
    mode: str


class ModelsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


class UsageRow(BaseModel):
    group: str | None
    requests: int
    characters: int
    audio_seconds: float
    cost_usd: float


class UsagePublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[UsageRow]
    total: UsageRow


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str


class ErrorEnvelope(BaseModel):
    """Every error, whatever raised it."""

    error: ErrorBody


_ERROR_STATUSES = {
    400: "Invalid request (`invalid_request`, `input_too_long`, `guardrail_violation`, …)",
    401: "Missing, unknown or revoked key",
    403: "An admin route called with a non-admin key",
    404: "Unknown id (or another tenant's), unknown model",
    405: "Method not allowed",
    409: "Job not finished, already finished, or an idempotency conflict",
    410: "The result passed its retention time",
    413: "Upload larger than the model allows",
    415: "Audio of a kind not accepted",
    416: "Range not satisfiable",
    429: "Rate limit or budget",
    500: "Internal error",
    502: "Every deployment failed (synchronous routes)",
    503: "Not ready",
    504: "The job did not finish in time (synchronous routes)",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in _ERROR_STATUSES.items()
}


METADATA = TypeAdapter(Metadata)


def unix(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def job_public(job: Job, attempts: list[ProviderAttempt]) -> JobPublic:
    result: dict[str, Any] | None = None
    if job.result is not None and job.status == "succeeded":
        result = {
            "content_url": f"/v1/jobs/{job.id}/content",
            **{k: v for k, v in job.result.items() if k in JobResultPublic.model_fields},
        }
    return JobPublic(
        id=job.id,
        type=job.type,  # type: ignore[arg-type]
        status=job.status,  # type: ignore[arg-type]
        model=job.model,
        user=job.user,
        metadata=job.metadata_,
        webhook_url=job.webhook_url,
        created_at=unix(job.created_at) or 0,
        started_at=unix(job.started_at),
        finished_at=unix(job.finished_at),
        result=JobResultPublic(**result) if result else None,
        usage=JobUsagePublic(**job.usage) if job.usage else None,
        attempts=[
            AttemptPublic(
                deployment=a.deployment,
                provider=a.provider,
                model=a.model,
                status=a.status,  # type: ignore[arg-type]
                latency_ms=a.latency_ms,
                error=a.error,
            )
            for a in attempts
        ],
        error=JobErrorPublic(**job.error) if job.error else None,
    )


def key_public(row: ApiKey) -> KeyPublic:
    return KeyPublic(
        id=row.id,
        name=row.name,
        team=row.team,
        budget_usd=row.budget_usd,
        rpm_limit=row.rpm_limit,
        is_admin=row.is_admin,
        guardrails=row.guardrails,
        created_at=unix(row.created_at) or 0,
        revoked_at=unix(row.revoked_at),
    )
