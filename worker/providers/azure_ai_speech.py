"""Azure AI Speech: neural text-to-speech over SSML, and fast transcription.

    POST https://{region}.tts.speech.microsoft.com/cognitiveservices/v1
         SSML in, audio bytes out (format named by X-Microsoft-OutputFormat)
    POST https://{region}.api.cognitive.microsoft.com/speechtotext/transcriptions:transcribe
         ?api-version=2024-11-15, multipart `audio` + `definition` (JSON) in, JSON out

Config: `model: azure_ai_speech/<anything>` (the voice, not the model, picks the engine),
`region: eastus` or `api_base` (a resource endpoint such as
https://<name>.cognitiveservices.azure.com, which serves /tts/cognitiveservices/v1 and
/speechtotext/...; a regional host such as https://eastus.tts.speech.microsoft.com is read as
its region), `api_key` (sent as `Ocp-Apim-Subscription-Key`) or `azure_ad_token` (sent as
`Authorization: Bearer`), optional `api_version` (speech-to-text), `locales`,
`profanity_filter_mode`, `user_agent`, `timeout`.

Not sent: `instructions` (SSML has no free-text style prompt), and a transcription's
`prompt` and `temperature` (fast transcription has no equivalent).

Docs followed:
- Text to speech REST API (headers, status codes, output formats, the 10-minute cap):
  https://learn.microsoft.com/azure/ai-services/speech-service/rest-text-to-speech
- SSML voice and prosody (rate "within 0.5 to 2 times the original audio"):
  https://learn.microsoft.com/azure/ai-services/speech-service/speech-synthesis-markup-voice
- Quotas and limits ("Max audio length produced per request: 10 min"; fast transcription
  < 200 MB and 120 minutes per file):
  https://learn.microsoft.com/azure/ai-services/speech-service/speech-services-quotas-and-limits
- Billable characters (markup other than <speak>/<voice> is billed; hanzi count twice):
  https://learn.microsoft.com/azure/ai-services/speech-service/text-to-speech#billable-characters
- Fast transcription (multipart `audio` + `definition`, response shape):
  https://learn.microsoft.com/azure/ai-services/speech-service/fast-transcription-create
  and the 2024-11-15 spec (TranscribeResult, Phrase, Error) in Azure/azure-rest-api-specs,
  specification/cognitiveservices/data-plane/Speech/SpeechToText/stable/2024-11-15
"""

from __future__ import annotations

import json
import math
import mimetypes
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from xml.sax.saxutils import escape

import httpx

from speechq import __version__
from worker.providers._http import (
    map_http_error,
    parse_timeout_s,
    post,
    read_error_text,
    read_json,
)
from worker.providers.base import (
    Deployment,
    SpeechProvider,
    SynthesisRequest,
    SynthesisResult,
    TranscriptionRequest,
    TranscriptionResult,
    TranscriptSegment,
)
from worker.providers.errors import (
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    UnsupportedFeature,
)

__all__ = [
    "DEFAULT_STT_API_VERSION",
    "DEFAULT_VOICE_MAP",
    "PCM_SAMPLE_RATE",
    "AzureSpeechProvider",
    "billable_characters",
    "build_ssml",
    "map_azure_speech_error",
    "parse_fast_transcription",
    "prosody_rate",
    "resolve_endpoints",
    "to_locale",
]

DEFAULT_STT_API_VERSION = "2024-11-15"  # the GA version of fast transcription
PCM_SAMPLE_RATE = 24_000  # raw-24khz-16bit-mono-pcm; the neural voices' native rate

# OpenAI voice -> a GA en-US neural voice of a similar register (gender, warmth, depth).
DEFAULT_VOICE_MAP: Mapping[str, str] = MappingProxyType(
    {
        "alloy": "en-US-JennyNeural",  # neutral, friendly female
        "ash": "en-US-DavisNeural",  # calm, low male
        "ballad": "en-US-AndrewNeural",  # warm, soft male
        "coral": "en-US-AriaNeural",  # bright, expressive female
        "echo": "en-US-GuyNeural",  # clear, even male
        "fable": "en-US-BrianNeural",  # storyteller male
        "nova": "en-US-AvaNeural",  # lively young female
        "onyx": "en-US-ChristopherNeural",  # deep, authoritative male
        "sage": "en-US-EmmaNeural",  # calm, clear female
        "shimmer": "en-US-SaraNeural",  # soft female
        "verse": "en-US-TonyNeural",  # expressive male
    }
)

# Client format -> (X-Microsoft-OutputFormat, what we hand the worker). Azure has no AAC or
# FLAC output; for those, and for wav and pcm, raw PCM comes back and the worker encodes it.
_OUTPUT_FORMATS: dict[str, tuple[str, str]] = {
    "mp3": ("audio-24khz-48kbitrate-mono-mp3", "mp3"),
    "opus": ("ogg-24khz-16bit-mono-opus", "opus"),  # Ogg Opus, like OpenAI's `opus`
}
_PCM_OUTPUT_FORMAT = "raw-24khz-16bit-mono-pcm"

# SSML prosody rate: "The rate changes should be within 0.5 to 2 times the original audio."
_MIN_RATE = 0.5
_MAX_RATE = 2.0

# Fast transcription wants BCP-47 locales; clients send ISO-639-1 (OpenAI's `language`).
# These are the languages the fast transcription guide lists; others are left to the
# service's language identification rather than guessed at.
_DEFAULT_LOCALES: dict[str, str] = {
    "de": "de-DE",
    "en": "en-US",
    "es": "es-ES",
    "fr": "fr-FR",
    "hi": "hi-IN",
    "it": "it-IT",
    "ja": "ja-JP",
    "ko": "ko-KR",
    "pt": "pt-BR",
    "zh": "zh-CN",
}

_SSML_NAMESPACE = "http://www.w3.org/2001/10/synthesis"
# Characters XML 1.0 forbids (and lone surrogates, which cannot be encoded): the service
# would reject the whole document for one stray control character, and none is speakable.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_VOICE_LOCALE = re.compile(r"^[a-z]{2,3}-(?:[A-Z][a-z]{3}-)?[A-Z]{2}(?=-)", re.IGNORECASE)
# A regional host names the region: {region}.tts.speech.*, {region}.api.cognitive.*, ...
_REGIONAL_HOST = re.compile(
    r"^(?P<region>[a-z0-9]+)\.(?:tts\.speech|stt\.speech|api\.cognitive)\.(?P<cloud>.+)$"
)


class AzureSpeechProvider(SpeechProvider):
    """Azure AI Speech neural voices (TTS) and fast transcription (STT)."""

    name = "azure_ai_speech"
    # The REST API cuts audio at 10 minutes ("If the body length is long, and the resulting
    # audio exceeds 10 minutes, it's truncated"), silently. The slowest rate we send is 0.5x:
    # en-US-JennyNeural speaks 152 words a minute, so 10 minutes at half speed is ~760 words,
    # ~4,500 characters of English at ~5.9 characters a word. 4,000 leaves room for slower
    # voices and for digits and abbreviations, which are spoken longer than they are written.
    max_input_characters = 4000
    default_voice_map = DEFAULT_VOICE_MAP
    default_voice = "en-US-JennyNeural"

    def __init__(self, deployment: Deployment, http: httpx.Client | None = None) -> None:
        # Resolved before the base class opens an HTTP client that nothing would close.
        self.tts_url, self.stt_url = resolve_endpoints(deployment.params)
        super().__init__(deployment, http)
        params = deployment.params
        self.api_version = str(params.get("api_version") or DEFAULT_STT_API_VERSION)
        # The TTS API requires a User-Agent naming the application, under 255 characters.
        self.user_agent = str(params.get("user_agent") or f"speechq/{__version__}")[:254]
        self.timeout_s = parse_timeout_s(params)

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """Speak `request.text`; `instructions` is ignored (SSML has no style prompt)."""
        text = _XML_ILLEGAL.sub("", request.text)
        if not text.strip():
            raise InvalidInput("azure_ai_speech: nothing to speak")
        voice = self.resolve_voice(request.voice) or self.default_voice or ""
        rate = prosody_rate(request.speed)
        output_format, audio_format = _OUTPUT_FORMATS.get(
            request.response_format, (_PCM_OUTPUT_FORMAT, "pcm")
        )
        response = self._post(
            self.tts_url,
            content=build_ssml(text, voice=voice, rate=rate).encode("utf-8"),
            headers={
                "Content-Type": "application/ssml+xml",
                "X-Microsoft-OutputFormat": output_format,
                "User-Agent": self.user_agent,
            },
        )
        content_type = response.headers.get("content-type", "")
        # An empty 200 or a text page is not audio (an unknown voice can answer that way).
        if not response.content or content_type.startswith(("application/json", "text/")):
            raise ProviderUnavailable(
                f"azure_ai_speech: expected {output_format} audio for voice {voice!r}, "
                f"got {content_type or 'an empty body'}"
            )
        return SynthesisResult(
            audio=response.content,
            audio_format=audio_format,
            sample_rate=PCM_SAMPLE_RATE if audio_format == "pcm" else None,
            characters=billable_characters(text, _prosody_markup(rate)),
            request_id=_request_id(response),
        )

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        """Fast transcription; `prompt` and `temperature` have no equivalent and are ignored."""
        definition: dict[str, Any] = {}
        locales = self._locales(request.language)
        if locales:
            definition["locales"] = locales
        profanity = self.deployment.params.get("profanity_filter_mode")
        if profanity:
            definition["profanityFilterMode"] = str(profanity)
        filename = _upload_filename(request.filename, request.audio_path)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        # httpx streams the open file, so a long recording never sits in memory.
        with request.audio_path.open("rb") as audio_file:
            response = self._post(
                self.stt_url,
                params={"api-version": self.api_version},
                data={"definition": json.dumps(definition)},
                files={"audio": (filename, audio_file, content_type)},
                headers={"User-Agent": self.user_agent},
            )
        return parse_fast_transcription(response)

    def _locales(self, language: str | None) -> list[str]:
        if language:
            locale = to_locale(language)
            return [locale] if locale else []
        configured = self.deployment.params.get("locales") or []
        return [str(configured)] if isinstance(configured, str) else [str(x) for x in configured]

    def _post(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        return post(
            self.http,
            url,
            params=params,
            content=content,
            data=data,
            files=files,
            headers={**headers, **self._auth_headers()},
            timeout_s=self.timeout_s,
            map_error=lambda exc: map_azure_speech_error(exc, secrets=self._secrets()),
        )

    def _auth_headers(self) -> dict[str, str]:
        # An Entra ID token ("aad#<resource id>#<token>" on regional hosts) wins over the key.
        token = self.deployment.params.get("azure_ad_token")
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self.deployment.api_key:
            return {"Ocp-Apim-Subscription-Key": self.deployment.api_key}
        return {}

    def _secrets(self) -> list[str]:
        values = (self.deployment.api_key, self.deployment.params.get("azure_ad_token"))
        return [str(value) for value in values if value]


def resolve_endpoints(params: Mapping[str, Any]) -> tuple[str, str]:
    """The text-to-speech and fast-transcription URLs for a deployment's `params`."""
    api_base = str(params.get("api_base") or "").strip().rstrip("/")
    region = str(params.get("region") or "").strip().lower()
    cloud = "microsoft.com"
    if api_base:
        url = httpx.URL(api_base)
        if url.scheme not in ("http", "https") or not url.host:
            raise UnsupportedFeature(f"azure_ai_speech: api_base {api_base!r} is not a URL")
        match = _REGIONAL_HOST.match(url.host)
        if match is None:
            # A resource endpoint (custom subdomain), or any server that mimics one.
            return (
                f"{api_base}/tts/cognitiveservices/v1",
                f"{api_base}/speechtotext/transcriptions:transcribe",
            )
        region, cloud = match["region"], match["cloud"]
    if not re.fullmatch(r"[a-z0-9]+", region):
        raise UnsupportedFeature(
            f"azure_ai_speech: the deployment needs `region` (e.g. eastus) or `api_base`, "
            f"got region {region!r}"
        )
    return (
        f"https://{region}.tts.speech.{cloud}/cognitiveservices/v1",
        f"https://{region}.api.cognitive.{cloud}/speechtotext/transcriptions:transcribe",
    )


def prosody_rate(speed: float) -> str | None:
    """OpenAI's `speed` (0.25-4) as an SSML rate, clamped to Azure's 0.5-2x; None for 1x."""
    if not math.isfinite(speed):
        return None
    percent = round((min(max(speed, _MIN_RATE), _MAX_RATE) - 1.0) * 100)
    return f"{percent:+d}%" if percent else None


def build_ssml(text: str, *, voice: str, rate: str | None = None) -> str:
    """One-voice SSML with `text` escaped; `xml:lang` is the voice's locale."""
    match = _VOICE_LOCALE.match(voice)
    lang = match.group(0) if match else "en-US"
    body = escape(text)
    if rate:
        body = f"<prosody rate={_attr(rate)}>{body}</prosody>"
    return (
        f"<speak version='1.0' xmlns={_attr(_SSML_NAMESPACE)} xml:lang={_attr(lang)}>"
        f"<voice name={_attr(voice)}>{body}</voice></speak>"
    )


def billable_characters(text: str, markup: str = "") -> int:
    """What Azure bills: every code point of the text and of markup other than <speak> and
    <voice>, with each Chinese character (hanzi, kanji, hanja) counted twice."""
    ideographs = sum(1 for char in text if _is_cjk_ideograph(char))
    return len(text) + ideographs + len(markup)


def to_locale(language: str) -> str | None:
    """A BCP-47 locale for fast transcription: `en` -> `en-US`; `pt_br` -> `pt-BR`."""
    language, *subtags = re.split(r"[-_]", language.strip())
    if not subtags:
        return _DEFAULT_LOCALES.get(language.lower())
    # BCP-47 casing: language lower, script title (Hans), region upper (CN).
    cased = [tag.title() if len(tag) == 4 else tag.upper() for tag in subtags]
    return "-".join([language.lower(), *cased])


def parse_fast_transcription(response: httpx.Response) -> TranscriptionResult:
    """Text, duration, language and phrase segments from a fast transcription answer."""
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderUnavailable("azure_ai_speech: transcription is not valid JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("combinedPhrases"), list):
        raise ProviderUnavailable("azure_ai_speech: transcription answer has no `combinedPhrases`")
    try:
        # One entry per channel; without `channels` in the definition there is exactly one.
        text = " ".join(str(entry["text"]).strip() for entry in body["combinedPhrases"])
        phrases = body.get("phrases") or []
        segments = tuple(
            TranscriptSegment(
                start=int(phrase["offsetMilliseconds"]) / 1000,
                end=(int(phrase["offsetMilliseconds"]) + int(phrase["durationMilliseconds"]))
                / 1000,
                text=str(phrase["text"]).strip(),
            )
            for phrase in phrases
        )
        duration_ms = body.get("durationMilliseconds")
        duration_seconds = int(duration_ms) / 1000 if duration_ms is not None else None
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderUnavailable("azure_ai_speech: transcription phrases are malformed") from exc
    locale = phrases[0].get("locale") if phrases else None
    return TranscriptionResult(
        text=text.strip(),
        language=locale if isinstance(locale, str) else None,
        duration_seconds=duration_seconds,
        segments=segments,
        request_id=_request_id(response),
    )


def map_azure_speech_error(exc: httpx.HTTPError, *, secrets: Iterable[str] = ()) -> ProviderError:
    """Translate an httpx exception (including `HTTPStatusError`) into a provider error.

    The shared status table fits: 400 is bad SSML, an unknown voice or unreadable audio; 401
    a wrong key or one for another region; 404 a wrong endpoint or a feature this region
    lacks; 413 audio over 200 MB; 415 an audio format the service cannot read.
    """
    return map_http_error(
        exc, label="azure_ai_speech", read_detail=_read_error_detail, secrets=secrets
    )


def _read_error_detail(response: httpx.Response) -> str:
    """The service's words. Speech-to-text answers `{code, message, innerError}`; the API
    gateway answers `{error: {code, message}}`; text-to-speech often sends no body at all."""
    body = read_json(response)
    if isinstance(body, dict):
        error = body["error"] if isinstance(body.get("error"), dict) else body
        message = error.get("message")
        if isinstance(message, str) and message:
            inner = error.get("innerError")
            if isinstance(inner, dict) and isinstance(inner.get("message"), str):
                message = f"{message} ({inner['message']})"
            code = error.get("code")
            return f"{code}: {message}" if isinstance(code, str) and code else message
    return read_error_text(response)


def _attr(value: str) -> str:
    """A single-quoted XML attribute value."""
    return "'" + escape(value, {"'": "&apos;", '"': "&quot;"}) + "'"


def _prosody_markup(rate: str | None) -> str:
    # Exactly the tags build_ssml wraps the text in: they are billable characters.
    return f"<prosody rate={_attr(rate)}></prosody>" if rate else ""


def _is_cjk_ideograph(char: str) -> bool:
    return unicodedata.name(char, "").startswith(
        ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")
    )


def _request_id(response: httpx.Response) -> str | None:
    return response.headers.get("x-requestid") or response.headers.get("apim-request-id")


def _upload_filename(filename: str, audio_path: Path) -> str:
    # The service sniffs the container, but a matching extension costs nothing.
    if Path(filename).suffix or not audio_path.suffix:
        return filename
    return f"{filename}{audio_path.suffix}"
