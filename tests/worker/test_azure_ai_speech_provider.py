"""AzureSpeechProvider against a fake Speech resource that checks every call's wire format:
the SSML (parsed with xml.etree), the output-format and auth headers, the fast-transcription
multipart body and its `definition`."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.worker.provider_fakes import (
    AUDIO_BYTES,
    HTTP_STATUS_ERRORS,
    OPENAI_VOICES,
    TRANSPORT_FAILURES,
    Answer,
    RecordingServer,
    Upload,
    answering,
    assert_connection_refused,
    assert_no_secret,
    assert_status_classes,
    assert_status_error,
    assert_transport_error,
    check_azure_auth,
    parse_multipart,
    provider_factory,
    raising,
    serve_recording,
    standalone_provider,
    unused_port,
)
from worker.providers.azure_ai_speech import (
    DEFAULT_VOICE_MAP,
    AzureSpeechProvider,
    billable_characters,
    map_azure_speech_error,
    prosody_rate,
    resolve_endpoints,
    to_locale,
)
from worker.providers.base import (
    Deployment,
    SynthesisRequest,
    TranscriptionRequest,
    TranscriptSegment,
)
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)

API_KEY = "5c6d7e8f90a1b2c3d4e5f60718293a4b"  # Speech keys are 32 hex characters
AD_TOKEN = "aad#/subscriptions/0000/resourceGroups/rg/providers/x/accounts/speech#eyJ0eXAi.tok"
REGION = "eastus"
TTS_URL = "https://eastus.tts.speech.microsoft.com/cognitiveservices/v1"
STT_URL = "https://eastus.api.cognitive.microsoft.com/speechtotext/transcriptions:transcribe"
SSML_NS = "{http://www.w3.org/2001/10/synthesis}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
SECRETS = (API_KEY, AD_TOKEN)
# Formats the REST reference lists; the fake refuses anything else, as Azure does.
OUTPUT_FORMATS = {
    "audio-24khz-48kbitrate-mono-mp3": (b"\xff\xf3\x64\xc4" + bytes(60), "audio/mpeg"),
    "ogg-24khz-16bit-mono-opus": (b"OggS\x00\x02" + b"OpusHead" + bytes(16), "audio/ogg"),
    "raw-24khz-16bit-mono-pcm": (b"\x00\x00\xff\x7f\x01\x80" * 8, "audio/x-wav"),
}
# The fast transcription guide's example answer, cut to two phrases.
FAST_TRANSCRIPTION: dict[str, Any] = {
    "durationMilliseconds": 2720,
    "combinedPhrases": [{"text": "Good afternoon. This is Sam."}],
    "phrases": [
        {
            "offsetMilliseconds": 960,
            "durationMilliseconds": 640,
            "text": "Good afternoon.",
            "words": [
                {"text": "Good", "offsetMilliseconds": 960, "durationMilliseconds": 240},
                {"text": "afternoon.", "offsetMilliseconds": 1200, "durationMilliseconds": 400},
            ],
            "locale": "en-US",
            "confidence": 0.93616915,
        },
        {
            "offsetMilliseconds": 1600,
            "durationMilliseconds": 640,
            "text": "This is Sam.",
            "words": [
                {"text": "This", "offsetMilliseconds": 1600, "durationMilliseconds": 240},
                {"text": "is", "offsetMilliseconds": 1840, "durationMilliseconds": 120},
                {"text": "Sam.", "offsetMilliseconds": 1960, "durationMilliseconds": 280},
            ],
            "locale": "en-US",
            "confidence": 0.93616915,
        },
    ],
}
EXPECTED_SEGMENTS = (
    TranscriptSegment(start=0.96, end=1.6, text="Good afternoon."),
    TranscriptSegment(start=1.6, end=2.24, text="This is Sam."),
)
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{4})?-[A-Z]{2}$")


@dataclass
class Ssml:
    """The parts of one SSML document the fake checked."""

    lang: str
    voice: str
    rate: str | None
    text: str


@dataclass
class Call:
    """One request the fake accepted, already checked and decoded."""

    url: str
    headers: httpx.Headers
    body: bytes
    ssml: Ssml | None = None
    output_format: str | None = None
    upload: Upload | None = None
    definition: dict[str, Any] | None = None
    timeout: dict[str, float | None] = field(default_factory=dict)


def parse_ssml(document: bytes) -> Ssml:
    """Parse the body as Azure would, and insist on the one shape we send."""
    root = ET.fromstring(document)
    assert root.tag == f"{SSML_NS}speak"
    assert root.attrib == {"version": "1.0", XML_LANG: root.attrib[XML_LANG]}
    (voice,) = list(root)
    assert voice.tag == f"{SSML_NS}voice" and set(voice.attrib) == {"name"}
    children = list(voice)
    if not children:
        return Ssml(root.attrib[XML_LANG], voice.attrib["name"], None, voice.text or "")
    (prosody,) = children
    assert prosody.tag == f"{SSML_NS}prosody" and set(prosody.attrib) == {"rate"}
    assert not voice.text and not prosody.tail and not list(prosody)
    return Ssml(
        root.attrib[XML_LANG], voice.attrib["name"], prosody.attrib["rate"], prosody.text or ""
    )


class FakeAzureSpeech:
    """An httpx handler that checks each request like the Speech service would.

    Wire-format mistakes fail the test here, with an AssertionError in the handler.
    Set `failure` to answer every call with that response instead.
    """

    def __init__(
        self,
        *,
        tts_url: str = TTS_URL,
        stt_url: str = STT_URL,
        api_version: str = "2024-11-15",
        api_key: str | None = API_KEY,
        ad_token: str | None = None,
    ) -> None:
        self.tts_url = tts_url
        self.stt_url = stt_url
        self.api_version = api_version
        self.api_key = api_key
        self.ad_token = ad_token
        self.calls: list[Call] = []
        self.failure: httpx.Response | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        self.check_auth(request.headers)
        user_agent = request.headers["user-agent"]
        assert user_agent.startswith("speechq/") or user_agent == "acme-reader/2.1"
        assert len(user_agent) < 255
        url = request.url.copy_with(query=None)
        call = Call(
            str(request.url),
            request.headers,
            request.content,
            timeout=request.extensions["timeout"],
        )
        self.calls.append(call)
        if str(url) == self.tts_url:
            assert not request.url.query
            self.check_tts(request, call)
        elif str(url) == self.stt_url:
            assert list(request.url.params.multi_items()) == [("api-version", self.api_version)]
            self.check_stt(request, call)
        else:
            raise AssertionError(f"unexpected URL {request.url}")
        if self.failure is not None:
            return self.failure
        if call.output_format is not None:
            audio, content_type = OUTPUT_FORMATS[call.output_format]
            headers = {"content-type": content_type, "x-requestid": "tts-request-1"}
            return httpx.Response(200, content=audio, headers=headers)
        headers = {"apim-request-id": "stt-request-1"}
        return httpx.Response(200, json=FAST_TRANSCRIPTION, headers=headers)

    def check_auth(self, headers: httpx.Headers) -> None:
        check_azure_auth(
            headers,
            key_header="ocp-apim-subscription-key",
            api_key=self.api_key,
            ad_token=self.ad_token,
        )

    def check_tts(self, request: httpx.Request, call: Call) -> None:
        assert request.headers["content-type"] == "application/ssml+xml"
        call.output_format = request.headers["x-microsoft-outputformat"]
        assert call.output_format in OUTPUT_FORMATS
        call.ssml = parse_ssml(request.content)
        assert call.ssml.voice.startswith(call.ssml.lang + "-")

    def check_stt(self, request: httpx.Request, call: Call) -> None:
        assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
        upload = parse_multipart(request.headers, request.content)
        assert upload.file_field == "audio" and upload.fields.keys() == {"definition"}
        definition = json.loads(upload.fields["definition"])
        assert definition.keys() <= {"locales", "profanityFilterMode"}
        assert all(_LOCALE.match(locale) for locale in definition.get("locales", []))
        call.upload, call.definition = upload, definition


@pytest.fixture
def fake() -> FakeAzureSpeech:
    return FakeAzureSpeech()


@pytest.fixture
def make_provider(fake: FakeAzureSpeech) -> Iterator[Callable[..., AzureSpeechProvider]]:
    """Build a provider wired to `fake` (or `handler`); params default to `region: eastus`."""
    with provider_factory(AzureSpeechProvider, fake, model="neural", api_key=API_KEY) as build:

        def create(**params: Any) -> AzureSpeechProvider:
            if "api_base" not in params:
                params.setdefault("region", REGION)
            return build(**params)

        yield create


@pytest.fixture
def audio_path(tmp_path: Path) -> Path:
    path = tmp_path / "clip.wav"
    path.write_bytes(AUDIO_BYTES)
    return path


def speech(**overrides: Any) -> SynthesisRequest:
    values: dict[str, Any] = {"model": "neural", "text": "Hello, world.", "voice": "alloy"}
    return SynthesisRequest(**(values | overrides))


def transcription(audio_path: Path, **overrides: Any) -> TranscriptionRequest:
    values: dict[str, Any] = {"model": "neural", "audio_path": audio_path, "filename": "clip.wav"}
    return TranscriptionRequest(**(values | overrides))


# Text to speech: the SSML.


def test_synthesize_speech_ssml_escapes_text_and_sets_voice_and_rate(
    fake: FakeAzureSpeech, make_provider: Callable[..., AzureSpeechProvider]
) -> None:
    text = """Tom & Jerry said "<hi>" -- isn't it 5 > 3 & 2 < 4? </voice><voice name='x'>"""
    result = make_provider().synthesize(speech(text=text, speed=1.25, voice="alloy"))

    (call,) = fake.calls
    assert call.url == TTS_URL
    assert call.ssml == Ssml(lang="en-US", voice="en-US-JennyNeural", rate="+25%", text=text)
    assert call.headers["user-agent"] == "speechq/0.1.0"
    assert result.request_id == "tts-request-1"


def test_synthesize_speech_ssml_matches_the_documented_shape(
    fake: FakeAzureSpeech, make_provider: Callable[..., AzureSpeechProvider]
) -> None:
    make_provider().synthesize(speech(text="Hi & bye", speed=1.25))

    assert fake.calls[0].ssml is not None
    assert (
        b"<speak version='1.0' xmlns='http://www.w3.org/2001/10/synthesis' xml:lang='en-US'>"
        b"<voice name='en-US-JennyNeural'><prosody rate='+25%'>Hi &amp; bye</prosody>"
        b"</voice></speak>"
    ) == fake.calls[0].body


@pytest.mark.parametrize("voice", OPENAI_VOICES)
def test_synthesize_speech_maps_every_openai_voice(
    fake: FakeAzureSpeech, make_provider: Callable[..., AzureSpeechProvider], voice: str
) -> None:
    make_provider().synthesize(speech(voice=voice))

    ssml = fake.calls[0].ssml
    assert ssml is not None
    assert ssml.voice == DEFAULT_VOICE_MAP[voice]
    assert re.fullmatch(r"en-US-[A-Z][a-z]+Neural", ssml.voice)
    assert ssml.lang == "en-US"


def test_default_voice_map_covers_the_openai_voices_with_distinct_voices() -> None:
    assert set(DEFAULT_VOICE_MAP) == set(OPENAI_VOICES)
    assert len(set(DEFAULT_VOICE_MAP.values())) == len(OPENAI_VOICES)


@pytest.mark.parametrize(
    ("voice", "params", "expected_voice", "expected_lang"),
    [
        (None, {}, "en-US-JennyNeural", "en-US"),
        ("en-GB-SoniaNeural", {}, "en-GB-SoniaNeural", "en-GB"),
        ("de-DE-KatjaNeural", {}, "de-DE-KatjaNeural", "de-DE"),
        ("iu-Cans-CA-SiqiniqNeural", {}, "iu-Cans-CA-SiqiniqNeural", "iu-Cans-CA"),
        ("en-US-Ava:DragonHDLatestNeural", {}, "en-US-Ava:DragonHDLatestNeural", "en-US"),
        ("alloy", {"voice_map": {"alloy": "fr-FR-DeniseNeural"}}, "fr-FR-DeniseNeural", "fr-FR"),
        (None, {"voice_map": {"default": "en-AU-NatashaNeural"}}, "en-AU-NatashaNeural", "en-AU"),
    ],
)
def test_synthesize_speech_voice_resolution_and_language(
    fake: FakeAzureSpeech,
    make_provider: Callable[..., AzureSpeechProvider],
    voice: str | None,
    params: dict[str, Any],
    expected_voice: str,
    expected_lang: str,
) -> None:
    make_provider(**params).synthesize(speech(voice=voice))

    ssml = fake.calls[0].ssml
    assert ssml is not None and (ssml.voice, ssml.lang) == (expected_voice, expected_lang)


@pytest.mark.parametrize(
    ("speed", "rate"),
    [
        (1.0, None),
        (1.004, None),
        (1.25, "+25%"),
        (1.5, "+50%"),
        (0.8, "-20%"),
        (2.0, "+100%"),
        (4.0, "+100%"),  # OpenAI allows up to 4x; Azure's prosody stops at 2x
        (0.5, "-50%"),
        (0.25, "-50%"),
    ],
)
def test_synthesize_speech_speed_maps_to_prosody_rate(
    fake: FakeAzureSpeech,
    make_provider: Callable[..., AzureSpeechProvider],
    speed: float,
    rate: str | None,
) -> None:
    make_provider().synthesize(speech(speed=speed))

    assert fake.calls[0].ssml is not None and fake.calls[0].ssml.rate == rate
    assert prosody_rate(speed) == rate


def test_prosody_rate_non_finite_speed_is_default() -> None:
    assert prosody_rate(float("nan")) is None
    assert prosody_rate(float("inf")) is None


def test_synthesize_speech_instructions_are_ignored(
    fake: FakeAzureSpeech, make_provider: Callable[..., AzureSpeechProvider]
) -> None:
    make_provider().synthesize(speech(instructions="Whisper like a pirate."))

    assert fake.calls[0].ssml is not None and fake.calls[0].ssml.text == "Hello, world."
    assert b"pirate" not in fake.calls[0].body


def test_synthesize_speech_strips_characters_xml_forbids(
    fake: FakeAzureSpeech, make_provider: Callable[..., AzureSpeechProvider]
) -> None:
    result = make_provider().synthesize(speech(text="Bell\x07 and\x00 form\x0cfeed\ttab\n"))

    assert fake.calls[0].ssml is not None
    assert fake.calls[0].ssml.text == "Bell and formfeed\ttab\n"
    assert result.characters == len("Bell and formfeed\ttab\n")


@pytest.mark.parametrize("text", ["", "   \n", "\x00\x01"])
def test_synthesize_speech_nothing_to_speak_is_invalid_input(
    fake: FakeAzureSpeech, make_provider: Callable[..., AzureSpeechProvider], text: str
) -> None:
    with pytest.raises(InvalidInput, match="nothing to speak"):
        make_provider().synthesize(speech(text=text))

    assert fake.calls == []


# Text to speech: formats, billing, endpoints, auth.


@pytest.mark.parametrize(
    ("wanted", "output_format", "audio_format", "sample_rate"),
    [
        ("mp3", "audio-24khz-48kbitrate-mono-mp3", "mp3", None),
        ("opus", "ogg-24khz-16bit-mono-opus", "opus", None),
        ("pcm", "raw-24khz-16bit-mono-pcm", "pcm", 24000),
        ("wav", "raw-24khz-16bit-mono-pcm", "pcm", 24000),
        ("flac", "raw-24khz-16bit-mono-pcm", "pcm", 24000),
        ("aac", "raw-24khz-16bit-mono-pcm", "pcm", 24000),
    ],
)
def test_synthesize_speech_output_format_per_client_format(
    fake: FakeAzureSpeech,
    make_provider: Callable[..., AzureSpeechProvider],
    wanted: str,
    output_format: str,
    audio_format: str,
    sample_rate: int | None,
) -> None:
    result = make_provider().synthesize(speech(response_format=wanted))

    assert fake.calls[0].output_format == output_format
    assert result.audio == OUTPUT_FORMATS[output_format][0]
    assert (result.audio_format, result.sample_rate) == (audio_format, sample_rate)


@pytest.mark.parametrize(
    ("text", "speed", "expected"),
    [
        ("Hello, world.", 1.0, 13),
        ("Hello, world.", 1.25, 13 + len("<prosody rate='+25%'></prosody>")),
        ("你好, Sam", 1.0, 7 + 2),  # each Chinese character is billed as two
        ("東京 is big", 1.0, 9 + 2),
    ],
)
def test_synthesize_speech_billable_characters(
    make_provider: Callable[..., AzureSpeechProvider], text: str, speed: float, expected: int
) -> None:
    result = make_provider().synthesize(speech(text=text, speed=speed))

    assert result.characters == expected


def test_billable_characters_counts_markup() -> None:
    assert billable_characters("abc", "<prosody rate='+5%'></prosody>") == 3 + 30


@pytest.mark.parametrize(
    ("params", "tts_url", "stt_url"),
    [
        ({"region": "eastus"}, TTS_URL, STT_URL),
        (
            {"region": " WestEurope "},
            "https://westeurope.tts.speech.microsoft.com/cognitiveservices/v1",
            "https://westeurope.api.cognitive.microsoft.com/speechtotext/transcriptions:transcribe",
        ),
        (
            {"api_base": "https://my-speech.cognitiveservices.azure.com/"},
            "https://my-speech.cognitiveservices.azure.com/tts/cognitiveservices/v1",
            "https://my-speech.cognitiveservices.azure.com/speechtotext/transcriptions:transcribe",
        ),
        ({"api_base": "https://eastus.tts.speech.microsoft.com"}, TTS_URL, STT_URL),
        (
            {"api_base": "https://eastus.api.cognitive.microsoft.com/", "region": "westus"},
            TTS_URL,
            STT_URL,
        ),
        (
            {"api_base": "https://chinaeast2.tts.speech.azure.cn"},
            "https://chinaeast2.tts.speech.azure.cn/cognitiveservices/v1",
            "https://chinaeast2.api.cognitive.azure.cn/speechtotext/transcriptions:transcribe",
        ),
    ],
)
def test_resolve_endpoints(params: dict[str, Any], tts_url: str, stt_url: str) -> None:
    assert resolve_endpoints(params) == (tts_url, stt_url)


@pytest.mark.parametrize(
    "params",
    [{}, {"region": ""}, {"region": "east us"}, {"api_base": "eastus.tts.speech.microsoft.com"}],
)
def test_provider_without_usable_endpoint_is_unsupported(params: dict[str, Any]) -> None:
    deployment = Deployment(
        model_name="speech",
        provider="azure_ai_speech",
        model="neural",
        params={"api_key": API_KEY, **params},
    )
    with pytest.raises(UnsupportedFeature, match="azure_ai_speech"):
        AzureSpeechProvider(deployment)


def test_synthesize_speech_to_a_resource_endpoint(
    make_provider: Callable[..., AzureSpeechProvider], audio_path: Path
) -> None:
    base = "https://my-speech.cognitiveservices.azure.com"
    fake = FakeAzureSpeech(
        tts_url=f"{base}/tts/cognitiveservices/v1",
        stt_url=f"{base}/speechtotext/transcriptions:transcribe",
    )
    provider = make_provider(handler=fake, api_base=base)
    provider.synthesize(speech())
    provider.transcribe(transcription(audio_path))

    assert [call.url for call in fake.calls] == [
        f"{base}/tts/cognitiveservices/v1",
        f"{base}/speechtotext/transcriptions:transcribe?api-version=2024-11-15",
    ]


def test_synthesize_speech_entra_token_sends_bearer_instead_of_key(
    make_provider: Callable[..., AzureSpeechProvider], audio_path: Path
) -> None:
    fake = FakeAzureSpeech(ad_token=AD_TOKEN)  # asserts Bearer and no subscription key
    provider = make_provider(handler=fake, azure_ad_token=AD_TOKEN)
    provider.synthesize(speech())
    provider.transcribe(transcription(audio_path))

    assert len(fake.calls) == 2


def test_synthesize_speech_user_agent_and_timeout_from_params(
    fake: FakeAzureSpeech, make_provider: Callable[..., AzureSpeechProvider]
) -> None:
    make_provider(user_agent="acme-reader/2.1", timeout=7).synthesize(speech())

    (call,) = fake.calls
    assert call.headers["user-agent"] == "acme-reader/2.1"
    assert call.timeout == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}


def test_max_characters_keeps_half_speed_audio_under_ten_minutes(
    make_provider: Callable[..., AzureSpeechProvider],
) -> None:
    assert make_provider().max_characters() == 4000
    assert make_provider(model_info={"max_input_characters": 8000}).max_characters() == 8000


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"error": {"code": "500", "message": "oops"}}', "application/json"),
        (b"<html>gateway</html>", "text/html"),
        (b"", "audio/mpeg"),
    ],
)
def test_synthesize_speech_non_audio_answer_is_unavailable(
    make_provider: Callable[..., AzureSpeechProvider], content: bytes, content_type: str
) -> None:
    with pytest.raises(ProviderUnavailable, match="expected audio-24khz-48kbitrate-mono-mp3"):
        make_provider(handler=answering(content, content_type)).synthesize(speech())


# Speech to text: fast transcription.


def test_transcribe_audio_fast_transcription(
    fake: FakeAzureSpeech, make_provider: Callable[..., AzureSpeechProvider], audio_path: Path
) -> None:
    result = make_provider().transcribe(
        transcription(audio_path, language="en", prompt="Sam", temperature=0.3)
    )

    (call,) = fake.calls
    assert call.url == f"{STT_URL}?api-version=2024-11-15"
    assert call.definition == {"locales": ["en-US"]}  # prompt and temperature have no place
    assert call.upload is not None
    assert (call.upload.filename, call.upload.content_type) == ("clip.wav", "audio/x-wav")
    assert call.upload.data == AUDIO_BYTES
    assert result.text == "Good afternoon. This is Sam."
    assert result.segments == EXPECTED_SEGMENTS
    assert result.duration_seconds == 2.72
    assert result.language == "en-US"
    assert result.request_id == "stt-request-1"


@pytest.mark.parametrize(
    ("language", "params", "definition"),
    [
        ("en", {}, {"locales": ["en-US"]}),
        ("ja", {}, {"locales": ["ja-JP"]}),
        ("pt-br", {}, {"locales": ["pt-BR"]}),
        ("en_GB", {}, {"locales": ["en-GB"]}),
        ("nl", {}, {}),  # no guessed region: the service identifies the language itself
        (None, {}, {}),
        (None, {"locales": ["de-DE", "en-US"]}, {"locales": ["de-DE", "en-US"]}),
        ("fr", {"locales": ["de-DE"]}, {"locales": ["fr-FR"]}),
        (None, {"locales": "es-MX"}, {"locales": ["es-MX"]}),
        (None, {"profanity_filter_mode": "None"}, {"profanityFilterMode": "None"}),
    ],
)
def test_transcribe_audio_definition(
    fake: FakeAzureSpeech,
    make_provider: Callable[..., AzureSpeechProvider],
    audio_path: Path,
    language: str | None,
    params: dict[str, Any],
    definition: dict[str, Any],
) -> None:
    make_provider(**params).transcribe(transcription(audio_path, language=language))

    assert fake.calls[0].definition == definition


def test_transcribe_audio_api_version_from_params(
    make_provider: Callable[..., AzureSpeechProvider], audio_path: Path
) -> None:
    fake = FakeAzureSpeech(api_version="2025-10-15")
    make_provider(handler=fake, api_version="2025-10-15").transcribe(transcription(audio_path))

    assert fake.calls[0].url.endswith(":transcribe?api-version=2025-10-15")


def test_transcribe_audio_filename_borrows_the_file_extension(
    fake: FakeAzureSpeech, make_provider: Callable[..., AzureSpeechProvider], audio_path: Path
) -> None:
    make_provider().transcribe(transcription(audio_path, filename="audio"))

    assert fake.calls[0].upload is not None and fake.calls[0].upload.filename == "audio.wav"


def test_transcribe_audio_silence_is_empty_text(
    make_provider: Callable[..., AzureSpeechProvider], audio_path: Path
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"durationMilliseconds": 5000, "combinedPhrases": [], "phrases": []}
        return httpx.Response(200, json=body)

    result = make_provider(handler=handler).transcribe(transcription(audio_path))

    assert (result.text, result.segments, result.language) == ("", (), None)
    assert result.duration_seconds == 5.0


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'["Good afternoon."]',
        b'{"durationMilliseconds": 1000, "text": "wrong shape"}',
        b'{"combinedPhrases": [{"channel": 0}], "phrases": []}',
        b'{"combinedPhrases": [{"text": "hi"}], "phrases": [{"text": "hi"}]}',
        b'{"combinedPhrases": [], "phrases": [], "durationMilliseconds": "long"}',
        b'{"combinedPhrases": [], "phrases": "none"}',
    ],
)
def test_transcribe_audio_unexpected_json_is_unavailable(
    make_provider: Callable[..., AzureSpeechProvider], audio_path: Path, content: bytes
) -> None:
    provider = make_provider(handler=answering(content, "application/json"))
    with pytest.raises(ProviderUnavailable, match="^azure_ai_speech: transcription"):
        provider.transcribe(transcription(audio_path))


@pytest.mark.parametrize(
    ("language", "locale"),
    [("en", "en-US"), ("ZH", "zh-CN"), ("zh-hans-cn", "zh-Hans-CN"), ("xx", None), ("", None)],
)
def test_to_locale(language: str, locale: str | None) -> None:
    assert to_locale(language) == locale


# Errors: one mapper, every status class, both calls.

# What the API gateway answers for a bad key (both endpoints).
GATEWAY_401 = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)


def speech_error(status: int, message: str, **headers: str) -> httpx.Response:
    """An error as fast transcription answers it: Cognitive Services' `Error` object."""
    body = {
        "code": "InvalidRequest" if status < 500 else "InternalServerError",
        "message": message,
        "innerError": {"code": "InvalidParameterValue", "message": "See the definition."},
    }
    return httpx.Response(status, json=body, headers={"apim-request-id": "err-1", **headers})


def call_provider(provider: AzureSpeechProvider, kind: str, audio_path: Path) -> None:
    if kind == "speech":
        provider.synthesize(speech())
    else:
        provider.transcribe(transcription(audio_path))


@pytest.mark.parametrize("kind", ["speech", "transcription"])
@pytest.mark.parametrize(("status", "error_class"), HTTP_STATUS_ERRORS)
def test_provider_error_for_status(
    fake: FakeAzureSpeech,
    make_provider: Callable[..., AzureSpeechProvider],
    audio_path: Path,
    kind: str,
    status: int,
    error_class: type[ProviderError],
) -> None:
    # Something in front of the service might echo the key; it must go no further.
    fake.failure = speech_error(status, f"Key {API_KEY} was refused.")

    with pytest.raises(error_class) as caught:
        call_provider(make_provider(), kind, audio_path)

    assert_status_error(caught.value, error_class, status, *SECRETS)
    code = "InvalidRequest" if status < 500 else "InternalServerError"
    assert str(caught.value) == (
        f"azure_ai_speech HTTP {status}: {code}: Key *** was refused. (See the definition.)"
    )


@pytest.mark.parametrize(
    ("response", "error_class", "expected"),
    [
        # The gateway's envelope, for a wrong key or a key from another region.
        (
            httpx.Response(401, json={"error": {"code": "401", "message": GATEWAY_401}}),
            AuthenticationFailed,
            f"azure_ai_speech HTTP 401: 401: {GATEWAY_401}",
        ),
        # Text to speech usually answers errors with no body at all.
        (httpx.Response(400), InvalidInput, "azure_ai_speech HTTP 400: Bad Request"),
        (httpx.Response(415), InvalidInput, "azure_ai_speech HTTP 415: Unsupported Media Type"),
        (
            httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"),
            ProviderUnavailable,
            "azure_ai_speech HTTP 502: <html><h1>502 Bad Gateway</h1></html>",
        ),
        (
            httpx.Response(404, json={"message": "Resource not found"}),
            UnsupportedFeature,
            "azure_ai_speech HTTP 404: Resource not found",
        ),
    ],
)
def test_provider_error_message_from_azure_bodies(
    make_provider: Callable[..., AzureSpeechProvider],
    response: httpx.Response,
    error_class: type[ProviderError],
    expected: str,
) -> None:
    with pytest.raises(error_class) as caught:
        make_provider(handler=lambda request: response).synthesize(speech())

    assert str(caught.value) == expected


def test_provider_error_entra_token_is_masked(
    make_provider: Callable[..., AzureSpeechProvider], audio_path: Path
) -> None:
    fake = FakeAzureSpeech(ad_token=AD_TOKEN)
    fake.failure = httpx.Response(401, json={"error": {"message": f"Bad token {AD_TOKEN}"}})
    provider = make_provider(handler=fake, azure_ad_token=AD_TOKEN)

    for kind in ("speech", "transcription"):
        with pytest.raises(AuthenticationFailed) as caught:
            call_provider(provider, kind, audio_path)
        assert str(caught.value) == "azure_ai_speech HTTP 401: Bad token ***"
        assert_no_secret(caught.value, *SECRETS)


@pytest.mark.parametrize(
    ("headers", "expected_s"),
    [({"retry-after": "3"}, 3.0), ({"retry-after-ms": "250"}, 0.25), ({}, None)],
)
def test_provider_error_rate_limited_retry_after(
    fake: FakeAzureSpeech,
    make_provider: Callable[..., AzureSpeechProvider],
    headers: dict[str, str],
    expected_s: float | None,
) -> None:
    fake.failure = speech_error(429, "Too many requests.", **headers)

    with pytest.raises(RateLimited) as caught:
        make_provider().synthesize(speech())

    assert caught.value.retry_after_s == expected_s


@pytest.mark.parametrize(("exception", "error_class"), TRANSPORT_FAILURES)
@pytest.mark.parametrize("kind", ["speech", "transcription"])
def test_provider_error_for_transport_failure(
    make_provider: Callable[..., AzureSpeechProvider],
    audio_path: Path,
    kind: str,
    exception: httpx.TransportError,
    error_class: type[ProviderError],
) -> None:
    with pytest.raises(error_class, match="^azure_ai_speech: ") as caught:
        call_provider(make_provider(handler=raising(exception)), kind, audio_path)

    assert_transport_error(caught.value, exception, *SECRETS)


def test_map_azure_speech_error_every_status_class() -> None:
    assert_status_classes(
        map_azure_speech_error,
        [*HTTP_STATUS_ERRORS, (504, ProviderUnavailable), (302, ProviderUnavailable)],
        url=TTS_URL,
    )


def test_map_azure_speech_error_redacts_every_secret() -> None:
    request = httpx.Request("POST", TTS_URL)
    exc = httpx.ConnectError(f"refused for {API_KEY} and {AD_TOKEN}", request=request)

    error = map_azure_speech_error(exc, secrets=[API_KEY, AD_TOKEN, ""])

    assert str(error) == (
        "azure_ai_speech: could not reach the server (ConnectError: refused for *** and ***)"
    )


def test_provider_error_connection_refused_over_real_sockets() -> None:
    provider = standalone_provider(
        AzureSpeechProvider,
        model="neural",
        api_base=f"http://127.0.0.1:{unused_port()}",
        api_key=API_KEY,
        timeout=5,
    )
    assert_connection_refused(provider, speech(), *SECRETS)


# Real HTTP: the provider's own httpx client against a tiny server on a socket.


def answer_real_request(path: str, headers: httpx.Headers, body: bytes) -> Answer:
    """A minimal Speech resource endpoint."""
    if path == "/tts/cognitiveservices/v1":
        content, content_type = OUTPUT_FORMATS[headers["X-Microsoft-OutputFormat"]]
    elif path == "/speechtotext/transcriptions:transcribe?api-version=2024-11-15":
        content, content_type = json.dumps(FAST_TRANSCRIPTION).encode(), "application/json"
    else:
        return 404, {}, b""
    return 200, {"Content-Type": content_type, "X-RequestId": "real-request"}, content


@pytest.fixture
def real_server() -> Iterator[RecordingServer]:
    with serve_recording(answer_real_request) as server:
        yield server


def real_provider(server: RecordingServer) -> AzureSpeechProvider:
    port = server.server_address[1]
    return standalone_provider(
        AzureSpeechProvider,
        model="neural",
        api_base=f"http://127.0.0.1:{port}",
        api_key=API_KEY,
        timeout=10,
    )


def test_synthesize_speech_over_real_http(real_server: RecordingServer) -> None:
    with real_provider(real_server) as provider:
        result = provider.synthesize(speech(text="Ünïcödé & <tags>", voice="nova", speed=0.9))

    (path, headers, body) = real_server.records[0]
    assert path == "/tts/cognitiveservices/v1"
    assert headers["Ocp-Apim-Subscription-Key"] == API_KEY
    assert headers["Content-Type"] == "application/ssml+xml"
    assert headers["X-Microsoft-OutputFormat"] == "audio-24khz-48kbitrate-mono-mp3"
    assert headers["User-Agent"] == "speechq/0.1.0"
    assert int(headers["Content-Length"]) == len(body)
    ssml = parse_ssml(body)
    assert ssml == Ssml("en-US", "en-US-AvaNeural", "-10%", "Ünïcödé & <tags>")
    assert result.request_id == "real-request"


def test_transcribe_audio_over_real_http(real_server: RecordingServer, audio_path: Path) -> None:
    with real_provider(real_server) as provider:
        result = provider.transcribe(transcription(audio_path, language="en-US"))

    (path, headers, body) = real_server.records[0]
    assert path == "/speechtotext/transcriptions:transcribe?api-version=2024-11-15"
    assert headers["Ocp-Apim-Subscription-Key"] == API_KEY
    assert int(headers["Content-Length"]) == len(body)  # sized up front, not chunked
    upload = parse_multipart(httpx.Headers(headers), body)
    assert (upload.file_field, upload.filename, upload.data) == ("audio", "clip.wav", AUDIO_BYTES)
    assert json.loads(upload.fields["definition"]) == {"locales": ["en-US"]}
    assert result.segments == EXPECTED_SEGMENTS
