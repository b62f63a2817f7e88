"""One usage row for every billable call, and one per-request text limit: the rules the job
runner and the audiobook pipeline used to write each their own way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from speechq.pricing import cost_usd
from speechq.registry import load_registry
from worker.audiobook.segments import _Claimed as ClaimedSegment
from worker.jobs import _Claimed as ClaimedJob
from worker.jobs import job_usage
from worker.providers.base import Deployment
from worker.router import RoutedResult
from worker.usage import usage_record

CLOUD_TTS = Deployment("cloud", "vertex_ai", "cloud-tts")
STUDIO_VOICE = "en-US-Studio-O"


def _job(voice: str | None) -> ClaimedJob:
    request = {"input": "x" * 1000, **({"voice": voice} if voice else {})}
    return ClaimedJob("job_1", "speech", "cloud", "team_a", "key_1", "a", "u", request, None, run=1)


def _segment(voice: str | None) -> ClaimedSegment:
    return ClaimedSegment(
        id="7", run=1, book_id="book_1", chapter_index=0, text="x" * 1000, voice=voice,
        cache_key="c", model="cloud", tenant="team_a", key_id="key_1", team="a", user="u",
        speed=1.0, book_open=True, deferrals=0,
    )  # fmt: skip


def test_a_jobs_call_is_billed_at_its_voices_price_as_a_segments_is() -> None:
    routed = RoutedResult(value=None, deployment=CLOUD_TTS, latency_ms=5)
    studio = cost_usd(CLOUD_TTS, characters=1000, voice=STUDIO_VOICE)
    assert studio != cost_usd(CLOUD_TTS, characters=1000)  # the voice matters here
    job_row = job_usage(_job(STUDIO_VOICE), routed, call_key="main", characters=1000)
    segment_row = usage_record(
        routed,
        payer=_segment(STUDIO_VOICE),
        model="cloud",
        audiobook_id="book_1",
        call_key="segment-7",
        voice=STUDIO_VOICE,
        characters=1000,
    )
    assert job_row.cost_usd == segment_row.cost_usd == pytest.approx(studio)
    assert (job_row.job_id, job_row.audiobook_id) == ("job_1", None)
    assert (segment_row.job_id, segment_row.audiobook_id) == (None, "book_1")
    for row in (job_row, segment_row):
        assert (row.tenant, row.key_id, row.team, row.user) == ("team_a", "key_1", "a", "u")
        assert (row.provider, row.deployment, row.provider_model) == (
            "vertex_ai",
            CLOUD_TTS.id,
            "cloud-tts",
        )


def test_the_request_limit_counts_the_default_fallbacks(tmp_path: Path) -> None:
    def tts(name: str, limit: int) -> dict[str, object]:
        return {
            "model_name": name,
            "litellm_params": {"model": "openai/tts-1", "api_key": "sk-test"},
            "model_info": {"mode": "audio_speech", "max_input_characters": limit},
        }

    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [tts("main", 4000), tts("small", 1000), tts("other", 2000)],
                "router_settings": {"default_fallbacks": ["small"]},
            }
        )
    )
    registry = load_registry(config)
    # A segment or a piece of "main" may be served by "small" when "main" fails.
    assert registry.model_chain("main") == ["main", "small"]
    assert registry.request_character_limit("main") == 1000
    # Explicit fallbacks replace the default ones.
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [tts("main", 4000), tts("small", 1000), tts("other", 2000)],
                "router_settings": {
                    "default_fallbacks": ["small"],
                    "fallbacks": [{"main": ["other"]}],
                },
            }
        )
    )
    assert load_registry(config).request_character_limit("main") == 2000
