"""Domain types shared by the API and the worker."""

from __future__ import annotations

import enum

__all__ = [
    "JobStatus",
    "JobType",
    "TERMINAL_STATUSES",
    "SPEECH_FORMATS",
    "TRANSCRIPT_FORMATS",
    "AUDIO_CONTENT_TYPES",
    "TRANSCRIPT_CONTENT_TYPES",
]


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


class JobType(enum.StrEnum):
    speech = "speech"
    transcription = "transcription"


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.canceled})

SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")

AUDIO_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}

TRANSCRIPT_CONTENT_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
