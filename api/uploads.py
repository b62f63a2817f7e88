"""Store an uploaded audio file: size limit, recognised by content, then streamed to the
object store in chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.errors import ApiError
from api.state import AppState
from worker import audio

__all__ = ["StoredUpload", "DEFAULT_MAX_FILE_SIZE_MB", "max_file_size_mb", "store_upload"]

DEFAULT_MAX_FILE_SIZE_MB = 25.0
_CHUNK = 1024 * 1024
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


def max_file_size_mb(state: AppState, model: str) -> float:
    limits = [
        float(d.model_info["max_file_size_mb"])
        for d in state.registry.deployments_for(model)
        if d.model_info.get("max_file_size_mb") is not None
    ]
    return min(limits) if limits else DEFAULT_MAX_FILE_SIZE_MB


def _too_large(passed_bytes: int, limit_mb: float) -> ApiError:
    # LiteLLM's wording, which its users' clients may match on.
    return ApiError(
        413,
        "file_too_large",
        "File size is too large. Please check your file size. "
        f"Passed file size: {passed_bytes / 1_000_000:.2f} MB. Max file size: {limit_mb:g} MB",
        param="file",
    )


async def store_upload(state: AppState, model: str, upload: UploadFile, key: str) -> StoredUpload:
    limit_mb = max_file_size_mb(state, model)
    limit_bytes = int(limit_mb * 1_000_000)
    size = upload.size if upload.size is not None else None
    if size is not None and size > limit_bytes:
        raise _too_large(size, limit_mb)
    return await run_in_threadpool(_check_and_copy, state, upload.file, key, limit_bytes, limit_mb)


def _check_and_copy(
    state: AppState, file: BinaryIO, key: str, limit_bytes: int, limit_mb: float
) -> StoredUpload:
    head = file.read(64)
    kind = audio.sniff_audio_format(head)
    file.seek(0)
    try:
        audio.probe(file)
    except audio.InvalidAudio:
        raise ApiError(
            400, "invalid_audio", "The uploaded file is not decodable audio.", param="file"
        ) from None
    if kind is None:
        raise ApiError(
            415,
            "unsupported_format",
            "Unsupported audio format. Accepted: flac, mp3, mp4/m4a, mpeg/mpga, ogg, wav, webm.",
            param="file",
        )
    file.seek(0)
    with state.store.open_writer(key) as writer:
        while chunk := file.read(_CHUNK):
            if writer.bytes_written + len(chunk) > limit_bytes:
                writer.abort()
                raise _too_large(writer.bytes_written + len(chunk), limit_mb)
            writer.write(chunk)
    return StoredUpload(bytes=writer.bytes_written, extension=_EXTENSIONS[kind])
