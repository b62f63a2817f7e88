from __future__ import annotations

from pathlib import Path

import pytest

from speechq.registry import SPEECH, TRANSCRIPTION, ConfigError, load_registry, parse_config


def test_builtin_registry_aliases_openai_names_to_local_engines() -> None:
    registry = load_registry(None)
    assert registry.resolve("tts-1") == "local-tts"
    assert registry.resolve("tts-1-hd") == "local-tts"
    assert registry.resolve("gpt-4o-mini-tts") == "local-tts"
    assert registry.resolve("whisper-1") == "local-stt"
    assert registry.resolve("gpt-4o-transcribe") == "local-stt"
    assert registry.mode_of("tts-1") == SPEECH
    assert registry.mode_of("whisper-1") == TRANSCRIPTION
    (tts,) = registry.deployments_for("tts-1")
    assert (tts.provider, tts.model) == ("local", "piper")
    assert registry.resolve("nope") is None
    assert registry.deployments_for("nope") == ()


def test_litellm_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    path = tmp_path / "config.yaml"
    path.write_text(
        """
model_list:
  - model_name: tts
    litellm_params:
      model: openai/tts-1
      api_key: os.environ/OPENAI_API_KEY
      api_base: https://api.openai.com/v1
      rpm: 500
    model_info:
      mode: audio_speech
      max_file_size_mb: 25
  - model_name: tts
    params: {model: openai/tts-1-hd, api_base: "http://other/v1"}
  - model_name: stt
    litellm_params: {model: whisper-1}
router_settings:
  fallbacks: [{"tts": ["tts-local"]}]
  num_retries: 3
"""
    )
    registry = load_registry(path)
    first, second = registry.deployments_for("tts")
    assert first.api_key == "sk-from-env"
    assert first.params["rpm"] == 500
    assert first.model_info["max_file_size_mb"] == 25
    assert (first.id, second.id) == ("tts#0", "tts#1")
    assert second.model == "tts-1-hd"
    assert second.api_base == "http://other/v1"
    (stt,) = registry.deployments_for("stt")
    # A bare model name is OpenAI's, as in LiteLLM; its mode comes from the name.
    assert (stt.provider, stt.model) == ("openai", "whisper-1")
    assert registry.mode_of("stt") == TRANSCRIPTION
    assert registry.fallbacks_for("tts") == ["tts-local"]
    assert registry.router_settings["num_retries"] == 3
    assert {m.id for m in registry.models()} == {"tts", "stt"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "model_list"),
        ({"model_list": [{"litellm_params": {"model": "openai/tts-1"}}]}, "model_name"),
        ({"model_list": [{"model_name": "x"}]}, "litellm_params.model"),
        (
            {"model_list": [{"model_name": "x", "litellm_params": {"model": "acme/tts"}}]},
            "unknown provider 'acme'",
        ),
        (
            {
                "model_list": [
                    {
                        "model_name": "x",
                        "litellm_params": {"model": "openai/b", "api_key": "os.environ/NOPE_X"},
                    }
                ]
            },
            "NOPE_X",
        ),
        (
            {
                "model_list": [{"model_name": "x", "litellm_params": {"model": "openai/b"}}],
                "router_settings": {"model_group_alias": {"y": "missing"}},
            },
            "missing",
        ),
    ],
)
def test_bad_config_is_refused_with_a_clear_message(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_list: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_registry(bad)
