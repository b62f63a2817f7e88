"""Render a stored transcript in the response formats of OpenAI's transcription API."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from speechq.domain import TRANSCRIPT_CONTENT_TYPES

__all__ = ["render_transcript"]


def render_transcript(transcript: Mapping[str, Any], response_format: str) -> tuple[bytes, str]:
    """`transcript` is what the worker stores: text, language, duration, segments."""
    content_type = TRANSCRIPT_CONTENT_TYPES[response_format]
    text = str(transcript.get("text", ""))
    segments: Sequence[Mapping[str, Any]] = transcript.get("segments") or []
    if response_format == "json":
        body = json.dumps({"text": text})
    elif response_format == "text":
        body = text + "\n"
    elif response_format == "verbose_json":
        body = json.dumps(
            {
                "task": "transcribe",
                "language": transcript.get("language"),
                "duration": transcript.get("duration"),
                "text": text,
                "segments": [
                    {"id": i, "start": s["start"], "end": s["end"], "text": s["text"]}
                    for i, s in enumerate(segments)
                ],
            }
        )
    elif response_format == "srt":
        body = "\n".join(
            f"{i}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text']}\n"
            for i, s in enumerate(_cues(text, transcript, segments), start=1)
        )
    elif response_format == "vtt":
        cues = "\n".join(
            f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text']}\n"
            for s in _cues(text, transcript, segments)
        )
        body = "WEBVTT\n\n" + cues
    else:
        raise ValueError(f"unknown transcript format {response_format!r}")
    return body.encode(), content_type


def _cues(
    text: str, transcript: Mapping[str, Any], segments: Sequence[Mapping[str, Any]]
) -> Sequence[Mapping[str, Any]]:
    # A provider that gave no segments still yields one cue over the whole audio.
    if segments:
        return segments
    return [{"start": 0.0, "end": float(transcript.get("duration") or 0.0), "text": text}]


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(float(seconds) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"
