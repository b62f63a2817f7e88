"""DeepgramProvider against a fake Deepgram server that checks the wire format of every call."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.worker.provider_fakes import (
    HTTP_STATUS_ERRORS,
    TRANSPORT_FAILURES,
    Answer,
    RecordingServer,
    answering,
    assert_connection_refused,
    assert_status_classes,
    assert_status_error,
    assert_transport_error,
    provider_factory,
    raising,
    serve_recording,
    single_query,
    standalone_provider,
    unused_port,
)
from worker.providers.base import SynthesisRequest, TranscriptionRequest, TranscriptSegment
from worker.providers.deepgram import (
    DEFAULT_VOICE_MAP,
    DeepgramProvider,
    choose_encoding,
    group_words,
    map_deepgram_error,
)
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)

API_KEY = "dg_0123456789abcdef0123456789abcdef01234567"
FAKE_BASE = "http://fake.local"
TTS_MODEL = "aura-2-thalia-en"
STT_MODEL = "nova-3"
REQUEST_ID = "6a2b4e8c-1f0d-4c3e-9a57-2d8f1b0c9e33"

# The documented "Audio Format Combinations" of /v1/speak, as the fake enforces them.
SPEAK_FORMATS: dict[str, dict[str, set[str] | None]] = {
    "linear16": {
        "container": {"wav", "none"},
        "sample_rate": {"8000", "16000", "24000", "32000", "48000"},
    },
    "mp3": {"container": None, "sample_rate": None},
    "opus": {"container": {"ogg"}, "sample_rate": None},
    "flac": {"container": None, "sample_rate": {"8000", "16000", "22050", "32000", "48000"}},
    "aac": {"container": None, "sample_rate": None},
}
LISTEN_PARAMS = {"model", "smart_format", "punctuate", "utterances", "language", "detect_language"}

FAKE_AUDIO: dict[str, tuple[bytes, str]] = {
    "mp3": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xf3\x64\xc4" * 8, "audio/mpeg"),
    "opus": (b"OggS\x00\x02" + b"OpusHead" + bytes(16), "audio/ogg"),
    "linear16": (b"\x00\x00\xff\x7f\x01\x80" * 8, "audio/l16"),
}
AUDIO_BYTES = b"RIFF\x00\x00WAVEfmt " + bytes(range(256)) * 64


def dg_word(text: str, start: float, end: float, speaker: int | None = None) -> dict[str, Any]:
    """A word as smart_format answers it: bare `word`, and `punctuated_word`."""
    result: dict[str, Any] = {
        "word": text.strip(".,!?").lower(),
        "start": start,
        "end": end,
        "confidence": 0.99,
        "punctuated_word": text,
    }
    if speaker is not None:
        result |= {"speaker": speaker, "speaker_confidence": 0.8}
    return result


WORDS = [
    dg_word("Hello", 0.08, 0.4),
    dg_word("there.", 0.4, 0.88),
    dg_word("General", 1.6, 2.0),
    dg_word("Kenobi!", 2.0, 2.56),
]
TRANSCRIPT = "Hello there. General Kenobi!"


def listen_answer(*, detected_language: str | None = None, utterances: bool = True) -> dict:
    """What /v1/listen answers for one channel with utterances=true."""
    channel: dict[str, Any] = {
        "alternatives": [{"transcript": TRANSCRIPT, "confidence": 0.99, "words": WORDS}]
    }
    if detected_language:
        channel |= {"detected_language": detected_language, "language_confidence": 0.97}
    body: dict[str, Any] = {
        "metadata": {
            "transaction_key": "deprecated",
            "request_id": REQUEST_ID,
            "sha256": "0" * 64,
            "created": "2025-06-01T12:00:00.000Z",
            "duration": 3.1,
            "channels": 1,
            "models": ["2187e11a-3532-4498-b076-81fa530bdd49"],
            "model_info": {
                "2187e11a-3532-4498-b076-81fa530bdd49": {
                    "name": "general-nova-3",
                    "version": "2025-01-01.0",
                    "arch": "nova-3",
                }
            },
        },
        "results": {"channels": [channel]},
    }
    if utterances:
        body["results"]["utterances"] = [
            {
                "start": 0.08,
                "end": 0.88,
                "confidence": 0.99,
                "channel": 0,
                "transcript": "Hello there.",
                "words": WORDS[:2],
                "speaker": 0,
                "id": "0b1d8c52-7a4f-4a8e-8d0e-0d6a4b3f0c11",
            },
            {
                "start": 1.6,
                "end": 2.56,
                "confidence": 0.98,
                "channel": 0,
                "transcript": "General Kenobi!",
                "words": WORDS[2:],
                "speaker": 0,
                "id": "9d3f1e0a-2b6c-4f7d-8e1a-5c4b3a2d1e00",
            },
        ]
    return body


EXPECTED_SEGMENTS = (
    TranscriptSegment(start=0.08, end=0.88, text="Hello there."),
    TranscriptSegment(start=1.6, end=2.56, text="General Kenobi!"),
)


@dataclass
class Call:
    """One request the fake server accepted, already checked and decoded."""

    url: str
    path: str
    query: dict[str, str]
    headers: httpx.Headers
    json: dict[str, Any] | None = None
    body: bytes = b""
    timeout: dict[str, float | None] = field(default_factory=dict)


class FakeDeepgram:
    """An httpx handler that checks each request like Deepgram would and answers realistically.

    Wire-format mistakes fail the test right here, with an AssertionError in the handler.
    Set `failure` to answer every call with that response instead.
    """

    def __init__(self, *, base: str = FAKE_BASE, api_key: str | None = API_KEY) -> None:
        self.base = base.rstrip("/")
        self.prefix = urlsplit(self.base).path  # a proxy's path before /v1
        self.api_key = api_key
        self.calls: list[Call] = []
        self.failure: httpx.Response | None = None
        self.listen_body: dict[str, Any] | None = None  # None: answer as Deepgram would

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        if self.api_key is None:
            assert "authorization" not in request.headers
        else:
            assert request.headers["authorization"] == f"Token {self.api_key}"
        url = str(request.url)
        assert url.startswith(f"{self.base}/v1/"), url
        path = request.url.path.removeprefix(self.prefix)
        call = Call(
            url,
            path,
            single_query(request.url),
            request.headers,
            body=request.content,
            timeout=request.extensions.get("timeout", {}),
        )
        self.calls.append(call)
        if self.failure is not None:
            return self.failure
        if path == "/v1/speak":
            return self.answer_speak(request, call)
        if path == "/v1/listen":
            return self.answer_listen(request, call)
        raise AssertionError(f"unexpected URL {request.url}")

    def answer_speak(self, request: httpx.Request, call: Call) -> httpx.Response:
        query = call.query
        if not query["model"].startswith("aura-"):
            body = {
                "err_code": "Bad Request",
                "err_msg": "No such model/language/tier combination found.",
            }
            return httpx.Response(400, json=body)
        encoding = query["encoding"]
        allowed = SPEAK_FORMATS[encoding]
        assert query.keys() <= {"model", "encoding", "container", "sample_rate", "speed"}
        for param in ("container", "sample_rate"):
            options = allowed[param]
            assert param not in query or (options is not None and query[param] in options), param
        if "speed" in query:
            assert query["model"].startswith("aura-2-")
            assert 0.7 <= float(query["speed"]) <= 1.5
        assert request.headers["content-type"] == "application/json"
        call.json = json.loads(request.content)
        assert call.json is not None and call.json.keys() == {"text"}
        audio, content_type = FAKE_AUDIO[encoding]
        return httpx.Response(
            200,
            content=audio,
            headers={
                "content-type": content_type,
                "dg-request-id": "req_speak",
                "dg-model-name": query["model"],
                "dg-char-count": str(len(call.json["text"])),
            },
        )

    def answer_listen(self, request: httpx.Request, call: Call) -> httpx.Response:
        assert call.query.keys() <= LISTEN_PARAMS
        assert {"model", "smart_format", "punctuate", "utterances"} <= call.query.keys()
        assert not ({"language", "detect_language"} <= call.query.keys()), "one or the other"
        content_type = request.headers["content-type"]
        # A raw body: JSON would mean `{"url": …}`, multipart is not accepted.
        assert not content_type.startswith(("application/json", "multipart/"))
        assert request.headers["content-length"] == str(len(request.content))
        detected = "en" if call.query.get("detect_language") == "true" else None
        body = self.listen_body or listen_answer(detected_language=detected)
        return httpx.Response(200, json=body, headers={"dg-request-id": REQUEST_ID})


@pytest.fixture
def fake() -> FakeDeepgram:
    return FakeDeepgram()


@pytest.fixture
def make_provider(fake: FakeDeepgram) -> Iterator[Callable[..., DeepgramProvider]]:
    """Build a provider wired to `fake`; `api_base=None` means Deepgram's default."""
    with provider_factory(
        DeepgramProvider, fake, model=TTS_MODEL, api_base=FAKE_BASE, api_key=API_KEY
    ) as create:
        yield create


@pytest.fixture
def audio_path(tmp_path: Path) -> Path:
    path = tmp_path / "clip.wav"
    path.write_bytes(AUDIO_BYTES)
    return path


def speech(**overrides: Any) -> SynthesisRequest:
    values: dict[str, Any] = {"model": TTS_MODEL, "text": "Hello, world.", "voice": None}
    return SynthesisRequest(**(values | overrides))


def transcription(audio_path: Path, **overrides: Any) -> TranscriptionRequest:
    values: dict[str, Any] = {"model": STT_MODEL, "audio_path": audio_path, "filename": "clip.wav"}
    return TranscriptionRequest(**(values | overrides))


# Text to speech.


def test_synthesize_speech_mp3(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider]
) -> None:
    result = make_provider().synthesize(speech())

    (call,) = fake.calls
    assert call.url == f"{FAKE_BASE}/v1/speak?model=aura-2-thalia-en&encoding=mp3"
    assert call.json == {"text": "Hello, world."}
    assert result.audio == FAKE_AUDIO["mp3"][0]
    assert (result.audio_format, result.sample_rate) == ("mp3", None)
    assert result.characters == len("Hello, world.")
    assert result.request_id == "req_speak"


def test_synthesize_speech_opus_in_ogg(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider]
) -> None:
    result = make_provider().synthesize(speech(response_format="opus"))

    assert fake.calls[0].query == {"model": TTS_MODEL, "encoding": "opus", "container": "ogg"}
    assert (result.audio, result.audio_format) == (FAKE_AUDIO["opus"][0], "opus")


@pytest.mark.parametrize("wanted", ["pcm", "wav", "flac", "aac", "ogg"])
def test_synthesize_speech_other_formats_ask_for_raw_linear16(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], wanted: str
) -> None:
    result = make_provider().synthesize(speech(response_format=wanted))

    assert fake.calls[0].query == {
        "model": TTS_MODEL,
        "encoding": "linear16",
        "container": "none",  # raw samples, no WAV header to strip
        "sample_rate": "24000",
    }
    assert result.audio == FAKE_AUDIO["linear16"][0]
    assert (result.audio_format, result.sample_rate) == ("pcm", 24000)


def test_choose_encoding() -> None:
    assert choose_encoding("mp3") == ({"encoding": "mp3"}, "mp3", None)
    assert choose_encoding("opus") == ({"encoding": "opus", "container": "ogg"}, "opus", None)
    pcm = {"encoding": "linear16", "container": "none", "sample_rate": "24000"}
    assert choose_encoding("flac") == (pcm, "pcm", 24000)


@pytest.mark.parametrize(("voice", "voice_model"), sorted(DEFAULT_VOICE_MAP.items()))
def test_synthesize_speech_family_model_maps_openai_voices(
    fake: FakeDeepgram,
    make_provider: Callable[..., DeepgramProvider],
    voice: str,
    voice_model: str,
) -> None:
    make_provider(model="aura-2").synthesize(speech(model="aura-2", voice=voice))

    assert fake.calls[0].query["model"] == voice_model


def test_default_voice_map_covers_every_openai_voice_with_distinct_aura2_voices() -> None:
    openai_voices = {"alloy", "ash", "ballad", "coral", "echo", "fable"}
    openai_voices |= {"nova", "onyx", "sage", "shimmer", "verse"}
    assert DEFAULT_VOICE_MAP.keys() == openai_voices
    assert len(set(DEFAULT_VOICE_MAP.values())) == len(openai_voices)
    assert all(
        model.startswith("aura-2-") and model.endswith("-en")
        for model in DEFAULT_VOICE_MAP.values()
    )


@pytest.mark.parametrize(
    ("model", "voice", "params", "sent"),
    [
        # A family model: the request's voice picks the voice model.
        ("aura-2", None, {}, "aura-2-thalia-en"),
        ("aura-2", None, {"voice_map": {"default": "aura-2-zeus-en"}}, "aura-2-zeus-en"),
        ("aura-2", "alloy", {"voice_map": {"alloy": "aura-2-luna-en"}}, "aura-2-luna-en"),
        ("aura-2", "aura-2-celeste-es", {}, "aura-2-celeste-es"),
        # A voice model: it speaks, whatever OpenAI voice the client names...
        ("aura-2-zeus-en", None, {}, "aura-2-zeus-en"),
        ("aura-2-zeus-en", "alloy", {}, "aura-2-zeus-en"),
        ("aura-asteria-en", "nova", {}, "aura-asteria-en"),
        # ...unless the client names a Deepgram voice, or the deployment maps the name.
        ("aura-2-zeus-en", "aura-2-luna-en", {}, "aura-2-luna-en"),
        ("aura-2-zeus-en", "alloy", {"voice_map": {"alloy": "aura-2-luna-en"}}, "aura-2-luna-en"),
        ("aura-2-zeus-en", None, {"voice_map": {"default": "aura-2-luna-en"}}, "aura-2-luna-en"),
    ],
)
def test_synthesize_speech_voice_and_model_combine(
    fake: FakeDeepgram,
    make_provider: Callable[..., DeepgramProvider],
    model: str,
    voice: str | None,
    params: dict[str, Any],
    sent: str,
) -> None:
    make_provider(model=model, **params).synthesize(speech(model=model, voice=voice))

    assert fake.calls[0].query["model"] == sent


def test_synthesize_speech_unknown_voice_name_is_sent_as_given(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider]
) -> None:
    with pytest.raises(InvalidInput, match="No such model"):
        make_provider(model="aura-2").synthesize(speech(model="aura-2", voice="zeus"))

    assert fake.calls[0].query["model"] == "zeus"


@pytest.mark.parametrize(("speed", "sent"), [(0.7, "0.7"), (1.25, "1.25"), (1.5, "1.5")])
def test_synthesize_speech_speed_for_aura2(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], speed: float, sent: str
) -> None:
    make_provider().synthesize(speech(speed=speed))

    assert fake.calls[0].query["speed"] == sent


def test_synthesize_speech_default_speed_is_not_sent(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider]
) -> None:
    make_provider().synthesize(speech(speed=1.0))

    assert "speed" not in fake.calls[0].query


@pytest.mark.parametrize("speed", [0.25, 0.69, 1.51, 4.0])
def test_synthesize_speech_speed_out_of_range_is_unsupported(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], speed: float
) -> None:
    with pytest.raises(UnsupportedFeature, match="outside the supported 0.7-1.5"):
        make_provider().synthesize(speech(speed=speed))

    assert fake.calls == []


@pytest.mark.parametrize(("speed", "sent"), [(0.25, "0.7"), (4.0, "1.5")])
def test_synthesize_speech_speed_clamped_when_configured(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], speed: float, sent: str
) -> None:
    make_provider(clamp_speed=True).synthesize(speech(speed=speed))

    assert fake.calls[0].query["speed"] == sent


def test_synthesize_speech_speed_needs_an_aura2_voice(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider]
) -> None:
    provider = make_provider(model="aura-asteria-en", clamp_speed=True)
    with pytest.raises(UnsupportedFeature, match="aura-asteria-en has no speed control"):
        provider.synthesize(speech(model="aura-asteria-en", speed=1.1))

    assert fake.calls == []


def test_synthesize_speech_instructions_are_dropped(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider]
) -> None:
    make_provider().synthesize(speech(instructions="Whisper it."))

    assert fake.calls[0].json == {"text": "Hello, world."}


@pytest.mark.parametrize(
    ("api_base", "expected_base"),
    [
        ("http://fake.local", "http://fake.local"),
        ("http://fake.local/", "http://fake.local"),
        ("http://fake.local/v1", "http://fake.local"),  # LiteLLM's default carries the /v1
        ("https://api.eu.deepgram.com", "https://api.eu.deepgram.com"),
        ("http://proxy.local/deepgram", "http://proxy.local/deepgram"),
        (None, "https://api.deepgram.com"),
    ],
)
def test_synthesize_speech_url_from_api_base(
    make_provider: Callable[..., DeepgramProvider], api_base: str | None, expected_base: str
) -> None:
    fake = FakeDeepgram(base=expected_base)
    make_provider(api_base=api_base, handler=fake).synthesize(speech())

    assert [call.url.split("?")[0] for call in fake.calls] == [f"{expected_base}/v1/speak"]


def test_synthesize_speech_without_api_key_sends_no_authorization(
    make_provider: Callable[..., DeepgramProvider],
) -> None:
    fake = FakeDeepgram(api_key=None)  # asserts the header is absent (self-hosted Deepgram)
    result = make_provider(api_key=None, handler=fake).synthesize(speech())

    assert result.audio == FAKE_AUDIO["mp3"][0]


def test_synthesize_speech_timeout(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider]
) -> None:
    make_provider(timeout=7).synthesize(speech())
    provider = make_provider()
    provider.synthesize(speech())

    assert fake.calls[0].timeout == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}
    assert fake.calls[1].timeout == provider.http.timeout.as_dict()


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"err_code": "Bad Request", "err_msg": "oops"}', "application/json"),
        (b"<html>proxy says hi</html>", "text/html"),
        (b"", "audio/mpeg"),
    ],
)
def test_synthesize_speech_non_audio_answer_is_unavailable(
    make_provider: Callable[..., DeepgramProvider], content: bytes, content_type: str
) -> None:
    with pytest.raises(ProviderUnavailable, match="expected mp3 audio"):
        make_provider(handler=answering(content, content_type)).synthesize(speech())


def test_synthesize_speech_with_an_stt_model_is_unsupported(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider]
) -> None:
    with pytest.raises(UnsupportedFeature, match="does not do text-to-speech"):
        make_provider(model=STT_MODEL).synthesize(speech(model=STT_MODEL))

    assert fake.calls == []


def test_max_characters(make_provider: Callable[..., DeepgramProvider]) -> None:
    assert make_provider().max_characters() == 2000
    configured = make_provider(model_info={"max_input_characters": 1000})
    assert configured.max_characters() == 1000


# Speech to text.


def test_transcribe_audio(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], audio_path: Path
) -> None:
    result = make_provider(model=STT_MODEL).transcribe(transcription(audio_path))

    (call,) = fake.calls
    assert call.url.split("?")[0] == f"{FAKE_BASE}/v1/listen"
    assert call.query == {
        "model": STT_MODEL,
        "smart_format": "true",
        "punctuate": "true",
        "utterances": "true",
        "detect_language": "true",  # no language given: detect it, as Whisper would
    }
    assert call.headers["content-type"] in {"audio/x-wav", "audio/wav"}
    assert call.body == AUDIO_BYTES
    assert result.text == TRANSCRIPT
    assert result.language == "en"
    assert result.duration_seconds == 3.1
    assert result.segments == EXPECTED_SEGMENTS
    assert result.request_id == REQUEST_ID


def test_transcribe_audio_with_language(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], audio_path: Path
) -> None:
    request = transcription(audio_path, language="de", prompt="Star Wars.", temperature=0.2)
    result = make_provider(model=STT_MODEL).transcribe(request)

    query = fake.calls[0].query
    assert query["language"] == "de"
    assert "detect_language" not in query
    # prompt and temperature have no Deepgram counterpart
    assert query.keys() == {"model", "smart_format", "punctuate", "utterances", "language"}
    assert result.language == "de"  # nothing detected: what was asked for


def test_transcribe_audio_language_detection_off(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], audio_path: Path
) -> None:
    result = make_provider(model=STT_MODEL, detect_language=False).transcribe(
        transcription(audio_path)
    )

    assert fake.calls[0].query.keys() == {"model", "smart_format", "punctuate", "utterances"}
    assert result.language is None


def test_transcribe_audio_segments_from_words_without_utterances(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], audio_path: Path
) -> None:
    fake.listen_body = listen_answer(utterances=False)
    result = make_provider(model=STT_MODEL).transcribe(transcription(audio_path))

    assert result.segments == EXPECTED_SEGMENTS


def test_transcribe_audio_keeps_channel_zero_utterances(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], audio_path: Path
) -> None:
    body = listen_answer()
    other = dict(body["results"]["utterances"][0], channel=1, transcript="Other channel.")
    body["results"]["utterances"].append(other)
    fake.listen_body = body
    result = make_provider(model=STT_MODEL).transcribe(transcription(audio_path))

    assert result.segments == EXPECTED_SEGMENTS


def test_transcribe_audio_silence(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], audio_path: Path
) -> None:
    body = listen_answer()
    body["results"] = {
        "channels": [{"alternatives": [{"transcript": "", "confidence": 0.0, "words": []}]}],
        "utterances": [],
    }
    fake.listen_body = body
    result = make_provider(model=STT_MODEL).transcribe(transcription(audio_path))

    assert (result.text, result.segments, result.duration_seconds) == ("", (), 3.1)


def test_transcribe_audio_request_id_from_header_and_duration_from_words(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], audio_path: Path
) -> None:
    body = listen_answer()
    del body["metadata"]["request_id"], body["metadata"]["duration"]
    fake.listen_body = body
    result = make_provider(model=STT_MODEL).transcribe(transcription(audio_path))

    assert result.request_id == REQUEST_ID  # the dg-request-id header
    assert result.duration_seconds == 2.56


@pytest.mark.parametrize(
    ("filename", "stored_as", "content_type"),
    [
        ("talk.mp3", "upload.bin", "audio/mpeg"),
        ("audio", "upload.flac", "audio/flac"),  # the stored file's extension
        ("audio", "upload", "application/octet-stream"),  # Deepgram sniffs the container
    ],
)
def test_transcribe_audio_content_type(
    fake: FakeDeepgram,
    make_provider: Callable[..., DeepgramProvider],
    tmp_path: Path,
    filename: str,
    stored_as: str,
    content_type: str,
) -> None:
    path = tmp_path / stored_as
    path.write_bytes(AUDIO_BYTES)
    make_provider(model=STT_MODEL).transcribe(transcription(path, filename=filename))

    assert fake.calls[0].headers["content-type"] == content_type


def test_transcribe_audio_with_an_aura_model_is_unsupported(
    fake: FakeDeepgram, make_provider: Callable[..., DeepgramProvider], audio_path: Path
) -> None:
    with pytest.raises(UnsupportedFeature, match="does not do speech-to-text"):
        make_provider().transcribe(transcription(audio_path, model=TTS_MODEL))

    assert fake.calls == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"metadata": {}, "results": {"channels": []}}',
        b'{"metadata": {}}',
        b'{"metadata": {}, "results": {"channels": [{"alternatives": [{"transcript": 3}]}]}}',
        b'{"metadata": {"duration": "long"}, "results": {"channels": '
        b'[{"alternatives": [{"transcript": "hi"}]}]}}',
        b'{"metadata": {}, "results": {"channels": [{"alternatives": [{"transcript": "hi"}]}],'
        b' "utterances": [{"start": 0}]}}',
        b'["a list"]',
    ],
)
def test_transcribe_audio_unexpected_json_is_unavailable(
    make_provider: Callable[..., DeepgramProvider], audio_path: Path, content: bytes
) -> None:
    provider = make_provider(model=STT_MODEL, handler=answering(content, "application/json"))
    with pytest.raises(ProviderUnavailable):
        provider.transcribe(transcription(audio_path))


def test_group_words_splits_on_sentences_and_speakers() -> None:
    words = [
        dg_word("Hi", 0.0, 0.2, speaker=0),
        dg_word("there", 0.2, 0.5, speaker=0),
        dg_word("Hello", 0.6, 0.9, speaker=1),
        dg_word("again.", 0.9, 1.2, speaker=1),
        dg_word("Bye", 1.5, 1.8, speaker=1),
    ]

    assert group_words(words) == (
        TranscriptSegment(start=0.0, end=0.5, text="Hi there"),
        TranscriptSegment(start=0.6, end=1.2, text="Hello again."),
        TranscriptSegment(start=1.5, end=1.8, text="Bye"),
    )


def test_group_words_without_punctuated_words() -> None:
    words = [
        {"word": "hello", "start": 0.0, "end": 0.4},
        {"word": "world", "start": 0.4, "end": 0.9},
    ]

    assert group_words(words) == (TranscriptSegment(start=0.0, end=0.9, text="hello world"),)


# Errors: one mapper, every status class, both calls, both error envelopes.

STATUS_ERRORS = [*HTTP_STATUS_ERRORS, (402, AuthenticationFailed)]


def legacy_error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    """Deepgram's older envelope (/v1/listen answers it)."""
    body = {"err_code": code, "err_msg": message, "request_id": REQUEST_ID}
    return httpx.Response(status, json=body, headers={"dg-request-id": REQUEST_ID, **headers})


def modern_error(status: int, category: str, message: str, details: str) -> httpx.Response:
    """Deepgram's newer envelope."""
    body = {"category": category, "message": message, "details": details, "request_id": REQUEST_ID}
    return httpx.Response(status, json=body)


def call_provider(provider: DeepgramProvider, kind: str, audio_path: Path) -> None:
    if kind == "speech":
        provider.synthesize(speech())
    else:
        provider.transcribe(transcription(audio_path))


@pytest.mark.parametrize("envelope", ["legacy", "modern"])
@pytest.mark.parametrize("kind", ["speech", "transcription"])
@pytest.mark.parametrize(("status", "error_class"), STATUS_ERRORS)
def test_provider_error_for_status(
    fake: FakeDeepgram,
    make_provider: Callable[..., DeepgramProvider],
    audio_path: Path,
    kind: str,
    envelope: str,
    status: int,
    error_class: type[ProviderError],
) -> None:
    # A proxy in between may echo the key; we must not rely on anyone masking it.
    if envelope == "legacy":
        fake.failure = legacy_error(status, "SOME_CODE", f"Token {API_KEY} refused.")
        expected = f"Token *** refused. (SOME_CODE) [request_id {REQUEST_ID}]"
    else:
        fake.failure = modern_error(status, "SOME_CATEGORY", "Refused.", f"Token {API_KEY}.")
        expected = f"Refused. Token ***. (SOME_CATEGORY) [request_id {REQUEST_ID}]"
    model = TTS_MODEL if kind == "speech" else STT_MODEL

    with pytest.raises(error_class) as caught:
        call_provider(make_provider(model=model), kind, audio_path)

    assert_status_error(caught.value, error_class, status, API_KEY)
    assert caught.value.message == f"deepgram HTTP {status}: {expected}"


@pytest.mark.parametrize(
    ("headers", "expected_s"),
    [({"retry-after": "3"}, 3.0), ({"retry-after": "0.5"}, 0.5), ({}, None)],
)
def test_provider_error_rate_limited_retry_after(
    fake: FakeDeepgram,
    make_provider: Callable[..., DeepgramProvider],
    headers: dict[str, str],
    expected_s: float | None,
) -> None:
    fake.failure = legacy_error(429, "TOO_MANY_REQUESTS", "Too many requests.", **headers)

    with pytest.raises(RateLimited) as caught:
        make_provider().synthesize(speech())

    assert caught.value.retry_after_s == expected_s
    assert "Too many requests. (TOO_MANY_REQUESTS)" in caught.value.message


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(400, json={"err_msg": "No such model."}), "No such model.$"),
        (httpx.Response(400, json={"message": "Bad."}), "Bad.$"),
        (httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"), "502 Bad Gateway"),
        (httpx.Response(503), "Service Unavailable"),
    ],
)
def test_provider_error_message_from_other_bodies(
    make_provider: Callable[..., DeepgramProvider], response: httpx.Response, expected: str
) -> None:
    with pytest.raises(ProviderError, match=expected):
        make_provider(handler=lambda request: response).synthesize(speech())


@pytest.mark.parametrize(("exception", "error_class"), TRANSPORT_FAILURES)
@pytest.mark.parametrize("kind", ["speech", "transcription"])
def test_provider_error_for_transport_failure(
    make_provider: Callable[..., DeepgramProvider],
    audio_path: Path,
    kind: str,
    exception: httpx.TransportError,
    error_class: type[ProviderError],
) -> None:
    model = TTS_MODEL if kind == "speech" else STT_MODEL
    with pytest.raises(error_class) as caught:
        call_provider(make_provider(model=model, handler=raising(exception)), kind, audio_path)

    assert_transport_error(caught.value, exception, API_KEY)


def test_provider_error_connection_refused_over_real_sockets(audio_path: Path) -> None:
    provider = standalone_provider(
        DeepgramProvider,
        model=STT_MODEL,
        api_base=f"http://127.0.0.1:{unused_port()}",
        api_key=API_KEY,
        timeout=5,
    )
    assert_connection_refused(provider, transcription(audio_path), API_KEY)


def test_map_deepgram_error_every_status_class() -> None:
    assert_status_classes(
        map_deepgram_error,
        [
            *STATUS_ERRORS,
            (504, ProviderUnavailable),
            (302, ProviderUnavailable),
            (418, ProviderUnavailable),
        ],
        url=f"{FAKE_BASE}/v1/listen",
        json={"err_msg": "m"},
    )


# Real HTTP: the provider's own httpx client against a tiny server on a socket.


def answer_real_request(path: str, headers: httpx.Headers, body: bytes) -> Answer:
    """A minimal Deepgram server."""
    if path.startswith("/v1/speak?"):
        content, content_type = FAKE_AUDIO["opus"]
    elif path.startswith("/v1/listen?"):
        content = json.dumps(listen_answer(detected_language="en")).encode()
        content_type = "application/json"
    else:
        raise AssertionError(path)
    return 200, {"Content-Type": content_type, "dg-request-id": "req_real"}, content


@pytest.fixture
def real_server() -> Iterator[RecordingServer]:
    with serve_recording(answer_real_request) as server:
        yield server


def real_provider(server: RecordingServer, model: str) -> DeepgramProvider:
    host, port = server.server_address[:2]
    return standalone_provider(
        DeepgramProvider,
        model=model,
        api_base=f"http://{host!s}:{port}/v1",
        api_key=API_KEY,
        timeout=10,
    )


def test_synthesize_speech_over_real_http(real_server: RecordingServer) -> None:
    with real_provider(real_server, "aura-2") as provider:
        result = provider.synthesize(speech(model="aura-2", voice="onyx", response_format="opus"))

    (path, headers, body) = real_server.records[0]
    assert path == "/v1/speak?model=aura-2-zeus-en&encoding=opus&container=ogg"
    assert headers["Authorization"] == f"Token {API_KEY}"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"text": "Hello, world."}
    assert (result.audio, result.audio_format) == (FAKE_AUDIO["opus"][0], "opus")
    assert result.request_id == "req_real"


def test_transcribe_audio_over_real_http(real_server: RecordingServer, audio_path: Path) -> None:
    with real_provider(real_server, STT_MODEL) as provider:
        result = provider.transcribe(transcription(audio_path, language="en-US"))

    (path, headers, body) = real_server.records[0]
    assert path == (
        "/v1/listen?model=nova-3&smart_format=true&punctuate=true&utterances=true&language=en-US"
    )
    assert headers["Authorization"] == f"Token {API_KEY}"
    assert headers["Content-Type"] in {"audio/x-wav", "audio/wav"}
    # The file is the whole body, sized up front rather than chunked.
    assert int(headers["Content-Length"]) == len(body) == len(AUDIO_BYTES)
    assert "Transfer-Encoding" not in headers
    assert body == AUDIO_BYTES
    assert result.segments == EXPECTED_SEGMENTS
    assert result.language == "en"
    assert result.request_id == REQUEST_ID
