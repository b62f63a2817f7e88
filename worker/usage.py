"""The usage row of one billable provider call: one function for a job's calls and an
audiobook segment's, so both bill the same way (the voice included: some providers price
by voice family)."""

from __future__ import annotations

from typing import Any, Protocol

from speechq.pricing import cost_usd
from storage.models import UsageRecord, utcnow
from worker.router import RoutedResult

__all__ = ["Payer", "usage_record"]


class Payer(Protocol):
    """Who a call is billed to: a claimed job, or an audiobook segment."""

    @property
    def tenant(self) -> str: ...
    @property
    def key_id(self) -> str | None: ...
    @property
    def team(self) -> str | None: ...
    @property
    def user(self) -> str | None: ...


def usage_record(
    routed: RoutedResult[Any],
    *,
    payer: Payer,
    model: str,
    call_key: str,
    job_id: str | None = None,
    audiobook_id: str | None = None,
    voice: str | None = None,
    characters: int = 0,
    input_audio_seconds: float = 0.0,
    output_audio_seconds: float = 0.0,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
) -> UsageRecord:
    """The row for the call `routed` made for `model` (the name the client asked for);
    `job_id` or `audiobook_id` says whose call it was, `call_key` which of its calls."""
    deployment = routed.deployment
    return UsageRecord(
        job_id=job_id,
        audiobook_id=audiobook_id,
        call_key=call_key,
        tenant=payer.tenant,
        key_id=payer.key_id,
        team=payer.team,
        user=payer.user,
        provider=deployment.provider,
        deployment=deployment.id,
        model=model,
        provider_model=deployment.model,
        characters=characters,
        audio_seconds=round(input_audio_seconds or output_audio_seconds, 3),
        cost_usd=cost_usd(
            deployment,
            characters=characters,
            input_audio_seconds=input_audio_seconds,
            output_audio_seconds=output_audio_seconds,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            voice=voice,
        ),
        latency_ms=routed.latency_ms,
        created_at=utcnow(),
    )
