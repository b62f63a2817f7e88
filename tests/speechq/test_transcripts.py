from __future__ import annotations

import json

import pytest

from speechq.transcripts import render_transcript

TRANSCRIPT = {
    "text": "Hello there. General Kenobi.",
    "language": "en",
    "duration": 3725.5,
    "segments": [
        {"start": 0.0, "end": 1.25, "text": "Hello there."},
        {"start": 3723.0, "end": 3725.5, "text": "General Kenobi."},
    ],
}


def test_json_and_text() -> None:
    body, content_type = render_transcript(TRANSCRIPT, "json")
    assert json.loads(body) == {"text": TRANSCRIPT["text"]}
    assert content_type == "application/json"
    body, content_type = render_transcript(TRANSCRIPT, "text")
    assert body == b"Hello there. General Kenobi.\n"
    assert content_type.startswith("text/plain")


def test_srt_numbers_cues_with_comma_millis() -> None:
    body, _ = render_transcript(TRANSCRIPT, "srt")
    assert body.decode() == (
        "1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n"
        "2\n01:02:03,000 --> 01:02:05,500\nGeneral Kenobi.\n"
    )


def test_vtt_has_header_and_dot_millis() -> None:
    body, content_type = render_transcript(TRANSCRIPT, "vtt")
    assert body.decode() == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n\n"
        "01:02:03.000 --> 01:02:05.500\nGeneral Kenobi.\n"
    )
    assert content_type.startswith("text/vtt")


def test_verbose_json_has_openai_fields() -> None:
    body, _ = render_transcript(TRANSCRIPT, "verbose_json")
    data = json.loads(body)
    assert data["task"] == "transcribe"
    assert data["duration"] == 3725.5
    assert data["segments"][1] == {
        "id": 1,
        "start": 3723.0,
        "end": 3725.5,
        "text": "General Kenobi.",
    }


def test_no_segments_still_gives_one_cue() -> None:
    body, _ = render_transcript({"text": "hi", "duration": 2.0, "segments": []}, "srt")
    assert body.decode() == "1\n00:00:00,000 --> 00:00:02,000\nhi\n"


def test_unknown_format() -> None:
    with pytest.raises(KeyError):  # not a format any route accepts
        render_transcript(TRANSCRIPT, "docx")
