"""PollyProvider against a fake Polly on a real socket that checks every call's wire format:
the route, the SigV4 signature (recomputed here), and the exact JSON body."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from tests.worker.provider_fakes import (
    OPENAI_VOICES,
    assert_no_secret,
    standalone_provider,
    unused_port,
)
from worker.providers.aws_polly import (
    ENGINES,
    VOICE_MAPS,
    PollyProvider,
    build_ssml,
    map_polly_error,
)
from worker.providers.base import Deployment, SynthesisRequest
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)

# AWS's documented example credentials: realistic shapes, not real keys.
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN//////////wEaDExampleToken"
REGION = "eu-west-1"
BODY_FIELDS = {"Engine", "OutputFormat", "SampleRate", "Text", "TextType", "VoiceId"}
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key_id>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)"
    r"/polly/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})"
)
# What Polly answers for each OutputFormat: a few real magic bytes and its Content-Type.
FAKE_AUDIO: dict[str, tuple[bytes, str]] = {
    "mp3": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xf3\x84\xc4" * 8, "audio/mpeg"),
    "ogg_opus": (b"OggS\x00\x02" + b"OpusHead" + bytes(16), "audio/ogg"),
    "ogg_vorbis": (b"OggS\x00\x02" + b"\x01vorbis" + bytes(16), "audio/ogg"),
    "pcm": (b"\x00\x00\xff\x7f\x01\x80" * 8, "audio/pcm"),
}
# Polly's voice table (available-voices.html), English voices by engine: the maps must
# only name voices the engine really has.
ENGINE_VOICES = {
    "standard": {"Ivy", "Joanna", "Kendra", "Kimberly", "Salli", "Joey", "Justin", "Matthew"}
    | {"Amy", "Brian", "Emma"},
    "neural": {"Danielle", "Gregory", "Ivy", "Joanna", "Joey", "Justin", "Kendra", "Kevin"}
    | {"Kimberly", "Matthew", "Ruth", "Salli", "Stephen", "Amy", "Arthur", "Brian", "Emma"},
    "generative": {"Danielle", "Joanna", "Matthew", "Ruth", "Salli", "Stephen", "Amy", "Brian"},
    "long-form": {"Danielle", "Gregory", "Ruth"},
}
SECRETS = (SECRET_ACCESS_KEY, SESSION_TOKEN, ACCESS_KEY_ID)


@dataclass
class Call:
    """One request the fake accepted, already checked."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    key_id: str
    region: str


@dataclass
class Failure:
    """An error in Polly's shape: `x-amzn-ErrorType` plus a JSON `__type`/`message` body."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


class FakePollyHandler(BaseHTTPRequestHandler):
    server: FakePolly

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        raw = self.rfile.read(length)
        try:
            call = self.server.check(self.command, self.path, dict(self.headers.items()), raw)
        except AssertionError as exc:  # a wire-format mistake: fail the test, loudly
            self.server.problems.append(str(exc))
            self.send_json(400, "FakePollyWireError", f"wire format: {exc}")
            return
        self.server.calls.append(call)
        if self.server.delay_s:
            self.server.release.wait(self.server.delay_s)
        failure = self.server.failure
        if failure is not None:
            self.send_json(failure.status, failure.code, failure.message, failure.headers)
            return
        audio, content_type = self.server.answer or FAKE_AUDIO[call.body["OutputFormat"]]
        headers = {"x-amzn-RequestId": "0c8e8f8a-req-polly"}
        if self.server.characters is not None:
            headers["x-amzn-RequestCharacters"] = str(self.server.characters)
        self.send(200, audio, content_type, headers)

    def send_json(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps({"__type": f"com.amazonaws.parrot.service#{code}", "message": message})
        extra = {
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazonaws.parrot/",
            "x-amzn-RequestId": "0c8e8f8a-req-error",
            **(headers or {}),
        }
        self.send(status, body.encode(), "application/json", extra)

    def send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout tests); nothing to tell it

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean


class FakePolly(ThreadingHTTPServer):
    """Polly's SynthesizeSpeech on 127.0.0.1. It records and checks; tests assert on `calls`.

    Set `failure` to answer with that error, `delay_s` to stall before answering, `answer`
    to send other bytes, `key_id`/`secret`/`token`/`region` to what the signer must use.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakePollyHandler)
        self.calls: list[Call] = []
        self.problems: list[str] = []
        self.failure: Failure | None = None
        self.answer: tuple[bytes, str] | None = None
        self.characters: int | None = 13
        self.delay_s = 0.0
        self.release = threading.Event()
        self.key_id, self.secret, self.token = ACCESS_KEY_ID, SECRET_ACCESS_KEY, None
        self.region = REGION

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def check(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Call:
        assert (method, path) == ("POST", "/v1/speech"), f"{method} {path}"
        lower = {name.lower(): value for name, value in headers.items()}
        assert lower["content-type"] == "application/json", lower["content-type"]
        match = AUTHORIZATION.fullmatch(lower.get("authorization", ""))
        assert match, f"not a SigV4 Authorization header: {lower.get('authorization')!r}"
        assert match["key_id"] == self.key_id, match["key_id"]
        assert match["region"] == self.region, match["region"]
        assert match["date"] == lower["x-amz-date"][:8]
        signed = match["signed"].split(";")
        assert {"host", "x-amz-date", "content-type"} <= set(signed), signed
        if self.token is None:
            assert "x-amz-security-token" not in lower
        else:
            assert lower["x-amz-security-token"] == self.token
            assert "x-amz-security-token" in signed
        assert all(self.secret not in value for value in headers.values()), "secret on the wire"
        expected = self.signature(method, path, lower, signed, raw)
        assert match["sig"] == expected, "signature does not verify"
        body = json.loads(raw)
        assert body.keys() == BODY_FIELDS, sorted(body)
        assert all(isinstance(value, str) for value in body.values()), body
        return Call(path, headers, body, match["key_id"], match["region"])

    def signature(
        self, method: str, path: str, headers: dict[str, str], signed: list[str], raw: bytes
    ) -> str:
        """Recompute the SigV4 signature from what arrived, as AWS does."""
        request = AWSRequest(
            method=method,
            url=f"http://{headers['host']}{path}",
            data=raw,
            headers={name: headers[name] for name in signed},
        )
        request.context["timestamp"] = headers["x-amz-date"]
        signer = SigV4Auth(Credentials(self.key_id, self.secret, self.token), "polly", self.region)
        return signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )


@pytest.fixture(autouse=True)
def isolated_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No credentials, region or instance metadata from this machine leak into a test."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_MAX_ATTEMPTS",
        "AWS_RETRY_MODE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def fake() -> Iterator[FakePolly]:
    server = FakePolly()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert server.problems == []


@pytest.fixture
def make_provider(fake: FakePolly) -> Iterator[Callable[..., PollyProvider]]:
    """A provider pointed at `fake` with static keys; params override or (None) drop them."""
    providers: list[PollyProvider] = []

    def create(*, engine: str = "neural", **overrides: Any) -> PollyProvider:
        params: dict[str, Any] = {
            "api_base": fake.endpoint,
            "aws_region_name": REGION,
            "aws_access_key_id": ACCESS_KEY_ID,
            "aws_secret_access_key": SECRET_ACCESS_KEY,
            "timeout": 10,
        }
        params.update(overrides)
        params = {name: value for name, value in params.items() if value is not None}
        deployment = Deployment(
            model_name="speech", provider="aws_polly", model=engine, params=params, id="polly#0"
        )
        provider = PollyProvider(deployment)
        providers.append(provider)
        return provider

    yield create
    for provider in providers:
        provider.close()


def speech(**overrides: Any) -> SynthesisRequest:
    values: dict[str, Any] = {"model": "neural", "text": "Hello, world.", "voice": "alloy"}
    return SynthesisRequest(**(values | overrides))


# Text to speech.


@pytest.mark.parametrize(
    ("response_format", "output_format", "sample_rate", "audio_format", "result_rate"),
    [
        ("mp3", "mp3", "24000", "mp3", None),
        ("opus", "ogg_opus", "48000", "opus", None),
        ("pcm", "pcm", "16000", "pcm", 16000),
        ("wav", "pcm", "16000", "pcm", 16000),
        ("flac", "pcm", "16000", "pcm", 16000),
        ("aac", "pcm", "16000", "pcm", 16000),
    ],
)
def test_synthesize_speech_each_format(
    fake: FakePolly,
    make_provider: Callable[..., PollyProvider],
    response_format: str,
    output_format: str,
    sample_rate: str,
    audio_format: str,
    result_rate: int | None,
) -> None:
    result = make_provider().synthesize(speech(response_format=response_format))

    (call,) = fake.calls
    assert call.body == {
        "Engine": "neural",
        "OutputFormat": output_format,
        "SampleRate": sample_rate,
        "Text": "Hello, world.",
        "TextType": "text",
        "VoiceId": "Joanna",
    }
    assert result.audio == FAKE_AUDIO[output_format][0]
    assert (result.audio_format, result.sample_rate) == (audio_format, result_rate)
    assert result.characters == 13  # from x-amzn-RequestCharacters
    assert result.request_id == "0c8e8f8a-req-polly"


@pytest.mark.parametrize(
    ("engine", "mp3_rate", "voice"),
    [
        ("standard", "22050", "Joanna"),
        ("neural", "24000", "Joanna"),
        ("long-form", "24000", "Danielle"),
        ("generative", "24000", "Joanna"),
    ],
)
def test_synthesize_speech_engine_from_model(
    fake: FakePolly,
    make_provider: Callable[..., PollyProvider],
    engine: str,
    mp3_rate: str,
    voice: str,
) -> None:
    make_provider(engine=engine).synthesize(speech(voice=None))

    (call,) = fake.calls
    assert (call.body["Engine"], call.body["SampleRate"]) == (engine, mp3_rate)
    assert call.body["VoiceId"] == voice  # the engine's default voice


def test_synthesize_speech_unknown_engine_is_unsupported(
    fake: FakePolly, make_provider: Callable[..., PollyProvider]
) -> None:
    with pytest.raises(UnsupportedFeature, match="unknown engine 'tts-1'"):
        make_provider(engine="tts-1").synthesize(speech())

    assert fake.calls == []


@pytest.mark.parametrize(
    ("speed", "rate"), [(1.25, "125%"), (0.5, "50%"), (0.2, "20%"), (2.0, "200%")]
)
def test_synthesize_speech_speed_as_ssml_prosody(
    fake: FakePolly, make_provider: Callable[..., PollyProvider], speed: float, rate: str
) -> None:
    text = 'Tom & Jerry say "<b>hi</b>" > 3\x00 times.'
    make_provider(engine="generative").synthesize(speech(text=text, speed=speed))

    (call,) = fake.calls
    assert call.body["TextType"] == "ssml"
    assert call.body["Text"] == (
        f'<speak><prosody rate="{rate}">'
        'Tom &amp; Jerry say "&lt;b&gt;hi&lt;/b&gt;" &gt; 3 times.'
        "</prosody></speak>"
    )


def test_synthesize_speech_normal_speed_sends_text_verbatim(
    fake: FakePolly, make_provider: Callable[..., PollyProvider]
) -> None:
    # Markup in the input is text to read, never SSML to obey (LiteLLM sniffs for <speak>).
    text = '<speak><prosody rate="x-fast">A & B</prosody></speak>'
    make_provider().synthesize(speech(text=text))

    (call,) = fake.calls
    assert (call.body["Text"], call.body["TextType"]) == (text, "text")


@pytest.mark.parametrize("speed", [0.1, 0.19, 2.01, 4.0])
def test_synthesize_speech_speed_outside_polly_range_is_unsupported(
    fake: FakePolly, make_provider: Callable[..., PollyProvider], speed: float
) -> None:
    with pytest.raises(UnsupportedFeature, match="prosody rate 20%-200%"):
        make_provider().synthesize(speech(speed=speed))

    assert fake.calls == []


def test_build_ssml_escapes_markup_and_drops_xml_invalid_characters() -> None:
    assert build_ssml("a<b>&c\x07\x1fd\tz\n", 1.5) == (
        '<speak><prosody rate="150%">a&lt;b&gt;&amp;cd\tz\n</prosody></speak>'
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_synthesize_speech_maps_openai_voices_per_engine(
    fake: FakePolly, make_provider: Callable[..., PollyProvider], engine: str
) -> None:
    provider = make_provider(engine=engine)
    for voice in OPENAI_VOICES:
        provider.synthesize(speech(voice=voice))

    sent = {
        voice: call.body["VoiceId"] for voice, call in zip(OPENAI_VOICES, fake.calls, strict=True)
    }
    assert sent == VOICE_MAPS[engine]
    assert set(sent.values()) <= ENGINE_VOICES[engine]


def test_voice_maps_cover_every_openai_voice() -> None:
    assert set(VOICE_MAPS) == set(ENGINES)
    for engine, voices in VOICE_MAPS.items():
        assert set(voices) == set(OPENAI_VOICES), engine
        assert set(voices.values()) <= ENGINE_VOICES[engine], engine
    assert PollyProvider.default_voice_map == VOICE_MAPS["neural"]
    assert PollyProvider.default_voice == "Joanna"


def test_synthesize_speech_voice_map_override_and_passthrough(
    fake: FakePolly, make_provider: Callable[..., PollyProvider]
) -> None:
    provider = make_provider(voice_map={"alloy": "Kevin", "default": "Ivy"})
    for voice in ("alloy", None, "echo", "Gregory"):
        provider.synthesize(speech(voice=voice))

    assert [call.body["VoiceId"] for call in fake.calls] == ["Kevin", "Ivy", "Matthew", "Gregory"]


def test_synthesize_speech_characters_are_pollys_count_without_ssml_tags(
    fake: FakePolly, make_provider: Callable[..., PollyProvider]
) -> None:
    fake.characters = 4  # SSML tags are not billed: Polly counts "Hey." only
    result = make_provider().synthesize(speech(text="Hey.", speed=1.5))
    assert result.characters == 4


def test_synthesize_speech_characters_fall_back_to_text_length(
    fake: FakePolly, make_provider: Callable[..., PollyProvider]
) -> None:
    fake.characters = None  # a compatible server that sends no x-amzn-RequestCharacters
    result = make_provider().synthesize(speech(text="Hey there."))
    assert result.characters == 10


def test_synthesize_speech_signed_with_session_token(
    fake: FakePolly, make_provider: Callable[..., PollyProvider]
) -> None:
    fake.token = SESSION_TOKEN
    make_provider(aws_session_token=SESSION_TOKEN).synthesize(speech())

    (call,) = fake.calls
    assert (call.key_id, call.region) == (ACCESS_KEY_ID, REGION)


def test_fake_polly_rejects_a_request_signed_with_another_secret(
    fake: FakePolly, make_provider: Callable[..., PollyProvider]
) -> None:
    # The signature check above is live: a wrong secret fails it.
    fake.secret = "some/other/secret/EXAMPLE"
    with pytest.raises(InvalidInput, match="signature does not verify"):
        make_provider().synthesize(speech())

    (problem,) = fake.problems
    assert problem.startswith("signature does not verify")
    fake.problems.clear()


def test_synthesize_speech_default_credential_chain_and_region_alias(
    fake: FakePolly, make_provider: Callable[..., PollyProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENTKEY01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment/secret/key/EXAMPLE")
    fake.key_id, fake.secret, fake.region = (
        "AKIAENVIRONMENTKEY01",
        "environment/secret/key/EXAMPLE",
        "ap-southeast-2",
    )
    provider = make_provider(
        aws_access_key_id=None,
        aws_secret_access_key=None,
        aws_region_name=None,
        region="ap-southeast-2",
    )
    provider.synthesize(speech())

    assert fake.calls[0].region == "ap-southeast-2"


@pytest.mark.parametrize(
    ("env_region", "expected"), [(None, "us-east-1"), ("ca-central-1", "ca-central-1")]
)
def test_synthesize_speech_region_from_environment_else_us_east_1(
    fake: FakePolly,
    make_provider: Callable[..., PollyProvider],
    monkeypatch: pytest.MonkeyPatch,
    env_region: str | None,
    expected: str,
) -> None:
    if env_region:
        monkeypatch.setenv("AWS_DEFAULT_REGION", env_region)
    fake.region = expected
    make_provider(aws_region_name=None).synthesize(speech())

    assert fake.calls[0].region == expected


def test_provider_builds_one_client_without_retries(
    fake: FakePolly, make_provider: Callable[..., PollyProvider]
) -> None:
    provider = make_provider(timeout=7.5)
    client = provider.client
    provider.synthesize(speech())
    provider.synthesize(speech())

    assert provider.client is client
    assert len(fake.calls) == 2
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (10.0, 7.5)
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert client.meta.endpoint_url == fake.endpoint


def test_max_characters_is_polly_billed_limit(make_provider: Callable[..., PollyProvider]) -> None:
    assert make_provider().max_characters() == 3000


@pytest.mark.parametrize(
    "answer",
    [(b'{"Marks": []}', "application/json"), (b"", "audio/mpeg"), (b"oops", "text/html")],
)
def test_synthesize_speech_non_audio_answer_is_unavailable(
    fake: FakePolly, make_provider: Callable[..., PollyProvider], answer: tuple[bytes, str]
) -> None:
    fake.answer = answer
    with pytest.raises(ProviderUnavailable, match="expected mp3 audio"):
        make_provider().synthesize(speech())


# Errors: Polly's own shape over HTTP, one attempt each, no credential in any message.

POLLY_ERRORS: list[tuple[int, str, type[ProviderError]]] = [
    (400, "TextLengthExceededException", InvalidInput),
    (400, "InvalidSsmlException", InvalidInput),
    (400, "ValidationException", InvalidInput),
    (400, "EngineNotSupportedException", UnsupportedFeature),
    (400, "InvalidSampleRateException", UnsupportedFeature),
    (400, "LanguageNotSupportedException", UnsupportedFeature),
    (404, "LexiconNotFoundException", UnsupportedFeature),
    (404, "ResourceNotFoundException", UnsupportedFeature),
    (400, "ThrottlingException", RateLimited),
    (429, "TooManyRequestsException", RateLimited),
    (403, "UnrecognizedClientException", AuthenticationFailed),
    (403, "InvalidSignatureException", AuthenticationFailed),
    (403, "AccessDeniedException", AuthenticationFailed),
    (400, "ExpiredTokenException", AuthenticationFailed),
    (500, "ServiceFailureException", ProviderUnavailable),
    (503, "ServiceUnavailableException", ProviderUnavailable),
    # Unknown codes fall back on the status.
    (400, "SomeNewBadRequest", InvalidInput),
    (401, "SomeNewAuthError", AuthenticationFailed),
    (408, "SomeNewTimeout", ProviderTimeout),
    (502, "SomeNewGatewayError", ProviderUnavailable),
]


@pytest.mark.parametrize(("status", "code", "error_class"), POLLY_ERRORS)
def test_provider_error_for_polly_error(
    fake: FakePolly,
    make_provider: Callable[..., PollyProvider],
    status: int,
    code: str,
    error_class: type[ProviderError],
) -> None:
    fake.failure = Failure(status, code, f"Failed for {code}.")

    with pytest.raises(error_class) as caught:
        make_provider().synthesize(speech())

    assert type(caught.value) is error_class
    assert caught.value.status_code == status
    assert str(caught.value) == f"aws_polly HTTP {status} {code}: Failed for {code}."
    assert isinstance(caught.value.__cause__, ClientError)
    assert len(fake.calls) == 1  # botocore retried nothing; the router decides
    assert_no_secret(caught.value, *SECRETS)


def test_provider_error_masks_credentials_echoed_by_the_server(
    fake: FakePolly, make_provider: Callable[..., PollyProvider]
) -> None:
    # Polly never does this, but a proxy or a compatible server might.
    fake.token = SESSION_TOKEN
    echoed = f"bad {ACCESS_KEY_ID} / {SECRET_ACCESS_KEY} / {SESSION_TOKEN}"
    fake.failure = Failure(403, "UnrecognizedClientException", echoed)

    with pytest.raises(AuthenticationFailed) as caught:
        make_provider(aws_session_token=SESSION_TOKEN).synthesize(speech())

    assert (
        str(caught.value) == "aws_polly HTTP 403 UnrecognizedClientException: bad *** / *** / ***"
    )
    assert caught.value.__cause__ is None  # botocore's copy quotes them
    assert_no_secret(caught.value, *SECRETS)


@pytest.mark.parametrize(
    ("headers", "expected_s"),
    [({"Retry-After": "3"}, 3.0), ({}, None), ({"Retry-After": "x"}, None)],
)
def test_provider_error_rate_limited_retry_after(
    fake: FakePolly,
    make_provider: Callable[..., PollyProvider],
    headers: dict[str, str],
    expected_s: float | None,
) -> None:
    fake.failure = Failure(400, "ThrottlingException", "Rate exceeded", headers)

    with pytest.raises(RateLimited) as caught:
        make_provider().synthesize(speech())

    assert caught.value.retry_after_s == expected_s
    assert caught.value.status_code == 400


def test_provider_error_read_timeout(
    fake: FakePolly, make_provider: Callable[..., PollyProvider]
) -> None:
    fake.delay_s = 5.0

    with pytest.raises(ProviderTimeout) as caught:
        make_provider(timeout=0.3).synthesize(speech())

    assert isinstance(caught.value.__cause__, ReadTimeoutError)
    assert caught.value.status_code is None
    assert len(fake.calls) == 1
    assert_no_secret(caught.value, *SECRETS)


def test_provider_error_connection_refused() -> None:
    provider = standalone_provider(
        PollyProvider,
        model="neural",
        api_base=f"http://127.0.0.1:{unused_port()}",
        aws_region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    with provider, pytest.raises(ProviderUnavailable) as caught:
        provider.synthesize(speech())

    assert isinstance(caught.value.__cause__, EndpointConnectionError)
    assert_no_secret(caught.value, *SECRETS)


def test_provider_error_without_any_credentials(
    fake: FakePolly, make_provider: Callable[..., PollyProvider]
) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        make_provider(aws_access_key_id=None, aws_secret_access_key=None).synthesize(speech())

    assert isinstance(caught.value.__cause__, NoCredentialsError)
    assert fake.calls == []


def client_error(status: int, code: str, **headers: str) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
    }
    return ClientError(response, "SynthesizeSpeech")


def test_map_polly_error_every_class() -> None:
    url = "https://polly.eu-west-1.amazonaws.com/v1/speech"
    cases: list[tuple[Exception, type[ProviderError]]] = [
        *((client_error(status, code), cls) for status, code, cls in POLLY_ERRORS),
        (client_error(500, ""), ProviderUnavailable),
        (client_error(302, ""), ProviderUnavailable),
        (client_error(409, "ConflictException"), UnsupportedFeature),
        (client_error(400, "RequestTimeoutException"), ProviderTimeout),
        (ReadTimeoutError(endpoint_url=url), ProviderTimeout),
        (ConnectTimeoutError(endpoint_url=url), ProviderTimeout),
        (EndpointConnectionError(endpoint_url=url), ProviderUnavailable),
        (ConnectionClosedError(endpoint_url=url), ProviderUnavailable),
        (ResponseStreamingError(error="reset"), ProviderUnavailable),
        (NoCredentialsError(), AuthenticationFailed),
        (
            PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
            AuthenticationFailed,
        ),
        (ParamValidationError(report="Invalid type for parameter Text"), InvalidInput),
    ]
    for exc, error_class in cases:
        assert type(map_polly_error(exc)) is error_class, exc  # type: ignore[arg-type]
