"""Amazon Polly text-to-speech through boto3's `polly` client (SynthesizeSpeech).

    POST {endpoint}/v1/speech   JSON {Engine, OutputFormat, SampleRate, Text, TextType, VoiceId}
                                -> audio bytes; `Content-Type`, `x-amzn-RequestCharacters`

Deployments `aws_polly/<engine>`: the model names the engine (standard, neural, long-form,
generative). Params, named as LiteLLM names them: `aws_region_name` (or `region`),
`aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`, `aws_profile_name`;
without keys boto3's default chain applies (env, config files, instance roles). `api_base`
becomes boto3's `endpoint_url`; `timeout` is the read timeout in seconds.

Sources (the API reference's text as carried by botocore 1.44.8's model `polly/2016-06-10`):
- https://docs.aws.amazon.com/polly/latest/dg/API_SynthesizeSpeech.html: the request and
  response; OutputFormat json | mp3 | ogg_opus | ogg_vorbis | pcm | mulaw | alaw;
  SampleRate for pcm "8000" | "16000", for ogg_opus only "48000", mp3 default 22050
  (standard) or 24000 (neural, long-form, generative).
- https://docs.aws.amazon.com/polly/latest/dg/API_SynthesizeSpeech.html#API_SynthesizeSpeech_Errors
  and https://docs.aws.amazon.com/botocore/latest/reference/services/polly/client/exceptions/TextLengthExceededException.html:
  at most 6,000 characters per request, of which at most 3,000 billed; SSML tags are not billed.
- https://docs.aws.amazon.com/polly/latest/dg/supportedtags.html,
  https://docs.aws.amazon.com/polly/latest/dg/prosody-tag.html and
  https://docs.aws.amazon.com/polly/latest/dg/voice-speed-change-vip.html: `<prosody rate>`
  works on every engine (neural, long-form and generative lack only `pitch`), from 20% to
  200%; for generative voices only around full sentences.
- https://docs.aws.amazon.com/polly/latest/dg/available-voices.html and
  https://docs.aws.amazon.com/polly/latest/dg/generative-voices.html: which voice each engine has.

Every botocore failure goes through `map_polly_error`, once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import boto3
import httpx
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from worker.providers._http import STATUS_ERRORS, parse_retry_after_s, redact
from worker.providers.base import Deployment, SpeechProvider, SynthesisRequest, SynthesisResult
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)

__all__ = [
    "DEFAULT_REGION",
    "ENGINES",
    "MAX_BILLED_CHARACTERS",
    "PCM_SAMPLE_RATE",
    "VOICE_MAPS",
    "PollyProvider",
    "build_ssml",
    "choose_output",
    "map_polly_error",
]

ENGINES = ("standard", "neural", "long-form", "generative")
# LiteLLM's default; used only when neither the deployment nor boto3's config names a region.
DEFAULT_REGION = "us-east-1"
MAX_BILLED_CHARACTERS = 3_000
# Polly's pcm comes at 8 or 16 kHz only, even from the 24 kHz neural voices.
PCM_SAMPLE_RATE = 16_000
_OPUS_SAMPLE_RATE = 48_000  # the only rate ogg_opus accepts
_MP3_SAMPLE_RATES = {
    "standard": 22_050,
    "neural": 24_000,
    "long-form": 24_000,
    "generative": 24_000,
}
# <prosody rate="n%"> takes 20% to 200%.
_MIN_SPEED, _MAX_SPEED = 0.2, 2.0
_CONNECT_TIMEOUT_S = 10.0
_READ_TIMEOUT_S = 120.0

# OpenAI voice -> a Polly voice the engine has (voices differ per engine; sending one the
# engine lacks fails with EngineNotSupportedException). Mostly en-US; fable is British in
# OpenAI, so Brian. Neural and generative share voices that have both variants.
_NEURAL_GENERATIVE_VOICES: Mapping[str, str] = {
    "alloy": "Joanna",
    "ash": "Stephen",
    "ballad": "Brian",
    "coral": "Ruth",
    "echo": "Matthew",
    "fable": "Brian",
    "nova": "Danielle",
    "onyx": "Matthew",
    "sage": "Salli",
    "shimmer": "Amy",
    "verse": "Stephen",
}
VOICE_MAPS: Mapping[str, Mapping[str, str]] = {
    "neural": _NEURAL_GENERATIVE_VOICES,
    "generative": _NEURAL_GENERATIVE_VOICES,
    # Standard has no Stephen, Ruth or Danielle.
    "standard": {
        "alloy": "Joanna",
        "ash": "Joey",
        "ballad": "Brian",
        "coral": "Kendra",
        "echo": "Matthew",
        "fable": "Brian",
        "nova": "Kimberly",
        "onyx": "Matthew",
        "sage": "Salli",
        "shimmer": "Amy",
        "verse": "Joey",
    },
    # Long-form English: Danielle, Ruth, Gregory (Patrick too, by DescribeVoices, but he is
    # missing from botocore's VoiceId list, so not relied on).
    "long-form": {
        "alloy": "Danielle",
        "ash": "Gregory",
        "ballad": "Gregory",
        "coral": "Ruth",
        "echo": "Gregory",
        "fable": "Gregory",
        "nova": "Danielle",
        "onyx": "Gregory",
        "sage": "Ruth",
        "shimmer": "Ruth",
        "verse": "Gregory",
    },
}
_DEFAULT_VOICES = {
    "standard": "Joanna",
    "neural": "Joanna",
    "generative": "Joanna",
    "long-form": "Danielle",
}

# Error codes first (Polly sends ThrottlingException and the auth codes with 400 too),
# then the HTTP status.
_CODE_ERRORS: dict[str, type[ProviderError]] = {
    **dict.fromkeys(
        (
            "ThrottlingException",
            "Throttling",
            "TooManyRequestsException",
            "RequestLimitExceeded",
        ),
        RateLimited,
    ),
    **dict.fromkeys(
        (
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "SignatureDoesNotMatch",
            "IncompleteSignature",
            "MissingAuthenticationToken",
            "MissingAuthenticationTokenException",
            "InvalidClientTokenId",
            "ExpiredToken",
            "ExpiredTokenException",
            "AccessDenied",
            "AccessDeniedException",
        ),
        AuthenticationFailed,
    ),
    **dict.fromkeys(
        (
            # The voice lacks this engine, or the deployment asks for what Polly can't do.
            "EngineNotSupportedException",
            "InvalidSampleRateException",
            "LanguageNotSupportedException",
            "LexiconNotFoundException",
            "MarksNotSupportedForFormatException",
            "SsmlMarksNotSupportedForTextTypeException",
            # A custom voice missing from, or not yet active in, this account and region.
            "ResourceNotFoundException",
            "ConflictException",
            "UnknownOperationException",  # api_base is not Polly
        ),
        UnsupportedFeature,
    ),
    **dict.fromkeys(
        (
            "TextLengthExceededException",
            "InvalidSsmlException",
            "ValidationException",  # e.g. a VoiceId Polly does not know
            "SerializationException",
        ),
        InvalidInput,
    ),
    **dict.fromkeys(
        (
            "ServiceFailureException",
            "InternalFailure",
            "InternalServerError",
            "ServiceUnavailable",
            "ServiceUnavailableException",
        ),
        ProviderUnavailable,
    ),
    **dict.fromkeys(("RequestTimeout", "RequestTimeoutException"), ProviderTimeout),
}
_STATUS_ERRORS: dict[int, type[ProviderError]] = {**STATUS_ERRORS, 429: RateLimited}
# Characters XML 1.0 forbids; Polly would answer InvalidSsmlException for unspeakable bytes.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_SECRET_PARAMS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


class PollyProvider(SpeechProvider):
    """Text-to-speech with Amazon Polly; one boto3 client per deployment."""

    name = "aws_polly"
    # Billed characters per SynthesizeSpeech call; the SSML we add for speed is not billed.
    max_input_characters = MAX_BILLED_CHARACTERS
    default_voice_map = _NEURAL_GENERATIVE_VOICES
    default_voice = "Joanna"

    def __init__(self, deployment: Deployment, http: httpx.Client | None = None) -> None:
        # The base class's httpx client goes unused (boto3 has its own pool); it keeps close().
        super().__init__(deployment, http)
        self.engine = deployment.model
        if self.engine in VOICE_MAPS:
            self.default_voice_map = VOICE_MAPS[self.engine]
            self.default_voice = _DEFAULT_VOICES[self.engine]
        self._secrets = tuple(
            str(deployment.params[p]) for p in _SECRET_PARAMS if deployment.params.get(p)
        )
        self.client = _create_client(deployment.params)

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        if self.engine not in ENGINES:
            raise UnsupportedFeature(
                f"aws_polly: unknown engine {self.engine!r} (known: {', '.join(ENGINES)})"
            )
        output_format, sample_rate, audio_format = choose_output(
            request.response_format, self.engine
        )
        text, text_type = request.text, "text"
        if request.speed != 1.0:
            if not _MIN_SPEED <= request.speed <= _MAX_SPEED:
                # Another deployment may reach that speed; Polly's prosody rate cannot.
                raise UnsupportedFeature(
                    f"aws_polly: speed {request.speed:g} is outside Polly's "
                    f"{_MIN_SPEED:g}-{_MAX_SPEED:g} (prosody rate 20%-200%)"
                )
            text, text_type = build_ssml(request.text, request.speed), "ssml"
        try:
            response = self.client.synthesize_speech(
                Engine=self.engine,
                OutputFormat=output_format,
                SampleRate=str(sample_rate),
                Text=text,
                TextType=text_type,
                VoiceId=self.resolve_voice(request.voice),
            )
            stream = response["AudioStream"]
            try:
                audio = stream.read()
            finally:
                stream.close()
        except (BotoCoreError, ClientError) as exc:
            error = map_polly_error(exc, secrets=self._secrets)
            # Keep botocore's exception for the traceback unless it quotes a credential.
            if any(secret in f"{exc!s}{exc!r}" for secret in self._secrets):
                raise error from None
            raise error from exc
        content_type = response.get("ContentType") or ""
        # Speech marks (JSON) or an empty body from a proxy are not audio.
        if not audio or content_type.startswith(("application/json", "text/")):
            raise ProviderUnavailable(
                f"aws_polly: expected {output_format} audio, got {content_type or 'an empty body'}"
            )
        characters = response.get("RequestCharacters")
        return SynthesisResult(
            audio=audio,
            audio_format=audio_format,
            sample_rate=sample_rate if audio_format == "pcm" else None,
            # Polly bills what it reports; SSML tags are free.
            characters=int(characters) if characters is not None else len(request.text),
            request_id=response.get("ResponseMetadata", {}).get("RequestId"),
        )

    def close(self) -> None:
        self.client.close()
        super().close()


def choose_output(response_format: str, engine: str) -> tuple[str, int, str]:
    """Polly's OutputFormat and SampleRate for what the client wants, and our audio format.

    mp3 and opus come natively; everything else is pcm at 16 kHz (Polly's best pcm rate),
    which the worker encodes to wav, flac or aac without a lossy round trip.
    """
    if response_format == "mp3":
        return "mp3", _MP3_SAMPLE_RATES.get(engine, 24_000), "mp3"
    if response_format == "opus":
        return "ogg_opus", _OPUS_SAMPLE_RATE, "opus"
    return "pcm", PCM_SAMPLE_RATE, "pcm"


def build_ssml(text: str, speed: float) -> str:
    """`text` as SSML read at `speed` (1.25 -> rate 125%); XML-escaped, so markup in the
    input is read out, never obeyed."""
    # & < > must be escaped in element content; quotes need not, and each entity would
    # count toward Polly's 6,000-character request limit.
    escaped = (
        _XML_INVALID.sub("", text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    )
    # The whole input sits in one prosody element: generative voices accept prosody only
    # around full sentences, and the worker splits text at sentence ends.
    return f'<speak><prosody rate="{round(speed * 100)}%">{escaped}</prosody></speak>'


def map_polly_error(
    exc: BotoCoreError | ClientError, *, secrets: Iterable[str] = ()
) -> ProviderError:
    """Translate a botocore exception into a provider error; `secrets` are masked."""
    if isinstance(exc, ClientError):
        return _map_client_error(exc, tuple(secrets))
    name = type(exc).__name__
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return ProviderTimeout(f"aws_polly: request timed out ({name})")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AuthenticationFailed(f"aws_polly: no usable AWS credentials ({name})")
    if isinstance(exc, ParamValidationError):
        return InvalidInput(redact(f"aws_polly: {exc}", secrets))
    # EndpointConnectionError, ConnectionClosedError, ResponseStreamingError, SSL errors...
    return ProviderUnavailable(redact(f"aws_polly: could not reach Polly ({name}: {exc})", secrets))


def _map_client_error(exc: ClientError, secrets: tuple[str, ...]) -> ProviderError:
    error = exc.response.get("Error", {})
    metadata = exc.response.get("ResponseMetadata", {})
    code = str(error.get("Code") or "")
    status = metadata.get("HTTPStatusCode")
    detail = error.get("Message") or exc.response.get("message") or "no message"
    message = redact(f"aws_polly HTTP {status} {code}: {detail}", secrets)
    error_class = _CODE_ERRORS.get(code) or _STATUS_ERRORS.get(status or 0, ProviderUnavailable)
    if error_class is RateLimited:
        headers: Mapping[str, str] = metadata.get("HTTPHeaders") or {}
        return RateLimited(message, retry_after_s=parse_retry_after_s(headers), status_code=status)
    # 5xx, and any status nobody documented, may pass on a later try.
    return error_class(message, status_code=status)


def _create_client(params: Mapping[str, Any]) -> BaseClient:
    # boto3 sessions are not thread-safe but clients are: the session lives only here.
    session = boto3.session.Session(
        aws_access_key_id=params.get("aws_access_key_id"),
        aws_secret_access_key=params.get("aws_secret_access_key"),
        aws_session_token=params.get("aws_session_token"),
        profile_name=params.get("aws_profile_name"),
    )
    region = (
        params.get("aws_region_name")
        or params.get("region")
        or session.region_name
        or DEFAULT_REGION
    )
    timeout = params.get("timeout")
    config = Config(
        connect_timeout=_CONNECT_TIMEOUT_S,
        read_timeout=float(timeout) if timeout is not None else _READ_TIMEOUT_S,
        # The router retries and cools deployments down. Note `max_attempts` counts retries
        # (1 would mean two calls); `total_max_attempts` counts calls.
        retries={"total_max_attempts": 1, "mode": "standard"},
    )
    return session.client(
        "polly", region_name=region, endpoint_url=params.get("api_base") or None, config=config
    )
