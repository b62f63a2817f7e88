"""Check an uploaded audio file and store it: per-model size limit, recognised by content
(magic bytes, then a PyAV probe), optional duration limit, streamed to the object store."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.errors import ApiError
from api.state import AppState
from api.upload_form import file_too_large_error
from speechq.net_guard import FetchFailed, TooLarge, UnsafeURL, fetch_to_file
from speechq.registry import TRANSCRIPTION
from worker import audio

__all__ = [
    "FETCH_FAILED_MESSAGE",
    "StoredUpload",
    "DEFAULT_MAX_FILE_SIZE_MB",
    "max_upload_bytes",
    "store_upload",
    "fetch_and_store",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_FILE_SIZE_MB = 25.0
FETCH_TIMEOUT_S = 30.0
FETCH_FAILED_MESSAGE = (
    "Could not fetch 'url': it must be a public http(s) address that answers 200 with the "
    "audio file itself (redirects are not followed)."
)
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
    """Fetch audio by URL (public addresses only unless SPEECHQ_FETCH_ALLOW_PRIVATE, no
    redirects, the upload size limit while it streams), then check and store it like an
    upload.

    What the tenant wrote wrong in the URL itself (scheme, credentials, a malformed URL)
    gets its own message. Anything that depends on the network - a refused address, a
    name that does not resolve, a closed port, a timeout, a reset, a redirect, a non-2xx
    answer - gets one and the same message, so the answers cannot be used to map what
    this server can reach. The real reason is logged."""
    limit = max_upload_bytes(state, model)
    with tempfile.TemporaryDirectory(prefix="speechq-fetch-") as tmp:
        path = Path(tmp) / "audio"
        try:
            fetch_to_file(
                url,
                path,
                max_bytes=limit,
                allow_private=state.settings.fetch_allow_private,
                timeout_s=FETCH_TIMEOUT_S,
            )
        except UnsafeURL as exc:
            if exc.rule in _TENANT_URL_RULES:
                raise ApiError(400, "invalid_request", f"'url': {exc}", param="url") from None
            log.warning("url input refused (%s): %s; %s", exc.rule, _loggable(url), exc)
            raise _fetch_failed() from None
        except TooLarge as exc:
            raise file_too_large_error(exc.passed_bytes, exc.max_bytes, param="url") from None
        except FetchFailed as exc:
            log.info("url input not fetched: %s; %s", _loggable(url), _reason(exc))
            raise _fetch_failed() from None
        with path.open("rb") as file:
            return _check_and_store(state, model, file, key, param="url")


# UnsafeURL rules about the URL as written, which say nothing about the network.
_TENANT_URL_RULES = frozenset({"invalid", "scheme", "credentials", "host", "port"})


def _fetch_failed() -> ApiError:
    return ApiError(400, "invalid_request", FETCH_FAILED_MESSAGE, param="url")


def _loggable(url: str) -> str:
    """Where the URL points, without the parts that may hold a secret (user info, path,
    query): scheme, host and port."""
    try:
        parsed = httpx.URL(url)
        return f"{parsed.scheme}://{parsed.netloc.decode('ascii').rpartition('@')[2]}"
    except (httpx.InvalidURL, TypeError, ValueError, UnicodeError):
        return "<malformed URL>"


def _reason(exc: FetchFailed) -> str:
    # A redirect's message carries its Location, which may hold a signed query string.
    if exc.status is not None and not 200 <= exc.status < 300:
        return f"answered HTTP {exc.status}"
    return str(exc)


async def store_upload(state: AppState, model: str, upload: UploadFile, key: str) -> StoredUpload:
    limit = max_upload_bytes(state, model)
    if upload.size is not None and upload.size > limit:
        raise file_too_large_error(upload.size, limit)
    return await run_in_threadpool(_check_and_store, state, model, upload.file, key)


def _check_and_store(
    state: AppState, model: str, file: BinaryIO, key: str, *, param: str = "file"
) -> StoredUpload:
    what = "The uploaded file" if param == "file" else "The file at 'url'"
    kind = audio.sniff_audio_format(file.read(64))
    file.seek(0)
    try:
        info = audio.probe(file)
    except audio.InvalidAudio:
        raise ApiError(
            400, "invalid_audio", f"{what} is not decodable audio.", param=param
        ) from None
    if kind is None:
        raise ApiError(
            415,
            "unsupported_format",
            f"Unsupported audio format ({info.codec_name}). "
            "Accepted: flac, mp3, mp4/m4a, mpeg/mpga, ogg, wav, webm.",
            param=param,
        )
    if not info.duration_seconds > 0:
        raise ApiError(
            400,
            "invalid_audio",
            f"{what} holds no sound: its audio stream has no samples (0 s long).",
            param=param,
        )
    longest = _max_duration_seconds(state, model)
    if longest is not None and info.duration_seconds > longest:
        raise ApiError(
            400,
            "audio_too_long",
            f"The audio lasts {info.duration_seconds:.1f} s; the model '{model}' takes at most "
            f"{longest:g} s.",
            param=param,
        )
    file.seek(0)
    size = state.store.put_file(key, file)
    return StoredUpload(
        bytes=size, extension=_EXTENSIONS[kind], duration_seconds=info.duration_seconds
    )
