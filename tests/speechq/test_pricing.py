"""The built-in price table, how deployments find their row, estimates and overrides."""

from __future__ import annotations

import pytest

from speechq.pricing import (
    DEFAULT_CLOUD_TTS_FAMILY,
    GEMINI_AUDIO_TOKENS_PER_SECOND,
    OVERRIDE_FIELDS,
    PRICES,
    SPEECH,
    TRANSCRIPTION,
    Price,
    cost_usd,
    price_for,
    price_key,
)
from worker.providers import PROVIDERS
from worker.providers.aws_polly import ENGINES
from worker.providers.base import Deployment
from worker.providers.deepgram import DEFAULT_VOICE_MAP as DEEPGRAM_VOICES
from worker.providers.elevenlabs import MODEL_CHARACTER_LIMITS
from worker.providers.vertex_ai import VOICE_MAP as VERTEX_VOICES
from worker.providers.vertex_ai import cloud_tts_voice

PAID = sorted(key for key, price in PRICES.items() if not price.is_free)
FREE = sorted(key for key, price in PRICES.items() if price.is_free)


def deployment(
    reference: str, *, model_info: dict | None = None, params: dict | None = None
) -> Deployment:
    provider, _, model = reference.partition("/")
    if provider == "groq":  # Groq is an OpenAI-compatible server behind `openai/`
        provider = "openai"
        params = {"api_base": "https://api.groq.com/openai/v1", **(params or {})}
    return Deployment(
        "m", provider, model, params=params or {}, model_info=model_info or {}, id="m#0"
    )


def representative_cost(reference: str, **kwargs: object) -> float:
    """A minute of audio: 1,000 characters spoken into 60 s, or 60 s transcribed."""
    price = PRICES[reference]
    if price.mode == TRANSCRIPTION:
        return cost_usd(deployment(reference), input_audio_seconds=60, **kwargs)
    return cost_usd(deployment(reference), characters=1000, output_audio_seconds=60, **kwargs)


# --- the table itself -------------------------------------------------------------------


@pytest.mark.parametrize("key", PAID)
def test_every_priced_model_costs_something(key: str) -> None:
    assert representative_cost(key) > 0


@pytest.mark.parametrize("key", sorted(PRICES))
def test_every_row_is_reachable_from_its_own_name(key: str) -> None:
    assert price_key(deployment(key)) == key


@pytest.mark.parametrize("key", sorted(PRICES))
def test_every_row_names_its_source_counting_rule_and_mode(key: str) -> None:
    price = PRICES[key]
    assert price.source and price.counts
    assert price.mode in (SPEECH, TRANSCRIPTION)
    provider = key.partition("/")[0]
    assert provider in PROVIDERS or provider == "groq"


@pytest.mark.parametrize("key", PAID)
def test_paid_rows_are_billed_by_their_mode(key: str) -> None:
    price = PRICES[key]
    if price.mode == SPEECH:
        assert price.input_cost_per_character or price.output_token_rate
        assert not price.input_cost_per_second
    else:
        assert price.input_cost_per_second or price.input_token_rate
        assert not price.input_cost_per_character


@pytest.mark.parametrize("key", FREE)
def test_local_engines_are_free(key: str) -> None:
    assert key.startswith("local/")
    assert representative_cost(key) == 0
    assert cost_usd(deployment(key), characters=5000, input_tokens=10, output_tokens=10) == 0


@pytest.mark.parametrize(
    ("reference", "use", "expected"),
    [
        ("openai/tts-1", {"characters": 1_000_000}, 15.0),
        ("openai/tts-1-hd", {"characters": 1_000_000}, 30.0),
        ("openai/tts-1-hd-1106", {"characters": 1_000_000}, 30.0),  # snapshot suffix
        ("openai/whisper-1", {"input_audio_seconds": 60}, 0.006),
        ("openai/gpt-4o-transcribe", {"input_audio_seconds": 60}, 0.006),  # per-minute estimate
        ("openai/gpt-4o-mini-transcribe", {"input_audio_seconds": 60}, 0.003),
        ("aws_polly/neural", {"characters": 1_000_000}, 16.0),
        ("aws_polly/standard", {"characters": 1_000_000}, 4.0),
        ("aws_polly/long-form", {"characters": 1_000_000}, 100.0),
        ("aws_polly/generative", {"characters": 1_000_000}, 30.0),
        ("elevenlabs/eleven_multilingual_v2", {"characters": 1000}, 0.10),
        ("elevenlabs/eleven_flash_v2_5", {"characters": 1000}, 0.05),
        ("elevenlabs/eleven_v3_preview_2025", {"characters": 1000}, 0.10),  # prefix rule
        ("elevenlabs/scribe_v1", {"input_audio_seconds": 3600}, 0.22),
        ("deepgram/nova-3", {"input_audio_seconds": 60}, 0.0043),
        ("deepgram/nova-2-phonecall", {"input_audio_seconds": 60}, 0.0043),
        ("deepgram/base", {"input_audio_seconds": 60}, 0.0125),
        ("deepgram/aura-2-thalia-en", {"characters": 1000}, 0.030),
        ("deepgram/aura-asteria-en", {"characters": 1000}, 0.015),
        ("vertex_ai/neural2", {"characters": 1_000_000}, 16.0),
        ("vertex_ai/studio", {"characters": 1_000_000}, 160.0),
        ("azure_ai_speech/neural", {"characters": 1_000_000}, 15.0),
        ("azure_ai_speech/fast-transcription", {"input_audio_seconds": 3600}, 0.36),
        ("groq/whisper-large-v3", {"input_audio_seconds": 3600}, 0.111),
        ("groq/whisper-large-v3-turbo", {"input_audio_seconds": 3600}, 0.04),
    ],
)
def test_known_prices(reference: str, use: dict, expected: float) -> None:
    assert cost_usd(deployment(reference), **use) == pytest.approx(expected)


def test_gemini_is_billed_by_tokens_when_counts_are_given() -> None:
    flash = deployment("gemini/gemini-2.5-flash-preview-tts")
    # $0.50 per 1M text tokens in, $10 per 1M audio tokens out.
    assert cost_usd(flash, input_tokens=1_000_000, output_tokens=0) == pytest.approx(0.50)
    assert cost_usd(flash, input_tokens=0, output_tokens=1_000_000) == pytest.approx(10.0)
    # Measured counts win over the estimate from characters and seconds.
    measured = cost_usd(
        flash, characters=4000, output_audio_seconds=600, input_tokens=1000, output_tokens=1500
    )
    assert measured == pytest.approx(1000 * 0.5e-6 + 1500 * 10e-6)
    pro = deployment("gemini/gemini-2.5-pro-preview-tts")
    assert cost_usd(pro, input_tokens=1000, output_tokens=1500) == pytest.approx(
        1000 * 1e-6 + 1500 * 20e-6
    )


def test_gemini_without_counts_is_estimated_not_free() -> None:
    flash = deployment("gemini/gemini-2.5-flash-preview-tts")
    # 25 audio tokens a second: a minute of speech is 1,500 tokens = $0.015; 1,000
    # characters are ~250 text tokens = $0.000125.
    assert GEMINI_AUDIO_TOKENS_PER_SECOND == 25
    assert cost_usd(flash, output_audio_seconds=60) == pytest.approx(0.015)
    assert cost_usd(flash, characters=1000, output_audio_seconds=60) == pytest.approx(0.015125)
    # One side measured, the other estimated.
    assert cost_usd(flash, characters=1000, output_tokens=1500) == pytest.approx(0.015125)
    vertex = deployment("vertex_ai/publishers/google/models/gemini-2.5-flash-tts")
    assert price_key(vertex) == "vertex_ai/gemini-2.5-flash-tts"
    assert cost_usd(vertex, output_audio_seconds=60) == pytest.approx(0.015)


def test_gpt_4o_mini_tts_tokens_and_estimate() -> None:
    tts = deployment("openai/gpt-4o-mini-tts")
    # About $0.015 a minute without counts; text input ~ chars/4 tokens at $0.60 / 1M.
    assert cost_usd(tts, output_audio_seconds=60) == pytest.approx(0.015)
    assert cost_usd(tts, characters=4000, output_audio_seconds=60) == pytest.approx(0.0156)
    # With counts: $12 per 1M audio tokens out (not the $10 text-output rate).
    assert cost_usd(tts, input_tokens=1000, output_tokens=1_000_000) == pytest.approx(12.0006)


def test_gpt_4o_transcribe_tokens() -> None:
    stt = deployment("openai/gpt-4o-transcribe")
    # Input tokens are audio ($6 / 1M), output tokens text ($10 / 1M).
    assert cost_usd(stt, input_tokens=1_000_000, output_tokens=0) == pytest.approx(6.0)
    assert cost_usd(stt, input_tokens=0, output_tokens=1_000_000) == pytest.approx(10.0)
    # Counts replace the per-minute estimate.
    assert cost_usd(
        stt, input_audio_seconds=600, input_tokens=1000, output_tokens=100
    ) == pytest.approx(1000 * 6e-6 + 100 * 10e-6)


def test_token_counts_are_ignored_by_models_not_billed_by_tokens() -> None:
    tts = deployment("openai/tts-1")
    assert cost_usd(tts, characters=1000, input_tokens=999, output_tokens=999) == pytest.approx(
        0.015
    )
    whisper = deployment("openai/whisper-1")
    assert cost_usd(whisper, input_audio_seconds=60, output_tokens=999) == pytest.approx(0.006)


def test_groq_bills_at_least_ten_seconds() -> None:
    turbo = deployment("groq/whisper-large-v3-turbo")
    ten_seconds = 0.04 / 3600 * 10
    assert cost_usd(turbo, input_audio_seconds=3) == pytest.approx(ten_seconds)
    assert cost_usd(turbo, input_audio_seconds=10) == pytest.approx(ten_seconds)
    assert cost_usd(turbo, input_audio_seconds=0) == 0
    # A Groq model reached with base_model from any OpenAI-compatible deployment.
    proxied = Deployment(
        "stt", "openai", "my-whisper", model_info={"base_model": "groq/whisper-large-v3"}
    )
    assert cost_usd(proxied, input_audio_seconds=3600) == pytest.approx(0.111)


def test_an_unknown_openai_compatible_model_has_no_built_in_price() -> None:
    speaches = Deployment("stt", "openai", "Systran/faster-whisper-small")
    assert price_key(speaches) is None
    assert cost_usd(speaches, input_audio_seconds=60) == 0


# --- Azure ------------------------------------------------------------------------------


def test_azure_uses_base_model() -> None:
    tts = Deployment("tts", "azure", "my-tts-deployment", model_info={"base_model": "azure/tts-1"})
    assert price_key(tts) == "azure/tts-1"
    assert cost_usd(tts, characters=1_000_000) == pytest.approx(15.0)
    bare = Deployment("tts", "azure", "voices-prod", model_info={"base_model": "tts-1-hd"})
    assert cost_usd(bare, characters=1_000_000) == pytest.approx(30.0)
    whisper = Deployment("stt", "azure", "stt-eu", model_info={"base_model": "azure/whisper"})
    assert cost_usd(whisper, input_audio_seconds=3600) == pytest.approx(0.36)


def test_azure_falls_back_to_the_deployment_name() -> None:
    named = Deployment("tts", "azure", "tts-1-hd")
    assert cost_usd(named, characters=1_000_000) == pytest.approx(30.0)
    unknown = Deployment("tts", "azure", "my-tts-deployment")
    assert price_key(unknown) is None
    assert cost_usd(unknown, characters=1_000_000) == 0


def test_base_model_wins_over_the_deployment_name() -> None:
    tts = Deployment("tts", "azure", "tts-1", model_info={"base_model": "azure/tts-1-hd"})
    assert cost_usd(tts, characters=1_000_000) == pytest.approx(30.0)
    # An unknown base_model falls back to the deployment name.
    odd = Deployment("tts", "azure", "tts-1", model_info={"base_model": "azure/nope"})
    assert cost_usd(odd, characters=1_000_000) == pytest.approx(15.0)


def test_azure_ai_speech_rows_follow_the_mode() -> None:
    tts = Deployment("t", "azure_ai_speech", "anything", model_info={"mode": SPEECH})
    stt = Deployment("s", "azure_ai_speech", "anything", model_info={"mode": TRANSCRIPTION})
    guessed = Deployment("s", "azure_ai_speech", "my-stt")
    assert price_key(tts) == "azure_ai_speech/neural"
    assert price_key(stt) == "azure_ai_speech/fast-transcription"
    assert price_key(guessed) == "azure_ai_speech/fast-transcription"


# --- Cloud TTS voice families -------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "voice", "params", "family"),
    [
        ("chirp3-hd", None, {}, "chirp3-hd"),
        ("neural2", None, {}, "neural2"),
        ("cloud-tts", "en-US-Wavenet-D", {}, "wavenet"),
        ("cloud-tts", "en-GB-Neural2-A", {}, "neural2"),
        ("cloud-tts", "en-US-Studio-O", {}, "studio"),
        ("cloud-tts", "en-US-Standard-B", {}, "standard"),
        ("cloud-tts", "en-US-Chirp3-HD-Kore", {}, "chirp3-hd"),
        ("neural2", "en-US-Studio-O", {}, "studio"),  # the call's voice wins
        ("cloud-tts", "alloy", {"voice_map": {"default": "en-US-Wavenet-A"}}, "wavenet"),
        ("cloud-tts", None, {}, DEFAULT_CLOUD_TTS_FAMILY),
        ("chirp", None, {}, "chirp3-hd"),
    ],
)
def test_cloud_tts_prices_by_voice_family(
    model: str, voice: str | None, params: dict, family: str
) -> None:
    cloud = Deployment("tts", "vertex_ai", model, params=params)
    assert price_key(cloud, voice=voice) == f"vertex_ai/{family}"


def test_cloud_tts_default_voices_are_the_default_family() -> None:
    for voice in VERTEX_VOICES.values():
        name = cloud_tts_voice(voice)["name"]
        assert price_key(Deployment("t", "vertex_ai", "x"), voice=name) == (
            f"vertex_ai/{DEFAULT_CLOUD_TTS_FAMILY}"
        )
    cost = cost_usd(Deployment("t", "vertex_ai", "cloud-tts"), characters=1_000_000)
    assert cost == pytest.approx(30.0)


# --- every model the provider modules declare has a price ----------------------------------


@pytest.mark.parametrize("model", sorted(MODEL_CHARACTER_LIMITS))
def test_every_elevenlabs_model_with_a_limit_has_a_price(model: str) -> None:
    assert price_key(Deployment("t", "elevenlabs", model)) == f"elevenlabs/{model}"


@pytest.mark.parametrize("engine", ENGINES)
def test_every_polly_engine_has_a_price(engine: str) -> None:
    assert price_key(Deployment("t", "aws_polly", engine)) == f"aws_polly/{engine}"


@pytest.mark.parametrize("voice_model", sorted({*DEEPGRAM_VOICES.values(), "aura-2"}))
def test_every_default_deepgram_voice_has_a_price(voice_model: str) -> None:
    assert price_key(Deployment("t", "deepgram", voice_model)) == "deepgram/aura-2"


@pytest.mark.parametrize(
    "reference",
    [
        # docs/providers.md's example models, and the models this task names.
        "openai/tts-1",
        "openai/tts-1-hd",
        "openai/gpt-4o-mini-tts",
        "openai/whisper-1",
        "openai/gpt-4o-transcribe",
        "openai/gpt-4o-mini-transcribe",
        "openai/whisper-large-v3",
        "openai/whisper-large-v3-turbo",
        "elevenlabs/scribe_v1",
        "elevenlabs/scribe_v2",
        "deepgram/nova-2",
        "deepgram/nova-3",
        "deepgram/base",
        "deepgram/enhanced",
        "deepgram/aura-2-thalia-en",
        "gemini/gemini-2.5-flash-preview-tts",
        "gemini/gemini-2.5-pro-preview-tts",
        "vertex_ai/gemini-2.5-flash-tts",
        "vertex_ai/gemini-2.5-pro-tts",
        "vertex_ai/chirp3-hd",
        "aws_polly/neural",
        "local/piper",
        "local/whisper",
    ],
)
def test_documented_models_have_a_price(reference: str) -> None:
    provider, _, model = reference.partition("/")
    assert price_key(Deployment("m", provider, model)) is not None


# --- overrides -----------------------------------------------------------------------------


def test_override_replaces_only_the_given_field() -> None:
    mini = Deployment(
        "tts", "openai", "gpt-4o-mini-tts", model_info={"input_cost_per_token": 0.000001}
    )
    price = price_for(mini)
    built_in = PRICES["openai/gpt-4o-mini-tts"]
    assert price.input_cost_per_token == 0.000001
    assert price.output_cost_per_audio_token == built_in.output_cost_per_audio_token
    assert price.output_cost_per_second == built_in.output_cost_per_second
    assert price.source == built_in.source


@pytest.mark.parametrize(
    ("reference", "field", "value", "use", "expected"),
    [
        ("openai/tts-1", "input_cost_per_character", 0.001, {"characters": 10}, 0.01),
        ("openai/whisper-1", "input_cost_per_second", 0.001, {"input_audio_seconds": 10}, 0.01),
        ("local/piper", "output_cost_per_second", 0.001, {"output_audio_seconds": 10}, 0.01),
        (
            "openai/gpt-4o-transcribe",
            "output_cost_per_token",
            0.001,
            {"input_tokens": 0, "output_tokens": 10},
            0.01,
        ),
    ],
)
def test_override_fields(
    reference: str, field: str, value: float, use: dict, expected: float
) -> None:
    assert field in OVERRIDE_FIELDS
    provider, _, model = reference.partition("/")
    overridden = Deployment("m", provider, model, model_info={field: value})
    assert cost_usd(overridden, **use) == pytest.approx(expected)


def test_override_of_the_token_price_sets_the_rate_for_the_audio_side() -> None:
    flash = "gemini-2.5-flash-preview-tts"
    generic = Deployment("t", "gemini", flash, model_info={"output_cost_per_token": 0.00002})
    assert cost_usd(generic, input_tokens=0, output_tokens=1000) == pytest.approx(0.02)
    both = Deployment(
        "t",
        "gemini",
        flash,
        model_info={"output_cost_per_token": 0.00002, "output_cost_per_audio_token": 0.00003},
    )
    assert cost_usd(both, input_tokens=0, output_tokens=1000) == pytest.approx(0.03)
    stt = Deployment(
        "s", "openai", "gpt-4o-transcribe", model_info={"input_cost_per_token": 0.00001}
    )
    assert cost_usd(stt, input_tokens=1000, output_tokens=0) == pytest.approx(0.01)


def test_overrides_price_a_model_without_a_built_in_price() -> None:
    custom = Deployment(
        "t",
        "azure",
        "my-tts-deployment",
        model_info={"input_cost_per_character": "0.00002", "mode": SPEECH},
    )
    assert cost_usd(custom, characters=1000) == pytest.approx(0.02)
    tokens = Deployment(
        "t",
        "openai",
        "my-speech-llm",
        model_info={"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-5},
    )
    assert cost_usd(tokens, input_tokens=100, output_tokens=100) == pytest.approx(0.0011)
    # Without counts the input side is estimated from characters (chars/4 tokens).
    assert cost_usd(tokens, characters=400) == pytest.approx(100 * 1e-6)


def test_overrides_win_over_base_model() -> None:
    tts = Deployment(
        "t",
        "azure",
        "x",
        model_info={"base_model": "azure/tts-1", "input_cost_per_character": 0.00002},
    )
    assert cost_usd(tts, characters=1_000_000) == pytest.approx(20.0)


def test_zero_override_makes_a_paid_model_free() -> None:
    own = Deployment("s", "openai", "whisper-large-v3", model_info={"input_cost_per_second": 0})
    assert cost_usd(own, input_audio_seconds=600) == 0


# --- the call signature the worker uses -----------------------------------------------------


def test_the_original_call_signature_still_works() -> None:
    tts = Deployment("tts", "openai", "tts-1")
    assert cost_usd(tts, characters=1_000_000) == pytest.approx(15.0)
    assert cost_usd(tts, characters=10, input_audio_seconds=0.0, output_audio_seconds=1.5) > 0
    assert cost_usd(tts) == 0
    assert isinstance(price_for(tts), Price)
    assert Price(input_cost_per_character=0.001).cost(characters=10) == pytest.approx(0.01)
