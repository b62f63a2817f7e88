"""ElevenLabsProvider against a fake ElevenLabs server that checks the wire format of every call."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from tests.worker.provider_fakes import (
    AUDIO_BYTES,
    HTTP_STATUS_ERRORS,
    TRANSPORT_FAILURES,
    Answer,
    RecordingServer,
    Upload,
    answering,
    assert_connection_refused,
    assert_status_classes,
    assert_status_error,
    assert_transport_error,
    parse_multipart,
    provider_factory,
    raising,
    serve_recording,
    single_query,
    standalone_provider,
    unused_port,
)
from worker.providers.base import SynthesisRequest, TranscriptionRequest, TranscriptSegment
from worker.providers.elevenlabs import (
    DEFAULT_VOICE_MAP,
    ElevenLabsProvider,
    choose_output_format,
    group_words,
    map_elevenlabs_error,
    model_character_limit,
)
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)

API_KEY = "sk_0123456789abcdef0123456789abcdef"
FAKE_BASE = "http://fake.local"
TTS_MODEL = "eleven_multilingual_v2"
STT_MODEL = "scribe_v1"
RIVER = "SAz9YHcvj6GT2YYXdXww"  # what "alloy" maps to
# Documented output formats (elevenlabs-python ConvertTextToSpeechRequestOutputFormat).
OUTPUT_FORMATS = {
    *(f"mp3_{rate}" for rate in ("22050_32", "24000_48", "44100_32", "44100_64", "44100_96")),
    *(f"mp3_44100_{kbps}" for kbps in (128, 192)),
    *(f"pcm_{rate}" for rate in (8000, 16000, 22050, 24000, 32000, 44100, 48000)),
    *(f"opus_48000_{kbps}" for kbps in (32, 64, 96, 128, 192)),
    "ulaw_8000",
    "alaw_8000",
}
VOICE_SETTINGS_FIELDS = {"stability", "similarity_boost", "style", "use_speaker_boost", "speed"}
STT_FIELDS = {"model_id", "language_code", "temperature"}

FAKE_MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 8
FAKE_PCM = b"\x00\x00\xff\x7f\x01\x80" * 8


def word(text: str, start: float, end: float, speaker: str = "speaker_0", **extra: Any) -> dict:
    return {
        "text": text,
        "start": start,
        "end": end,
        "type": "word",
        "speaker_id": speaker,
        "logprob": -0.05,
        **extra,
    }


def space(start: float, end: float, speaker: str = "speaker_0") -> dict:
    return {"text": " ", "start": start, "end": end, "type": "spacing", "speaker_id": speaker}


# What Scribe answers: every token with times, spacing between words, an audio event.
SCRIBE_ANSWER: dict[str, Any] = {
    "language_code": "eng",
    "language_probability": 0.987,
    "text": "Hello there. General Kenobi! (laughter) You are a bold one.",
    "words": [
        word("Hello", 0.12, 0.48),
        space(0.48, 0.52),
        word("there.", 0.52, 0.96),
        space(0.96, 1.3),
        word("General", 1.3, 1.72, "speaker_1"),
        space(1.72, 1.8, "speaker_1"),
        word("Kenobi!", 1.8, 2.4, "speaker_1"),
        space(2.4, 2.5, "speaker_1"),
        {
            "text": "(laughter)",
            "start": 2.5,
            "end": 3.1,
            "type": "audio_event",
            "speaker_id": "speaker_1",
        },
        space(3.1, 3.3, "speaker_1"),
        word("You", 3.3, 3.5),
        space(3.5, 3.52),
        word("are", 3.52, 3.7),
        space(3.7, 3.72),
        word("a", 3.72, 3.8),
        space(3.8, 3.82),
        word("bold", 3.82, 4.1),
        space(4.1, 4.12),
        word("one.", 4.12, 4.6),
    ],
    "transcription_id": "tr_01jx3w",
}
EXPECTED_SEGMENTS = (
    TranscriptSegment(start=0.12, end=0.96, text="Hello there."),
    TranscriptSegment(start=1.3, end=2.4, text="General Kenobi!"),
    TranscriptSegment(start=2.5, end=3.1, text="(laughter)"),
    TranscriptSegment(start=3.3, end=4.6, text="You are a bold one."),
)


@dataclass
class Call:
    """One request the fake server accepted, already checked and decoded."""

    url: str
    path: str
    query: dict[str, str]
    headers: httpx.Headers
    json: dict[str, Any] | None = None
    upload: Upload | None = None
    timeout: dict[str, float | None] = field(default_factory=dict)


class FakeElevenLabs:
    """An httpx handler that checks each request like ElevenLabs would and answers realistically.

    Wire-format mistakes fail the test right here, with an AssertionError in the handler.
    Set `failure` to answer every call with that response instead.
    """

    def __init__(self, *, base: str = FAKE_BASE, api_key: str | None = API_KEY) -> None:
        self.base = base.rstrip("/")
        self.prefix = urlsplit(self.base).path  # a proxy's path before /v1
        self.api_key = api_key
        self.calls: list[Call] = []
        self.failure: httpx.Response | None = None
        self.transcript: dict[str, Any] = SCRIBE_ANSWER
        self.transcript_headers: dict[str, str] = {"request-id": "req_stt"}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert "authorization" not in request.headers  # ElevenLabs uses xi-api-key only
        if self.api_key is None:
            assert "xi-api-key" not in request.headers
        else:
            assert request.headers["xi-api-key"] == self.api_key
        url = str(request.url)
        assert url.startswith(f"{self.base}/v1/"), url
        path = request.url.path.removeprefix(self.prefix)
        call = Call(
            url,
            path,
            single_query(request.url),
            request.headers,
            timeout=request.extensions.get("timeout", {}),
        )
        self.calls.append(call)
        if self.failure is not None:
            return self.failure
        if path.startswith("/v1/text-to-speech/"):
            return self.answer_speech(request, call)
        if path == "/v1/speech-to-text":
            return self.answer_transcription(request, call)
        raise AssertionError(f"unexpected URL {request.url}")

    def answer_speech(self, request: httpx.Request, call: Call) -> httpx.Response:
        raw_path = request.url.raw_path.decode().split("?")[0].removeprefix(self.prefix)
        assert raw_path.count("/") == 3, "the voice id is exactly one path segment"
        assert unquote(raw_path.removeprefix("/v1/text-to-speech/"))
        assert call.query.keys() == {"output_format"}
        assert call.query["output_format"] in OUTPUT_FORMATS
        assert request.headers["content-type"] == "application/json"
        body = json.loads(request.content)
        assert {"text", "model_id"} <= body.keys() <= {"text", "model_id", "voice_settings"}
        assert isinstance(body["text"], str) and body["text"]
        settings = body.get("voice_settings")
        if settings is not None:
            assert settings and settings.keys() <= VOICE_SETTINGS_FIELDS
            if "speed" in settings:
                assert isinstance(settings["speed"], float)
                assert 0.7 <= settings["speed"] <= 1.2  # the documented range
        call.json = body
        audio = FAKE_MP3 if call.query["output_format"].startswith("mp3") else FAKE_PCM
        content_type = "audio/mpeg" if audio is FAKE_MP3 else "audio/pcm"
        return httpx.Response(
            200,
            content=audio,
            headers={
                "content-type": content_type,
                "request-id": "req_speech",
                "x-character-count": str(len(body["text"])),
            },
        )

    def answer_transcription(self, request: httpx.Request, call: Call) -> httpx.Response:
        assert call.query == {}
        assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
        upload = parse_multipart(request.headers, request.content)
        assert upload.file_field == "file"
        assert {"model_id"} <= upload.fields.keys() <= STT_FIELDS
        call.upload = upload
        return httpx.Response(200, json=self.transcript, headers=self.transcript_headers)


@pytest.fixture
def fake() -> FakeElevenLabs:
    return FakeElevenLabs()


@pytest.fixture
def make_provider(fake: FakeElevenLabs) -> Iterator[Callable[..., ElevenLabsProvider]]:
    """Build a provider wired to `fake`; `api_base=None` means ElevenLabs' default."""
    with provider_factory(
        ElevenLabsProvider, fake, model=TTS_MODEL, api_base=FAKE_BASE, api_key=API_KEY
    ) as create:
        yield create


@pytest.fixture
def audio_path(tmp_path: Path) -> Path:
    path = tmp_path / "clip.wav"
    path.write_bytes(AUDIO_BYTES)
    return path


def speech(**overrides: Any) -> SynthesisRequest:
    values: dict[str, Any] = {"model": TTS_MODEL, "text": "Hello, world.", "voice": "alloy"}
    return SynthesisRequest(**(values | overrides))


def transcription(audio_path: Path, **overrides: Any) -> TranscriptionRequest:
    values: dict[str, Any] = {"model": STT_MODEL, "audio_path": audio_path, "filename": "clip.wav"}
    return TranscriptionRequest(**(values | overrides))


# Text to speech.


def test_synthesize_speech_mp3(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider]
) -> None:
    result = make_provider().synthesize(speech())

    (call,) = fake.calls
    assert call.url == f"{FAKE_BASE}/v1/text-to-speech/{RIVER}?output_format=mp3_44100_128"
    assert call.headers["content-type"] == "application/json"
    # At speed 1 we send no voice_settings, so the voice keeps its own stored settings.
    assert call.json == {"text": "Hello, world.", "model_id": TTS_MODEL}
    assert result.audio == FAKE_MP3
    assert result.audio_format == "mp3"
    assert result.sample_rate is None
    assert result.characters == len("Hello, world.")
    assert result.request_id == "req_speech"


@pytest.mark.parametrize("wanted", ["pcm", "wav", "flac", "aac", "opus", "ogg"])
def test_synthesize_speech_other_formats_ask_for_pcm(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider], wanted: str
) -> None:
    result = make_provider().synthesize(speech(response_format=wanted))

    assert fake.calls[0].query == {"output_format": "pcm_24000"}
    assert result.audio == FAKE_PCM
    assert (result.audio_format, result.sample_rate) == ("pcm", 24000)


def test_choose_output_format() -> None:
    assert choose_output_format("mp3") == ("mp3_44100_128", "mp3", None)
    assert choose_output_format("wav") == ("pcm_24000", "pcm", 24000)


@pytest.mark.parametrize(("voice", "voice_id"), sorted(DEFAULT_VOICE_MAP.items()))
def test_synthesize_speech_openai_voices_map_to_premade_voices(
    fake: FakeElevenLabs,
    make_provider: Callable[..., ElevenLabsProvider],
    voice: str,
    voice_id: str,
) -> None:
    make_provider().synthesize(speech(voice=voice))

    assert fake.calls[0].path == f"/v1/text-to-speech/{voice_id}"


def test_default_voice_map_covers_every_openai_voice_with_distinct_ids() -> None:
    openai_voices = {"alloy", "ash", "ballad", "coral", "echo", "fable"}
    openai_voices |= {"nova", "onyx", "sage", "shimmer", "verse"}
    assert DEFAULT_VOICE_MAP.keys() == openai_voices
    assert len(set(DEFAULT_VOICE_MAP.values())) == len(openai_voices)
    assert all(
        len(voice_id) == 20 and voice_id.isalnum() for voice_id in DEFAULT_VOICE_MAP.values()
    )


@pytest.mark.parametrize(
    ("voice", "params", "expected_path"),
    [
        ("21m00Tcm4TlvDq8ikWAM", {}, "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM"),  # an id
        (None, {}, f"/v1/text-to-speech/{RIVER}"),  # the default voice: alloy's
        ("alloy", {"voice_map": {"alloy": "my-clone"}}, "/v1/text-to-speech/my-clone"),
        (None, {"voice_map": {"default": "my-clone"}}, "/v1/text-to-speech/my-clone"),
    ],
)
def test_synthesize_speech_voice_resolution(
    fake: FakeElevenLabs,
    make_provider: Callable[..., ElevenLabsProvider],
    voice: str | None,
    params: dict[str, Any],
    expected_path: str,
) -> None:
    make_provider(**params).synthesize(speech(voice=voice))

    assert fake.calls[0].path == expected_path


def test_synthesize_speech_voice_id_cannot_escape_the_path(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider]
) -> None:
    make_provider().synthesize(speech(voice="../../v1/user?x=1"))

    (call,) = fake.calls
    assert call.path == "/v1/text-to-speech/../../v1/user?x=1"  # decoded: one segment
    assert call.url.startswith(f"{FAKE_BASE}/v1/text-to-speech/..%2F..%2Fv1%2Fuser%3Fx%3D1?")
    assert call.query == {"output_format": "mp3_44100_128"}


@pytest.mark.parametrize("speed", [0.7, 0.85, 1.2])
def test_synthesize_speech_speed_in_range(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider], speed: float
) -> None:
    make_provider().synthesize(speech(speed=speed))

    assert fake.calls[0].json is not None
    assert fake.calls[0].json["voice_settings"] == {"speed": speed}


@pytest.mark.parametrize("speed", [0.25, 0.69, 1.21, 4.0])
def test_synthesize_speech_speed_out_of_range_is_unsupported(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider], speed: float
) -> None:
    with pytest.raises(UnsupportedFeature, match="outside the supported 0.7-1.2"):
        make_provider().synthesize(speech(speed=speed))

    assert fake.calls == []  # refused before spending a request


@pytest.mark.parametrize(("speed", "sent"), [(0.25, 0.7), (4.0, 1.2)])
def test_synthesize_speech_speed_clamped_when_configured(
    fake: FakeElevenLabs,
    make_provider: Callable[..., ElevenLabsProvider],
    speed: float,
    sent: float,
) -> None:
    make_provider(clamp_speed=True).synthesize(speech(speed=speed))

    assert fake.calls[0].json is not None
    assert fake.calls[0].json["voice_settings"] == {"speed": sent}


def test_synthesize_speech_deployment_voice_settings_and_speed(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider]
) -> None:
    settings = {"stability": 0.4, "similarity_boost": 0.8, "style": 0.0, "use_speaker_boost": True}
    provider = make_provider(voice_settings=settings)
    provider.synthesize(speech())
    provider.synthesize(speech(speed=1.1))

    plain, faster = (call.json or {} for call in fake.calls)
    assert plain["voice_settings"] == settings
    assert faster["voice_settings"] == settings | {"speed": 1.1}
    assert settings.keys() == {"stability", "similarity_boost", "style", "use_speaker_boost"}


def test_synthesize_speech_instructions_are_dropped(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider]
) -> None:
    make_provider().synthesize(speech(instructions="Speak like a pirate."))

    assert fake.calls[0].json == {"text": "Hello, world.", "model_id": TTS_MODEL}


@pytest.mark.parametrize(
    ("api_base", "expected_base"),
    [
        ("http://fake.local", "http://fake.local"),
        ("http://fake.local/", "http://fake.local"),
        ("http://fake.local/v1", "http://fake.local"),  # a base copied with its /v1
        ("http://fake.local/v1/", "http://fake.local"),
        ("http://proxy.local/elevenlabs", "http://proxy.local/elevenlabs"),
        (None, "https://api.elevenlabs.io"),
    ],
)
def test_synthesize_speech_url_from_api_base(
    make_provider: Callable[..., ElevenLabsProvider], api_base: str | None, expected_base: str
) -> None:
    fake = FakeElevenLabs(base=expected_base)
    make_provider(api_base=api_base, handler=fake).synthesize(speech())

    assert [call.url.split("?")[0] for call in fake.calls] == [
        f"{expected_base}/v1/text-to-speech/{RIVER}"
    ]


def test_synthesize_speech_without_api_key_sends_no_key_header(
    make_provider: Callable[..., ElevenLabsProvider],
) -> None:
    fake = FakeElevenLabs(api_key=None)  # asserts the header is absent
    result = make_provider(api_key=None, handler=fake).synthesize(speech())

    assert result.audio == FAKE_MP3


def test_synthesize_speech_timeout(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider]
) -> None:
    make_provider(timeout=7).synthesize(speech())
    provider = make_provider()
    provider.synthesize(speech())

    assert fake.calls[0].timeout == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}
    assert fake.calls[1].timeout == provider.http.timeout.as_dict()


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"detail": {"status": "oops", "message": "oops"}}', "application/json"),
        (b"<html>proxy says hi</html>", "text/html"),
        (b"", "audio/mpeg"),
    ],
)
def test_synthesize_speech_non_audio_answer_is_unavailable(
    make_provider: Callable[..., ElevenLabsProvider], content: bytes, content_type: str
) -> None:
    with pytest.raises(ProviderUnavailable, match="expected mp3_44100_128 audio"):
        make_provider(handler=answering(content, content_type)).synthesize(speech())


def test_synthesize_speech_with_a_scribe_model_is_unsupported(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider]
) -> None:
    with pytest.raises(UnsupportedFeature, match="does not do text-to-speech"):
        make_provider(model=STT_MODEL).synthesize(speech(model=STT_MODEL))

    assert fake.calls == []


@pytest.mark.parametrize(
    ("model", "limit"),
    [
        ("eleven_v3", 5_000),
        ("eleven_v3_preview_2025_06_03", 5_000),
        ("eleven_multilingual_v2", 10_000),
        ("eleven_flash_v2_5", 40_000),
        ("eleven_turbo_v2_5", 40_000),
        ("eleven_flash_v2", 30_000),
        ("eleven_turbo_v2", 30_000),
        ("eleven_monolingual_v1", 10_000),
        ("eleven_future_v9", 5_000),  # unknown: the smallest current limit
    ],
)
def test_max_characters_per_model(
    make_provider: Callable[..., ElevenLabsProvider], model: str, limit: int
) -> None:
    assert make_provider(model=model).max_characters() == limit


def test_max_characters_model_info_wins(
    make_provider: Callable[..., ElevenLabsProvider],
) -> None:
    provider = make_provider(model="eleven_flash_v2_5", model_info={"max_input_characters": 900})
    assert provider.max_characters() == 900


def test_model_character_limit_prefers_the_longest_prefix() -> None:
    assert model_character_limit("eleven_flash_v2_5") == 40_000  # not eleven_flash_v2's
    assert model_character_limit("scribe_v1") is None


# Speech to text.


def test_transcribe_audio(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider], audio_path: Path
) -> None:
    result = make_provider(model=STT_MODEL).transcribe(transcription(audio_path))

    (call,) = fake.calls
    assert call.url == f"{FAKE_BASE}/v1/speech-to-text"
    assert call.upload is not None
    assert call.upload.fields == {"model_id": STT_MODEL}
    assert call.upload.filename == "clip.wav"
    assert call.upload.content_type in {"audio/x-wav", "audio/wav"}
    assert call.upload.data == AUDIO_BYTES
    assert result.text == SCRIBE_ANSWER["text"]
    assert result.language == "eng"
    assert result.duration_seconds == 4.6
    assert result.segments == EXPECTED_SEGMENTS
    assert result.request_id == "req_stt"


def test_transcribe_audio_optional_fields(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider], audio_path: Path
) -> None:
    request = transcription(audio_path, language="en", prompt="Star Wars.", temperature=0.0)
    make_provider(model=STT_MODEL).transcribe(request)

    upload = fake.calls[0].upload
    assert upload is not None
    # 0 is a real temperature, not "unset"; Scribe has no text prompt, so it is dropped.
    assert upload.fields == {"model_id": STT_MODEL, "language_code": "en", "temperature": "0.0"}


def test_transcribe_audio_filename_borrows_the_file_extension(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider], audio_path: Path
) -> None:
    make_provider(model=STT_MODEL).transcribe(transcription(audio_path, filename="audio"))

    assert fake.calls[0].upload is not None
    assert fake.calls[0].upload.filename == "audio.wav"


def test_transcribe_audio_request_id_from_the_body_without_header(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider], audio_path: Path
) -> None:
    fake.transcript_headers = {}
    result = make_provider(model=STT_MODEL).transcribe(transcription(audio_path))

    assert result.request_id == "tr_01jx3w"


def test_transcribe_audio_silence(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider], audio_path: Path
) -> None:
    fake.transcript = {"language_code": "eng", "language_probability": 0.5, "text": "", "words": []}
    result = make_provider(model=STT_MODEL).transcribe(transcription(audio_path))

    assert (result.text, result.segments, result.duration_seconds) == ("", (), None)


def test_transcribe_audio_with_a_tts_model_is_unsupported(
    fake: FakeElevenLabs, make_provider: Callable[..., ElevenLabsProvider], audio_path: Path
) -> None:
    with pytest.raises(UnsupportedFeature, match="does not do speech-to-text"):
        make_provider().transcribe(transcription(audio_path, model=TTS_MODEL))

    assert fake.calls == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"transcript": "wrong key"}',
        b'["a list"]',
        b'{"text": "hi", "words": [{"type": "word", "start": 0.1}]}',
        b'{"text": "hi", "words": [{"text": "hi", "start": "soon", "end": 1}]}',
        b'{"text": "hi", "words": ["hi"]}',
    ],
)
def test_transcribe_audio_unexpected_json_is_unavailable(
    make_provider: Callable[..., ElevenLabsProvider], audio_path: Path, content: bytes
) -> None:
    provider = make_provider(model=STT_MODEL, handler=answering(content, "application/json"))
    with pytest.raises(ProviderUnavailable):
        provider.transcribe(transcription(audio_path))


def test_group_words_without_punctuation_or_diarization() -> None:
    words = [word("so", 0.0, 0.2), space(0.2, 0.3), word("um", 0.3, 0.5)]

    assert group_words(words) == (TranscriptSegment(start=0.0, end=0.5, text="so um"),)


def test_group_words_skips_leading_spacing_and_handles_missing_times() -> None:
    words = [
        space(0.0, 0.1),
        word("Yes.", 0.1, 0.4),
        {"text": "(music)", "type": "audio_event", "speaker_id": "speaker_0"},  # no times
        space(0.9, 1.0),
        word("No?", 1.0, 1.3),
    ]

    assert group_words(words) == (
        TranscriptSegment(start=0.1, end=0.4, text="Yes."),
        # The untimed event borrows the first time in its segment.
        TranscriptSegment(start=1.0, end=1.3, text="(music) No?"),
    )


def test_group_words_untimed_segment_sits_at_the_previous_end() -> None:
    words = [word("Hi.", 0.0, 0.5), {"text": "(music)", "type": "audio_event", "speaker_id": "x"}]

    assert group_words(words)[1] == TranscriptSegment(start=0.5, end=0.5, text="(music)")


def test_group_words_cjk_sentence_ends() -> None:
    words = [word("你好。", 0.0, 0.5), word("再见！", 0.6, 1.0)]

    assert [segment.text for segment in group_words(words)] == ["你好。", "再见！"]


# Errors: one mapper, every status class, both calls.

STATUS_ERRORS = [*HTTP_STATUS_ERRORS, (402, AuthenticationFailed)]


def elevenlabs_error(
    status: int, detail_status: str, message: str, **headers: str
) -> httpx.Response:
    """An error in ElevenLabs' envelope."""
    body = {"detail": {"status": detail_status, "message": message}}
    return httpx.Response(status, json=body, headers={"request-id": "req_err", **headers})


def call_provider(provider: ElevenLabsProvider, kind: str, audio_path: Path) -> None:
    if kind == "speech":
        provider.synthesize(speech())
    else:
        provider.transcribe(transcription(audio_path))


@pytest.mark.parametrize("kind", ["speech", "transcription"])
@pytest.mark.parametrize(("status", "error_class"), STATUS_ERRORS)
def test_provider_error_for_status(
    fake: FakeElevenLabs,
    make_provider: Callable[..., ElevenLabsProvider],
    audio_path: Path,
    kind: str,
    status: int,
    error_class: type[ProviderError],
) -> None:
    # A proxy in between may echo the key; we must not rely on anyone masking it.
    fake.failure = elevenlabs_error(status, "some_status", f"Key {API_KEY} refused, try again.")
    model = TTS_MODEL if kind == "speech" else STT_MODEL

    with pytest.raises(error_class) as caught:
        call_provider(make_provider(model=model), kind, audio_path)

    assert_status_error(caught.value, error_class, status, API_KEY)
    assert "Key *** refused, try again. (some_status)" in str(caught.value)
    assert f"elevenlabs HTTP {status}" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "detail_status", "error_class"),
    [
        (400, "voice_not_found", UnsupportedFeature),  # another deployment may have it
        (404, "voice_not_found", UnsupportedFeature),
        (400, "max_character_limit_exceeded", InvalidInput),
        (401, "invalid_api_key", AuthenticationFailed),
        (401, "quota_exceeded", AuthenticationFailed),  # out of credit: move on
        (429, "too_many_concurrent_requests", RateLimited),
        (429, "system_busy", RateLimited),
    ],
)
def test_provider_error_for_documented_detail_status(
    fake: FakeElevenLabs,
    make_provider: Callable[..., ElevenLabsProvider],
    status: int,
    detail_status: str,
    error_class: type[ProviderError],
) -> None:
    fake.failure = elevenlabs_error(status, detail_status, "Something about the request.")

    with pytest.raises(error_class) as caught:
        make_provider().synthesize(speech())

    assert type(caught.value) is error_class
    assert f"({detail_status})" in caught.value.message


@pytest.mark.parametrize(
    ("headers", "expected_s"),
    [({"retry-after": "20"}, 20.0), ({"retry-after": "1.5"}, 1.5), ({}, None)],
)
def test_provider_error_rate_limited_retry_after(
    fake: FakeElevenLabs,
    make_provider: Callable[..., ElevenLabsProvider],
    headers: dict[str, str],
    expected_s: float | None,
) -> None:
    fake.failure = elevenlabs_error(429, "system_busy", "The system is busy.", **headers)

    with pytest.raises(RateLimited) as caught:
        make_provider().synthesize(speech())

    assert caught.value.retry_after_s == expected_s
    assert "The system is busy. (system_busy)" in caught.value.message


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            httpx.Response(
                422,
                json={
                    "detail": [
                        {"loc": ["body", "text"], "msg": "Field required", "type": "missing"}
                    ]
                },
            ),
            "body.text: Field required",
        ),
        (httpx.Response(400, json={"detail": "Invalid output format"}), "Invalid output format"),
        (httpx.Response(400, json={"detail": {"status": "bad_thing"}}), "bad_thing"),
        (httpx.Response(500, json={"message": "Internal error"}), "Internal error"),
        (httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"), "502 Bad Gateway"),
        (httpx.Response(503), "Service Unavailable"),
    ],
)
def test_provider_error_message_from_other_bodies(
    make_provider: Callable[..., ElevenLabsProvider], response: httpx.Response, expected: str
) -> None:
    with pytest.raises(ProviderError, match=expected):
        make_provider(handler=lambda request: response).synthesize(speech())


@pytest.mark.parametrize(("exception", "error_class"), TRANSPORT_FAILURES)
@pytest.mark.parametrize("kind", ["speech", "transcription"])
def test_provider_error_for_transport_failure(
    make_provider: Callable[..., ElevenLabsProvider],
    audio_path: Path,
    kind: str,
    exception: httpx.TransportError,
    error_class: type[ProviderError],
) -> None:
    model = TTS_MODEL if kind == "speech" else STT_MODEL
    with pytest.raises(error_class) as caught:
        call_provider(make_provider(model=model, handler=raising(exception)), kind, audio_path)

    assert_transport_error(caught.value, exception, API_KEY)


def test_provider_error_connection_refused_over_real_sockets() -> None:
    provider = standalone_provider(
        ElevenLabsProvider,
        model=TTS_MODEL,
        api_base=f"http://127.0.0.1:{unused_port()}",
        api_key=API_KEY,
        timeout=5,
    )
    assert_connection_refused(provider, speech(), API_KEY)


def test_map_elevenlabs_error_every_status_class() -> None:
    assert_status_classes(
        map_elevenlabs_error,
        [
            *STATUS_ERRORS,
            (504, ProviderUnavailable),
            (302, ProviderUnavailable),
            (418, ProviderUnavailable),
        ],
        url=f"{FAKE_BASE}/v1/text-to-speech/x",
        json={"detail": {"status": "s", "message": "m"}},
    )


# Real HTTP: the provider's own httpx client against a tiny server on a socket.


def answer_real_request(path: str, headers: httpx.Headers, body: bytes) -> Answer:
    """A minimal ElevenLabs server."""
    if path.startswith("/v1/text-to-speech/"):
        content, content_type = FAKE_PCM, "audio/pcm"
    elif path == "/v1/speech-to-text":
        content, content_type = json.dumps(SCRIBE_ANSWER).encode(), "application/json"
    else:
        error = {"detail": {"status": "not_found", "message": "No route"}}
        return 404, {"Content-Type": "application/json"}, json.dumps(error).encode()
    return 200, {"Content-Type": content_type, "request-id": "req_real"}, content


@pytest.fixture
def real_server() -> Iterator[RecordingServer]:
    with serve_recording(answer_real_request) as server:
        yield server


def real_provider(server: RecordingServer, model: str = TTS_MODEL) -> ElevenLabsProvider:
    host, port = server.server_address[:2]
    return standalone_provider(
        ElevenLabsProvider,
        model=model,
        api_base=f"http://{host!s}:{port}",
        api_key=API_KEY,
        timeout=10,
    )


def test_synthesize_speech_over_real_http(real_server: RecordingServer) -> None:
    with real_provider(real_server) as provider:
        result = provider.synthesize(speech(response_format="wav", voice="onyx", speed=0.9))

    (path, headers, body) = real_server.records[0]
    assert path == "/v1/text-to-speech/nPczCjzI2devNBz1zQrb?output_format=pcm_24000"
    assert headers["xi-api-key"] == API_KEY
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "text": "Hello, world.",
        "model_id": TTS_MODEL,
        "voice_settings": {"speed": 0.9},
    }
    assert (result.audio, result.audio_format, result.sample_rate) == (FAKE_PCM, "pcm", 24000)
    assert result.request_id == "req_real"


def test_transcribe_audio_over_real_http(real_server: RecordingServer, audio_path: Path) -> None:
    with real_provider(real_server, model=STT_MODEL) as provider:
        result = provider.transcribe(transcription(audio_path, language="en"))

    (path, headers, body) = real_server.records[0]
    assert path == "/v1/speech-to-text"
    assert headers["xi-api-key"] == API_KEY
    assert int(headers["Content-Length"]) == len(body)  # sized up front, not chunked
    upload = parse_multipart(httpx.Headers(headers), body)
    assert upload.fields == {"model_id": STT_MODEL, "language_code": "en"}
    assert (upload.file_field, upload.filename, upload.data) == ("file", "clip.wav", AUDIO_BYTES)
    assert result.segments == EXPECTED_SEGMENTS
    assert result.request_id == "req_real"
