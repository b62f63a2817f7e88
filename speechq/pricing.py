"""What a provider call costs.

Built-in list prices (USD, pay-as-you-go) for every model the providers in
`worker/providers/` serve, overridable per deployment through `model_info` with LiteLLM's
field names. `docs/costs.md` explains the rules; this module is the source of truth.

A price has up to three parts, added up:

- characters of input text (speech), as the provider counts them (`Price.counts` says how);
- seconds of audio in (transcription) or out (speech);
- tokens (Gemini TTS, gpt-4o-mini-tts, gpt-4o-*-transcribe). When the caller passes no
  token counts, tokens are estimated from characters and seconds (see `Price.cost`), so a
  token-billed model never costs $0 just because its usage was not reported.

Prices were checked in 2026 against the pages named per row (`Price.source`). Providers
change them: `model_info` overrides any field for one deployment.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from speechq.modes import SPEECH, TRANSCRIPTION, deployment_mode
from worker.providers.base import Deployment

__all__ = [
    "SPEECH",
    "TRANSCRIPTION",
    "CHARS_PER_TOKEN",
    "GEMINI_AUDIO_TOKENS_PER_SECOND",
    "OVERRIDE_FIELDS",
    "Price",
    "PRICES",
    "DEFAULT_CLOUD_TTS_FAMILY",
    "cloud_tts_family",
    "price_key",
    "price_for",
    "cost_usd",
]


# Estimates, used only when the caller passes no token counts:
# - text tokens from characters: about 4 characters of English per token (OpenAI's and
#   Google's rule of thumb); the input side of a TTS call is small next to its audio.
CHARS_PER_TOKEN = 4.0
# - Gemini TTS audio output: 25 tokens per second of speech ("audio tokens run at 25 per
#   second", Gemini-TTS on https://cloud.google.com/text-to-speech/pricing; the Gemini API
#   pricing page uses the same figure). The 32 tokens/s in Gemini's docs is for audio *input*.
GEMINI_AUDIO_TOKENS_PER_SECOND = 25.0


@dataclass(frozen=True)
class Price:
    """One model's price. Zero / None fields are not billed."""

    input_cost_per_character: float = 0.0
    input_cost_per_second: float = 0.0  # audio in (transcription)
    output_cost_per_second: float = 0.0  # audio out (speech)
    # Token prices (None: not token-billed). Which tokens the caller's counts are depends on
    # the mode: a speech model's input tokens are text and its output tokens are audio; a
    # transcription model's input tokens are (mostly) audio and its output tokens are text.
    input_cost_per_token: float | None = None  # text in
    output_cost_per_token: float | None = None  # text out
    input_cost_per_audio_token: float | None = None  # audio in, where it differs from text in
    output_cost_per_audio_token: float | None = None  # audio out, where it differs from text out
    # For estimating audio tokens from seconds when no token count is passed.
    audio_tokens_per_second: float | None = None
    # Shortest audio billed per request (Groq bills at least 10 s).
    min_input_seconds: float = 0.0
    mode: str | None = None  # SPEECH or TRANSCRIPTION; None: either (free engines, unknown)
    counts: str = ""  # what the provider counts as billable
    source: str = ""  # the pricing page this row was checked against

    @property
    def is_free(self) -> bool:
        return not any(
            (
                self.input_cost_per_character,
                self.input_cost_per_second,
                self.output_cost_per_second,
                self.input_cost_per_token,
                self.output_cost_per_token,
                self.input_cost_per_audio_token,
                self.output_cost_per_audio_token,
            )
        )

    @property
    def input_token_rate(self) -> float | None:
        """What one token of the caller's `input_tokens` costs."""
        if self.mode == TRANSCRIPTION and self.input_cost_per_audio_token is not None:
            return self.input_cost_per_audio_token
        return self.input_cost_per_token

    @property
    def output_token_rate(self) -> float | None:
        """What one token of the caller's `output_tokens` costs."""
        if self.mode == SPEECH and self.output_cost_per_audio_token is not None:
            return self.output_cost_per_audio_token
        return self.output_cost_per_token

    def cost(
        self,
        *,
        characters: int = 0,
        input_audio_seconds: float = 0.0,
        output_audio_seconds: float = 0.0,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> float:
        """USD for one call. Measured token counts win; without them each side falls back to
        its per-second price, else to an estimate (text tokens from characters, audio tokens
        from seconds). A side with no token price ignores token counts."""
        total = characters * self.input_cost_per_character

        in_rate = self.input_token_rate
        if in_rate is not None and input_tokens is not None:
            total += input_tokens * in_rate
        else:
            seconds = input_audio_seconds
            if seconds > 0 and seconds < self.min_input_seconds:
                seconds = self.min_input_seconds
            total += seconds * self.input_cost_per_second
            if in_rate is not None and self.mode == SPEECH and characters > 0:
                total += math.ceil(characters / CHARS_PER_TOKEN) * in_rate

        out_rate = self.output_token_rate
        if out_rate is not None and output_tokens is not None:
            total += output_tokens * out_rate
        elif self.output_cost_per_second:
            total += output_audio_seconds * self.output_cost_per_second
        elif out_rate is not None and self.mode == SPEECH and self.audio_tokens_per_second:
            total += output_audio_seconds * self.audio_tokens_per_second * out_rate
        # A transcription model's text output without a token count is covered by its
        # per-second estimate on the input side (OpenAI's "estimated cost per minute").
        return total


# --- the table ------------------------------------------------------------------------------
# Keyed "provider/model". A deployment's model may carry a suffix after a separator
# (`tts-1-hd-1106`, `nova-3-general`, `aura-2-thalia-en`, `eleven_v3_preview_…`): the
# longest key that is the model or a prefix of it followed by a non-alphanumeric character
# wins. Azure deployments are looked up by `model_info.base_model` (any provider), then by
# the deployment name; see `price_key`.

_MILLION = 1_000_000


def _chars(usd_per_million: float, *, counts: str, source: str) -> Price:
    return Price(
        input_cost_per_character=usd_per_million / _MILLION,
        mode=SPEECH,
        counts=counts,
        source=source,
    )


def _stt_per_minute(usd: float, *, source: str, counts: str = "", min_s: float = 0.0) -> Price:
    return Price(
        input_cost_per_second=usd / 60,
        min_input_seconds=min_s,
        mode=TRANSCRIPTION,
        counts=counts or "seconds of input audio (the provider's duration, else measured)",
        source=source,
    )


def _stt_per_hour(usd: float, *, source: str, counts: str = "", min_s: float = 0.0) -> Price:
    return _stt_per_minute(usd / 60, source=source, counts=counts, min_s=min_s)


# Counting rules, per provider (what the worker passes as `characters` follows these).
_OPENAI_COUNTS = "every character of `input`, whitespace included (OpenAI bills all of it)"
_AZURE_SPEECH_COUNTS = (
    "every character incl. whitespace, plus SSML markup other than <speak>/<voice>; "
    "CJK ideographs count twice (azure_ai_speech.billable_characters)"
)
_ELEVEN_COUNTS = "characters of `text` (len(text)); priced here per character, not per credit"
_DEEPGRAM_COUNTS = "characters of `text` (len(text))"
_CLOUD_TTS_COUNTS = (
    "every character incl. spaces and newlines; SSML tags except <mark> count too "
    "(speechq sends plain text: len(text))"
)
_POLLY_COUNTS = "Polly's RequestCharacters: characters of the text, SSML tags excluded"
_GEMINI_COUNTS = (
    "tokens: text in + audio out (usageMetadata); without counts, chars/4 text tokens "
    "and 25 audio tokens per second of speech"
)

_OPENAI_PRICING = "https://platform.openai.com/docs/pricing"
_OPENAI_MODELS = "https://developers.openai.com/api/docs/models/"
_AZURE_OPENAI_PRICING = "https://azure.microsoft.com/pricing/details/azure-openai/"
_AZURE_SPEECH_PRICING = "https://azure.microsoft.com/pricing/details/speech/"
_ELEVEN_PRICING = (
    "https://elevenlabs.io/pricing/api; credits per character: https://help.elevenlabs.io/"
    "hc/en-us/articles/21811236079505"
)
_DEEPGRAM_PRICING = "https://deepgram.com/pricing"
_GEMINI_PRICING = "https://ai.google.dev/gemini-api/docs/pricing"
_CLOUD_TTS_PRICING = "https://cloud.google.com/text-to-speech/pricing"
_POLLY_PRICING = "https://aws.amazon.com/polly/pricing/"
_GROQ_PRICING = "https://groq.com/pricing; https://console.groq.com/docs/speech-to-text"


def _gpt_4o_mini_tts(source: str) -> Price:
    # $0.60 / 1M text input tokens, $12 / 1M audio output tokens, "estimated $0.015 / minute".
    return Price(
        input_cost_per_token=0.60 / _MILLION,
        output_cost_per_audio_token=12.00 / _MILLION,
        output_cost_per_second=0.015 / 60,  # OpenAI's per-minute estimate, used without tokens
        mode=SPEECH,
        counts="tokens: text in + audio out; without counts, chars/4 text tokens and "
        "$0.015 per minute of audio out",
        source=source,
    )


def _gpt_4o_transcribe(
    text_in: float, audio_in: float, text_out: float, per_minute: float, source: str
) -> Price:
    return Price(
        input_cost_per_token=text_in / _MILLION,
        input_cost_per_audio_token=audio_in / _MILLION,
        output_cost_per_token=text_out / _MILLION,
        input_cost_per_second=per_minute / 60,  # the published per-minute estimate
        mode=TRANSCRIPTION,
        counts="tokens: audio (+prompt) in, text out (`usage`); without counts, the "
        "published estimated cost per minute of input audio",
        source=source,
    )


def _gemini_tts(text_in: float, audio_out: float, source: str) -> Price:
    return Price(
        input_cost_per_token=text_in / _MILLION,
        output_cost_per_audio_token=audio_out / _MILLION,
        audio_tokens_per_second=GEMINI_AUDIO_TOKENS_PER_SECOND,
        mode=SPEECH,
        counts=_GEMINI_COUNTS,
        source=source,
    )


PRICES: dict[str, Price] = {
    # --- OpenAI ---------------------------------------------------------------------------
    # Model pages: tts-1 "$15.00 / 1M characters", tts-1-hd "$30 / 1M characters".
    "openai/tts-1": _chars(15.00, counts=_OPENAI_COUNTS, source=_OPENAI_MODELS + "tts-1"),
    "openai/tts-1-hd": _chars(30.00, counts=_OPENAI_COUNTS, source=_OPENAI_MODELS + "tts-1-hd"),
    # Model page: text in $0.60, audio out $12.00 per 1M tokens; ~$0.015 a minute.
    "openai/gpt-4o-mini-tts": _gpt_4o_mini_tts(_OPENAI_MODELS + "gpt-4o-mini-tts"),
    # Whisper: $0.006 per minute, billed to the second.
    "openai/whisper-1": _stt_per_minute(0.006, source=_OPENAI_PRICING),
    # Text in $2.50, audio in $6.00, text out $10.00 per 1M; estimated $0.006 / minute.
    "openai/gpt-4o-transcribe": _gpt_4o_transcribe(
        2.50, 6.00, 10.00, 0.006, _OPENAI_PRICING + "; " + _OPENAI_MODELS + "gpt-4o-transcribe"
    ),
    # Text in $1.25, audio in $3.00, text out $5.00 per 1M; estimated $0.003 / minute.
    "openai/gpt-4o-mini-transcribe": _gpt_4o_transcribe(1.25, 3.00, 5.00, 0.003, _OPENAI_PRICING),
    # --- Groq (OpenAI-compatible `openai/` deployments whose api_base is Groq) --------------
    # whisper-large-v3 $0.111 / hour, -turbo $0.04 / hour; "billed at a minimum of 10 seconds
    # per request". Also reached with `base_model: groq/<model>`.
    "groq/whisper-large-v3": _stt_per_hour(
        0.111, source=_GROQ_PRICING, min_s=10.0, counts="seconds of input audio, 10 s minimum"
    ),
    "groq/whisper-large-v3-turbo": _stt_per_hour(
        0.04, source=_GROQ_PRICING, min_s=10.0, counts="seconds of input audio, 10 s minimum"
    ),
    # --- Azure OpenAI (looked up by `model_info.base_model`, else the deployment name) -------
    # Global/Standard list prices equal OpenAI's for these models. LiteLLM 1.110.2 lists
    # azure/tts-1-hd at $33 / 1M (a regional price?); we keep OpenAI's $30.
    "azure/tts-1": _chars(15.00, counts=_OPENAI_COUNTS, source=_AZURE_OPENAI_PRICING),
    "azure/tts-1-hd": _chars(30.00, counts=_OPENAI_COUNTS, source=_AZURE_OPENAI_PRICING),
    "azure/gpt-4o-mini-tts": _gpt_4o_mini_tts(_AZURE_OPENAI_PRICING),
    "azure/whisper": _stt_per_hour(0.36, source=_AZURE_OPENAI_PRICING),
    "azure/whisper-1": _stt_per_hour(0.36, source=_AZURE_OPENAI_PRICING),
    # "GPT-4o-transcribe audio input $6 and text input/output $2.50/$10;
    #  GPT-4o-mini-transcribe audio input $3 and text input/output $1.25/$5".
    "azure/gpt-4o-transcribe": _gpt_4o_transcribe(2.50, 6.00, 10.00, 0.006, _AZURE_OPENAI_PRICING),
    "azure/gpt-4o-mini-transcribe": _gpt_4o_transcribe(
        1.25, 3.00, 5.00, 0.003, _AZURE_OPENAI_PRICING
    ),
    # --- Azure AI Speech (the model name is free; the mode picks the row) --------------------
    # Standard neural voices $15 / 1M characters. Neural HD voices cost more: override.
    "azure_ai_speech/neural": _chars(
        15.00, counts=_AZURE_SPEECH_COUNTS, source=_AZURE_SPEECH_PRICING
    ),
    # Fast transcription $0.36 / audio hour (real-time is $1.00, batch $0.18; speechq uses
    # fast transcription). LiteLLM's azure-stt row is the real-time $1.00.
    "azure_ai_speech/fast-transcription": _stt_per_hour(0.36, source=_AZURE_SPEECH_PRICING),
    # --- ElevenLabs ---------------------------------------------------------------------
    # API pricing: Multilingual v2/v3 $0.10 / 1K characters, Flash/Turbo $0.05 / 1K; help
    # center: "Flash and Turbo models cost 1 credit per 2 characters, and all other models 1
    # credit per character" (so the v1 models price as v2). LiteLLM lists $0.08 / $0.04.
    "elevenlabs/eleven_v3": _chars(100.0, counts=_ELEVEN_COUNTS, source=_ELEVEN_PRICING),
    "elevenlabs/eleven_multilingual_v2": _chars(
        100.0, counts=_ELEVEN_COUNTS, source=_ELEVEN_PRICING
    ),
    "elevenlabs/eleven_multilingual_v1": _chars(
        100.0, counts=_ELEVEN_COUNTS, source=_ELEVEN_PRICING
    ),
    "elevenlabs/eleven_monolingual_v1": _chars(
        100.0, counts=_ELEVEN_COUNTS, source=_ELEVEN_PRICING
    ),
    "elevenlabs/eleven_flash_v2_5": _chars(50.0, counts=_ELEVEN_COUNTS, source=_ELEVEN_PRICING),
    "elevenlabs/eleven_turbo_v2_5": _chars(50.0, counts=_ELEVEN_COUNTS, source=_ELEVEN_PRICING),
    "elevenlabs/eleven_flash_v2": _chars(50.0, counts=_ELEVEN_COUNTS, source=_ELEVEN_PRICING),
    "elevenlabs/eleven_turbo_v2": _chars(50.0, counts=_ELEVEN_COUNTS, source=_ELEVEN_PRICING),
    # Scribe v1/v2: $0.22 per hour of audio.
    "elevenlabs/scribe_v1": _stt_per_hour(0.22, source=_ELEVEN_PRICING),
    "elevenlabs/scribe_v2": _stt_per_hour(0.22, source=_ELEVEN_PRICING),
    # --- Deepgram -------------------------------------------------------------------------
    # Pre-recorded, Pay As You Go: Nova-3 / Nova-2 / Nova $0.0043 / min; Enhanced $0.0145;
    # Base $0.0125 (Deepgram staff, github.com/orgs/deepgram/discussions/249). Aura-1
    # $0.015 / 1K characters, Aura-2 $0.030 / 1K. Not read on deepgram.com itself: see
    # docs/costs.md. Variants (`nova-3-general`, `aura-2-thalia-en`) price as their family.
    "deepgram/nova-3": _stt_per_minute(0.0043, source=_DEEPGRAM_PRICING),
    "deepgram/nova-2": _stt_per_minute(0.0043, source=_DEEPGRAM_PRICING),
    "deepgram/nova": _stt_per_minute(0.0043, source=_DEEPGRAM_PRICING),
    "deepgram/enhanced": _stt_per_minute(0.0145, source=_DEEPGRAM_PRICING),
    "deepgram/base": _stt_per_minute(
        0.0125, source=_DEEPGRAM_PRICING + "; https://github.com/orgs/deepgram/discussions/249"
    ),
    "deepgram/aura": _chars(15.00, counts=_DEEPGRAM_COUNTS, source=_DEEPGRAM_PRICING),
    "deepgram/aura-2": _chars(30.00, counts=_DEEPGRAM_COUNTS, source=_DEEPGRAM_PRICING),
    # --- Gemini API -----------------------------------------------------------------------
    # 2.5 Flash Preview TTS: $0.50 text in, $10.00 audio out per 1M tokens; 2.5 Pro Preview
    # TTS: $1.00 / $20.00.
    "gemini/gemini-2.5-flash-preview-tts": _gemini_tts(0.50, 10.00, _GEMINI_PRICING),
    "gemini/gemini-2.5-pro-preview-tts": _gemini_tts(1.00, 20.00, _GEMINI_PRICING),
    # --- Vertex AI: Gemini-TTS (same prices as the Gemini API) --------------------------------
    "vertex_ai/gemini-2.5-flash-tts": _gemini_tts(0.50, 10.00, _CLOUD_TTS_PRICING),
    "vertex_ai/gemini-2.5-pro-tts": _gemini_tts(1.00, 20.00, _CLOUD_TTS_PRICING),
    "vertex_ai/gemini-2.5-flash-preview-tts": _gemini_tts(0.50, 10.00, _CLOUD_TTS_PRICING),
    "vertex_ai/gemini-2.5-pro-preview-tts": _gemini_tts(1.00, 20.00, _CLOUD_TTS_PRICING),
    # --- Vertex AI: Cloud Text-to-Speech, by voice family (see `cloud_tts_family`) -----------
    # Standard / WaveNet $4, Neural2 $16, Chirp 3: HD $30, Studio $160 per 1M characters
    # (after each family's monthly free allowance, which speechq does not track). Polyglot
    # was not in the copy of the page read: Neural2's price is assumed.
    "vertex_ai/standard": _chars(4.00, counts=_CLOUD_TTS_COUNTS, source=_CLOUD_TTS_PRICING),
    "vertex_ai/wavenet": _chars(4.00, counts=_CLOUD_TTS_COUNTS, source=_CLOUD_TTS_PRICING),
    "vertex_ai/neural2": _chars(16.00, counts=_CLOUD_TTS_COUNTS, source=_CLOUD_TTS_PRICING),
    "vertex_ai/polyglot": _chars(16.00, counts=_CLOUD_TTS_COUNTS, source=_CLOUD_TTS_PRICING),
    "vertex_ai/chirp3-hd": _chars(30.00, counts=_CLOUD_TTS_COUNTS, source=_CLOUD_TTS_PRICING),
    "vertex_ai/studio": _chars(160.00, counts=_CLOUD_TTS_COUNTS, source=_CLOUD_TTS_PRICING),
    # --- Amazon Polly (the model is the engine) --------------------------------------------
    "aws_polly/standard": _chars(4.00, counts=_POLLY_COUNTS, source=_POLLY_PRICING),
    "aws_polly/neural": _chars(16.00, counts=_POLLY_COUNTS, source=_POLLY_PRICING),
    "aws_polly/long-form": _chars(100.00, counts=_POLLY_COUNTS, source=_POLLY_PRICING),
    "aws_polly/generative": _chars(30.00, counts=_POLLY_COUNTS, source=_POLLY_PRICING),
    # --- Local engines run on our own machine --------------------------------------------------
    "local/piper": Price(mode=SPEECH, counts="free", source="runs in the worker"),
    "local/whisper": Price(mode=TRANSCRIPTION, counts="free", source="runs in the worker"),
}

# Cloud TTS voice families, as they appear in voice names (`en-US-Neural2-A`,
# `en-US-Chirp3-HD-Kore`) or a deployment's model name (`vertex_ai/neural2`). Checked in
# order; plain `chirp` (LiteLLM's `vertex_ai/chirp`) is the Chirp HD tier.
_CLOUD_TTS_FAMILY_WORDS = (
    ("chirp3", "chirp3-hd"),
    ("neural2", "neural2"),
    ("wavenet", "wavenet"),
    ("studio", "studio"),
    ("polyglot", "polyglot"),
    ("standard", "standard"),
    ("chirp", "chirp3-hd"),
)
# What speechq's Cloud TTS deployments speak with when nothing says otherwise: every
# default voice (`vertex_ai.py`'s map) is a Chirp 3 HD voice.
DEFAULT_CLOUD_TTS_FAMILY = "chirp3-hd"

# LiteLLM's names. Each one given in `model_info` replaces that field only.
OVERRIDE_FIELDS = (
    "input_cost_per_character",
    "input_cost_per_second",
    "output_cost_per_second",
    "input_cost_per_token",
    "output_cost_per_token",
    "input_cost_per_audio_token",
    "output_cost_per_audio_token",
)


def cloud_tts_family(*names: str | None) -> str | None:
    """The Cloud TTS voice family the first telling name belongs to, else None."""
    for name in names:
        if not name:
            continue
        lowered = name.lower()
        for word, family in _CLOUD_TTS_FAMILY_WORDS:
            if word in lowered:
                return family
    return None


def _match(provider: str, model: str) -> str | None:
    """The longest `provider/…` key that is `model` or a prefix of it ending at a separator."""
    prefix = f"{provider}/"
    best: str | None = None
    for key in PRICES:
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if model == name or (
            model.startswith(name) and not model[len(name)].isalnum() and model[len(name)] != "."
        ):
            if best is None or len(key) > len(best):
                best = key
    return best


def _split(reference: str, default_provider: str) -> tuple[str, str]:
    provider, sep, model = reference.partition("/")
    return (provider, model) if sep else (default_provider, reference)


def price_key(deployment: Deployment, *, voice: str | None = None) -> str | None:
    """The `PRICES` key a deployment is billed by, or None (no built-in price).

    1. `model_info.base_model` (LiteLLM's field, for any provider): `azure/tts-1`, or a bare
       model name taken as this provider's.
    2. By provider: `vertex_ai/` Cloud TTS by voice family (the call's voice, the model name,
       the deployment's default voice; else Chirp 3 HD); `azure_ai_speech/` by mode;
       `openai/` then Groq's names; everything else by model name (prefix rule above).
    """
    base_model = deployment.model_info.get("base_model")
    if base_model:
        key = _match(*_split(str(base_model), deployment.provider))
        if key:
            return key
    provider, model = deployment.provider, deployment.model
    if provider == "gemini":
        return _match(provider, model.removeprefix("models/"))
    if provider == "vertex_ai":
        model = model.removeprefix("publishers/google/models/")
        if model.startswith("gemini"):
            return _match(provider, model)
        voice_map = deployment.params.get("voice_map") or {}
        default_voice = voice_map.get("default") if isinstance(voice_map, Mapping) else None
        family = cloud_tts_family(voice, model, default_voice) or DEFAULT_CLOUD_TTS_FAMILY
        return f"vertex_ai/{family}"
    if provider == "azure_ai_speech":
        exact = _match(provider, model)
        if exact:
            return exact
        if deployment_mode(deployment) == TRANSCRIPTION:
            return "azure_ai_speech/fast-transcription"
        return "azure_ai_speech/neural"
    if provider == "openai":
        return _match("openai", model) or _match("groq", model)
    return _match(provider, model)


def price_for(deployment: Deployment, *, voice: str | None = None) -> Price:
    """The built-in price with this deployment's `model_info` overrides applied."""
    key = price_key(deployment, voice=voice)
    base = PRICES[key] if key else Price()
    overrides: dict[str, Any] = {
        name: float(deployment.model_info[name])
        for name in OVERRIDE_FIELDS
        if deployment.model_info.get(name) is not None
    }
    mode = base.mode or deployment_mode(deployment)
    # An override of the generic token price sets the rate the caller's tokens are billed
    # at, unless the audio-token field is overridden too: a speech model's output tokens
    # and a transcription model's input tokens are audio tokens.
    if mode == SPEECH and "output_cost_per_token" in overrides:
        overrides.setdefault("output_cost_per_audio_token", None)
    if mode == TRANSCRIPTION and "input_cost_per_token" in overrides:
        overrides.setdefault("input_cost_per_audio_token", None)
    if not overrides and base.mode is not None:
        return base
    return dataclasses.replace(base, **{"mode": mode, **overrides})


def cost_usd(
    deployment: Deployment,
    *,
    characters: int = 0,
    input_audio_seconds: float = 0.0,
    output_audio_seconds: float = 0.0,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    voice: str | None = None,
) -> float:
    """USD for one billable call of `deployment`; see `Price.cost` and docs/costs.md.

    `characters` are the billable characters the provider reported (the worker falls back
    to len(text)); `input_tokens`/`output_tokens` are the provider's own usage counts when
    it reports them; `voice` (Cloud TTS) is the voice the call used.
    """
    price = price_for(deployment, voice=voice)
    total = price.cost(
        characters=characters,
        input_audio_seconds=input_audio_seconds,
        output_audio_seconds=output_audio_seconds,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )
    return round(total, 10)
