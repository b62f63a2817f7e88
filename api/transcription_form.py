"""The transcription upload form, shared by `/v1/jobs/transcriptions` and the
OpenAI-compatible `/v1/audio/transcriptions`: parse, check, store the audio, create the job."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.deps import Principal
from api.errors import ApiError
from api.idempotency import Idempotency, find_previous, idempotency_of
from api.limits import check_budgets, check_rate_limit
from api.schemas import METADATA
from api.state import AppState
from api.submission import Submitted, check_model, check_webhook_url, submit_job
from api.upload_form import parse_limited_form
from api.uploads import fetch_and_store, max_upload_bytes, store_upload
from speechq.domain import TRANSCRIPT_FORMATS
from speechq.ids import new_id
from speechq.languages import UnknownLanguage, parse_language
from speechq.registry import TRANSCRIPTION
from storage.db import get_sessionmaker
from storage.models import Job
from storage.objects import tenant_key

__all__ = ["TRANSCRIPTION_FORM_OPENAPI", "accept_transcription", "parse_transcription_fields"]

TRANSCRIPTION_FORM_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "url": {
                            "type": "string",
                            "description": "instead of file (not both): a public http(s) "
                            "address of the audio",
                        },
                        "model": {"type": "string"},
                        "language": {
                            "type": "string",
                            "description": "ISO-639-1 code of a language Whisper knows, e.g. en",
                        },
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
}


async def accept_transcription(
    request: Request, state: AppState, principal: Principal
) -> Submitted:
    """Parse the multipart form, store the audio, create and publish the job."""
    form = await parse_limited_form(request, lambda model: max_upload_bytes(state, model))
    try:
        fields = parse_transcription_fields(form)
        upload = form.get("file")
        url = fields.get("url")
        if upload not in (None, "") and url:
            raise ApiError(
                400,
                "invalid_request",
                "Send either 'file' or 'url', not both: 'file' is the audio itself, "
                "'url' is an address to fetch it from.",
                param="url",
            )
        if not isinstance(upload, UploadFile) and not url:
            raise ApiError(
                400,
                "invalid_request",
                "Send the audio as the 'file' field, or its address as 'url'.",
                param="file",
            )
        idempotency = None
        if request.headers.get("idempotency-key") is not None:
            file_hash = (
                await run_in_threadpool(_sha256, upload) if isinstance(upload, UploadFile) else None
            )
            idempotency = idempotency_of(request, {**fields, "file_sha256": file_hash})
            previous = await run_in_threadpool(_previous, state, principal, idempotency)
            if previous is not None:
                return Submitted(previous, created=False)
        check_rate_limit(state, principal)
        model = fields["model"]
        canonical = check_model(state, model, TRANSCRIPTION)
        await run_in_threadpool(check_webhook_url, state, fields.get("webhook_url"))
        await run_in_threadpool(_check_budgets, state, principal, fields.get("user"))
        job_id = new_id("job")
        key = tenant_key(principal.tenant, "uploads", job_id, "input")
        if isinstance(upload, UploadFile):
            stored = await store_upload(state, canonical, upload, key)
        else:
            stored = await run_in_threadpool(fetch_and_store, state, canonical, url, key)
        job_request = {
            "input_key": key,
            "filename": f"input.{stored.extension}",
            "bytes": stored.bytes,
            "language": fields.get("language"),
            "prompt": fields.get("prompt"),
            "response_format": fields.get("response_format") or "json",
            "temperature": fields.get("temperature"),
        }

        def submit() -> Submitted:
            with get_sessionmaker(state.database_url)() as session:
                return submit_job(
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
                    idempotency=idempotency,
                )

        submitted = await run_in_threadpool(submit)
        if not submitted.created:
            # A concurrent twin made the job first; drop the copy we stored.
            state.store.delete(key)
        return submitted
    finally:
        await form.close()


def _sha256(upload: UploadFile) -> str:
    digest = hashlib.sha256()
    upload.file.seek(0)
    while chunk := upload.file.read(1 << 20):
        digest.update(chunk)
    upload.file.seek(0)
    return digest.hexdigest()


def _previous(state: AppState, principal: Principal, idempotency: Idempotency) -> Job | None:
    with get_sessionmaker(state.database_url)() as session:
        return find_previous(session, principal, idempotency)


def _check_budgets(state: AppState, principal: Principal, user: str | None) -> None:
    with get_sessionmaker(state.database_url)() as session:
        check_budgets(state, session, principal, user)


def parse_transcription_fields(form: Any) -> dict[str, Any]:
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
        "url": text("url", 2048),
        "language": _language(text("language", 32)),
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
            fields["metadata"] = METADATA.validate_json(metadata)
        except ValidationError:
            raise ApiError(
                400,
                "invalid_request",
                "'metadata' must be a JSON object of at most 16 string keys (up to 64 "
                "characters) and string values (up to 512).",
                param="metadata",
            ) from None
    return fields


def _language(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_language(value)
    except UnknownLanguage as exc:
        raise ApiError(400, "invalid_request", str(exc), param="language") from None
