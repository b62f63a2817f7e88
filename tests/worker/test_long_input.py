"""Long speech: sentence splitting and joining pieces without clicks or gaps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.audio import encode_pcm
from worker.audio_join import PAUSE_MS, join_speech, to_pcm
from worker.text_split import split_sentences, split_text

TEXT = (
    'Dr. Smith went to Washington. He arrived at 3 p.m. and said: "Hello!" '
    "Then he left... Why? Nobody knew.\n\nA new paragraph starts here. "
)


def test_sentences_keep_abbreviations_and_join_back() -> None:
    sentences = split_sentences(TEXT)
    assert sentences[0] == "Dr. Smith went to Washington. "
    assert sentences[1].startswith("He arrived at 3 p.m. and said")
    assert "".join(sentences) == TEXT


def test_long_text_splits_on_sentence_boundaries_within_limit() -> None:
    text = TEXT * 200
    pieces = split_text(text, 500)
    assert "".join(pieces) == text
    assert all(len(p) <= 500 for p in pieces)
    # Every piece ends where a sentence ends.
    assert all(p.rstrip()[-1] in '.!?"' for p in pieces)


def test_splitting_is_fast_on_a_whole_job() -> None:
    text = TEXT * 1000  # about 120,000 characters, more than a job may hold
    pieces = split_text(text, 4096)
    assert "".join(pieces) == text
    assert max(len(p) for p in pieces) <= 4096


def test_a_sentence_longer_than_the_limit_is_cut_at_clauses_then_spaces() -> None:
    sentence = "one, two, three; " * 40 + "end."
    pieces = split_text(sentence, 60)
    assert "".join(pieces) == sentence
    assert all(len(p) <= 60 for p in pieces)
    assert all(p.endswith((", ", "; ", ".")) for p in pieces)
    unbroken = "x" * 130
    assert split_text(unbroken, 50) == ["x" * 50, "x" * 50, "x" * 30]


def test_short_text_is_one_piece() -> None:
    assert split_text("Hello.", 4096) == ["Hello."]
    with pytest.raises(ValueError):
        split_text("Hello.", 0)


@settings(max_examples=60, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("ab .,!?\n"), min_size=1, max_size=400),
    st.integers(min_value=5, max_value=80),
)
def test_split_never_loses_text_or_passes_the_limit(text: str, limit: int) -> None:
    pieces = split_text(text, limit)
    assert all(len(p) <= limit for p in pieces)
    assert "".join(pieces).strip() == text.strip() or not text.strip()


def _tone(seconds: float, rate: int, lead_silence: float = 0.3) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = (np.sin(2 * np.pi * 220 * t) * 12000).astype(np.int16)
    silence = np.zeros(int(lead_silence * rate), dtype=np.int16)
    return np.concatenate([silence, tone, silence]).astype("<i2").tobytes()


def test_join_trims_silence_inserts_one_pause_and_fades_edges() -> None:
    first = (_tone(1.0, 24000), 24000)
    second = (_tone(0.5, 22050), 22050)  # another rate: resampled to the first's
    pcm, rate = join_speech([first, second])
    assert rate == 24000
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    # Each piece's 0.3 s of padding is gone; one pause plus small edges remain.
    expected = 1.0 + 0.5 + PAUSE_MS / 1000
    assert abs(samples.size / rate - expected) < 0.15
    # No click: the edges start and end at (near) zero, and nothing jumps anywhere.
    assert abs(samples[0]) < 50 and abs(samples[-1]) < 50
    assert np.max(np.abs(np.diff(samples))) < 2000
    # No gap longer than the pause.
    silent = np.abs(samples) < 200
    longest, run = 0, 0
    for quiet in silent:
        run = run + 1 if quiet else 0
        longest = max(longest, run)
    assert longest / rate < PAUSE_MS / 1000 + 0.1


def test_to_pcm_decodes_encoded_answers() -> None:
    pcm = _tone(0.5, 24000, lead_silence=0)
    mp3 = encode_pcm(pcm, 24000, "mp3")
    decoded, rate = to_pcm(mp3, "mp3", None)
    assert rate == 24000
    assert abs(len(decoded) - len(pcm)) / len(pcm) < 0.1
    assert to_pcm(pcm, "pcm", 24000) == (pcm, 24000)
    with pytest.raises(ValueError):
        to_pcm(pcm, "pcm", None)
