from __future__ import annotations

from pathlib import Path

import pytest

from speechq.pricing import cost_usd, price_for
from speechq.settings import Settings
from worker.providers.base import Deployment


def test_embedded_defaults_derive_from_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path}/speechq.db"
    assert settings.resolved_broker_url == f"sqla+sqlite:///{tmp_path}/broker.db"
    assert settings.resolved_storage_url == f"file://{tmp_path}/blobs"
    assert settings.is_embedded_database


@pytest.mark.parametrize("scheme", ["postgres://", "postgresql://"])
def test_postgres_url_uses_psycopg(scheme: str) -> None:
    settings = Settings(database_url=f"{scheme}u:p@db:5432/speechq")
    assert settings.resolved_database_url == "postgresql+psycopg://u:p@db:5432/speechq"


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECHQ_BROKER_URL", "redis://r:6379/0")
    monkeypatch.setenv("SPEECHQ_RESULT_TTL_HOURS", "24")
    settings = Settings()
    assert settings.resolved_broker_url == "redis://r:6379/0"
    assert settings.result_ttl_hours == 24


def test_cost_from_builtin_prices_and_overrides() -> None:
    tts = Deployment("tts", "openai", "tts-1")
    assert cost_usd(tts, characters=1_000_000) == pytest.approx(15.0)
    whisper = Deployment("stt", "openai", "whisper-1")
    assert cost_usd(whisper, input_audio_seconds=60) == pytest.approx(0.006)
    local = Deployment("local-tts", "local", "piper")
    assert cost_usd(local, characters=5000, output_audio_seconds=100) == 0
    custom = Deployment("x", "openai", "tts-1", model_info={"input_cost_per_character": 0.001})
    assert price_for(custom).input_cost_per_character == 0.001
    assert cost_usd(custom, characters=10) == pytest.approx(0.01)
