"""Check an uploaded audio file and store it: per-model size limit, recognised by content
(magic bytes, then a PyAV probe), optional duration limit, streamed to the object store."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.errors import ApiError
from api.state import AppState
from api.upload_form import file_too_large_error
from speechq.net_guard import FetchError, TooLarge, UnsafeURL, fetch_to_file
from speechq.registry import TRANSCRIPTION
from worker import audio

__all__ = [
    "StoredUpload",
    "DEFAULT_MAX_FILE_SIZE_MB",
    "max_upload_bytes",
    "store_upload",
    "fetch_and_store",
]

DEFAULT_MAX_FILE_SIZE_MB = 25.0
FETCH_TIMEOUT_S = 30.0
_EXTENSIONS = {
    "mp3": "mp3",
    "mp4": "m4a",
    "ogg": "ogg",
    "wav": "wav",
    "flac": "flac",
    "webm": "webm",
}


@dataclass(frozen=True)
class StoredUpload:
    bytes: int
    extension: str
    duration_seconds: float


def max_upload_bytes(state: AppState, model: str | None) -> int:
    """The model's `model_info.max_file_size_mb` (the smallest among its deployments), or
    with no model yet the largest any transcription model allows."""
    if model is not None and state.registry.resolve(model) is not None:
        names = [model]
    else:
        names = [m.id for m in state.registry.models() if m.mode == TRANSCRIPTION]
    limits = [_model_limit_mb(state, name) for name in names] or [DEFAULT_MAX_FILE_SIZE_MB]
    return int(max(limits) * 1_000_000)


def _model_limit_mb(state: AppState, model: str) -> float:
    limits = [
        float(d.model_info["max_file_size_mb"])
        for d in state.registry.deployments_for(model)
        if d.model_info.get("max_file_size_mb") is not None
    ]
    return min(limits) if limits else DEFAULT_MAX_FILE_SIZE_MB


def _max_duration_seconds(state: AppState, model: str) -> float | None:
    limits = [
        float(d.model_info["max_duration_seconds"])
        for d in state.registry.deployments_for(model)
        if d.model_info.get("max_duration_seconds") is not None
    ]
    return min(limits) if limits else None


def fetch_and_store(state: AppState, model: str, url: str, key: str) -> StoredUpload:
    """Fetch audio by URL (public addresses only, no redirects, the upload size limit while
    it streams), then check and store it like an upload."""
    limit = max_upload_bytes(state, model)
    with tempfile.TemporaryDirectory(prefix="speechq-fetch-") as tmp:
        path = Path(tmp) / "audio"
        try:
            fetch_to_file(
                url,
                path,
                max_bytes=limit,
                allow_private=state.settings.webhook_allow_private,
                timeout_s=FETCH_TIMEOUT_S,
            )
        except UnsafeURL as exc:
            raise ApiError(400, "invalid_request", str(exc), param="url") from None
        except TooLarge as exc:
            raise file_too_large_error(exc.passed_bytes, exc.max_bytes) from None
        except FetchError as exc:
            raise ApiError(
                400, "invalid_request", f"Could not fetch 'url': {exc}", param="url"
            ) from None
        with path.open("rb") as file:
            return _check_and_store(state, model, file, key)


async def store_upload(state: AppState, model: str, upload: UploadFile, key: str) -> StoredUpload:
    limit = max_upload_bytes(state, model)
    if upload.size is not None and upload.size > limit:
        raise file_too_large_error(upload.size, limit)
    return await run_in_threadpool(_check_and_store, state, model, upload.file, key)


def _check_and_store(state: AppState, model: str, file: BinaryIO, key: str) -> StoredUpload:
    kind = audio.sniff_audio_format(file.read(64))
    file.seek(0)
    try:
        info = audio.probe(file)
    except audio.InvalidAudio:
        raise ApiError(
            400, "invalid_audio", "The uploaded file is not decodable audio.", param="file"
        ) from None
    if kind is None:
        raise ApiError(
            415,
            "unsupported_format",
            f"Unsupported audio format ({info.codec_name}). "
            "Accepted: flac, mp3, mp4/m4a, mpeg/mpga, ogg, wav, webm.",
            param="file",
        )
    longest = _max_duration_seconds(state, model)
    if longest is not None and info.duration_seconds > longest:
        raise ApiError(
            400,
            "audio_too_long",
            f"The audio lasts {info.duration_seconds:.1f} s; the model '{model}' takes at most "
            f"{longest:g} s.",
            param="file",
        )
    file.seek(0)
    size = state.store.put_file(key, file)
    return StoredUpload(
        bytes=size, extension=_EXTENSIONS[kind], duration_seconds=info.duration_seconds
    )
