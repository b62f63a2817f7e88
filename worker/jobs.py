"""Run one job: claim it, call the provider through the router, encode, store, bill.

Every step is safe to repeat: the claim is a compare-and-set on the job's status, the
result is written under a key derived from the job id, and the usage row is unique per
(job, call), so a redelivered or re-enqueued message never runs a finished job again and
never bills twice.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from speechq.domain import AUDIO_CONTENT_TYPES, JobStatus
from speechq.guardrails import OUTPUT, GuardrailViolation, parse_guardrails
from speechq.job_events import JobEventPublisher
from speechq.registry import Registry
from speechq.settings import Settings
from speechq.transcripts import render_transcript
from storage import queries
from storage.counters import Counters
from storage.db import session_scope
from storage.models import Job, UsageRecord, utcnow
from storage.objects import ObjectStore, tenant_key
from worker import audio, webhooks
from worker.audio_join import join_speech, to_pcm
from worker.budget import BudgetExceeded, Guard, budget_guard, key_facts
from worker.lease import LeaseKeeper
from worker.providers.base import (
    Deployment,
    SpeechProvider,
    SynthesisRequest,
    SynthesisResult,
    TranscriptionRequest,
    TranscriptionResult,
)
from worker.providers.errors import InvalidInput, ProviderUnavailable
from worker.router import AllDeploymentsFailed, Attempt, RoutedResult, Router
from worker.text_split import split_text
from worker.usage import usage_record

__all__ = ["JobRunner"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Claimed:
    """What the runner needs from the job row, read once at claim time."""

    id: str
    type: str
    model: str
    tenant: str
    key_id: str | None
    team: str | None
    user: str | None
    request: dict[str, Any]
    webhook_url: str | None
    run: int  # this claim's run number, a fencing token for everything the run writes

    @classmethod
    def of(cls, job: Job) -> _Claimed:
        return cls(
            job.id,
            job.type,
            job.model,
            job.tenant,
            job.key_id,
            job.team,
            job.user,
            job.request,
            job.webhook_url,
            job.runs,
        )


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        store: ObjectStore,
        counters: Counters,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.counters = counters
        self.events = JobEventPublisher(settings.resolved_broker_url)
        self.guardrails = parse_guardrails(
            registry.raw.get("guardrails"), resolve_model=registry.resolve
        )
        self.db_url = settings.resolved_database_url

    def run(self, job_id: str) -> str | None:
        """Run the job if it is still queued. Returns its final status, or None if it was
        not ours to run (already running elsewhere, finished or canceled)."""
        lease_s = self.settings.job_lease_seconds
        with session_scope(self.db_url) as session:
            row = queries.claim_job(session, job_id=job_id, lease_seconds=lease_s)
            if row is None:
                return None
            job = _Claimed.of(row)
        with LeaseKeeper(self.db_url, job.id, job.run, lease_s):
            return self._run_claimed(job)

    def _run_claimed(self, job: _Claimed) -> str:
        attempts = _AttemptLog(self.db_url, job.id)
        router = Router(self.registry, self.counters, on_attempt=attempts.add)
        key = key_facts(self.db_url, job.key_id)
        guard = self._budget_guard(job, key.budget_usd)
        try:
            if job.type == "speech":
                return self._run_speech(job, router, attempts, guard)
            return self._run_transcription(job, router, attempts, guard, key.guardrails)
        except InvalidInput as exc:
            return self._fail(job, attempts, "invalid_input", exc.message)
        except BudgetExceeded as exc:
            return self._fail(job, attempts, "budget_exceeded", str(exc))
        except GuardrailViolation as exc:
            return self._fail(job, attempts, "guardrail_violation", exc.message)
        except AllDeploymentsFailed as exc:
            return self._fail(job, attempts, "provider_error", str(exc))
        except audio.InvalidAudio as exc:
            return self._fail(job, attempts, "invalid_audio", str(exc))
        except Exception:
            log.exception("job %s failed with an internal error", job.id)
            return self._fail(
                job, attempts, "internal_error", "the job failed with an internal error"
            )

    # --- speech ---------------------------------------------------------------------------

    def _run_speech(
        self, job: _Claimed, router: Router, attempts: _AttemptLog, guard: Guard
    ) -> str:
        req = job.request
        fmt = req.get("response_format", "mp3")

        # The check of each answer is a probe; the stored audio reuses it when passed through.
        probed: dict[str, audio.AudioInfo] = {}

        def synthesize(text: str) -> RoutedResult[SynthesisResult]:
            # Between pieces is a safe point: a job canceled meanwhile makes no more calls.
            if len(pieces) > 1 and self._stopped(job):
                raise AllDeploymentsFailed("canceled", last=None)

            def call(provider: SpeechProvider, deployment: Deployment) -> SynthesisResult:
                produced = provider.synthesize(
                    SynthesisRequest(
                        model=deployment.model,
                        text=text,
                        voice=req.get("voice"),
                        response_format=fmt,
                        speed=float(req.get("speed", 1.0)),
                        instructions=req.get("instructions"),
                    )
                )
                # Audio nobody can decode is the provider's fault, not the client's: a
                # retryable failure of this attempt, so retries and fallbacks apply.
                if produced.audio_format != "pcm":
                    try:
                        probed[text] = audio.probe(produced.audio)
                    except audio.InvalidAudio as exc:
                        raise ProviderUnavailable(
                            f"{deployment.provider}: undecodable audio ({exc})"
                        ) from exc
                return produced

            return router.call(
                job.model,
                call,
                should_stop=lambda: self._stopped(job),
                before_attempt=guard,
            )

        limit = router.registry.request_character_limit(job.model)
        pieces = split_text(req["input"], limit) if limit else [req["input"]]
        if len(pieces) == 1:
            routed = [synthesize(pieces[0])]
            produced = routed[0].value
            if produced.audio_format == fmt and fmt != "pcm":
                encoded = produced.audio  # already what the client asked for
                info = probed[pieces[0]]
                duration, rate = info.duration_seconds, info.sample_rate
            else:
                encoded, out_rate = audio.transcode(
                    produced.audio, produced.audio_format, fmt, produced.sample_rate
                )
                duration, rate = self._measure(encoded, fmt, out_rate)
            piece_seconds = [duration]
        else:
            # Longer than one request takes: pieces in parallel, joined into one take.
            workers = min(self.settings.speech_piece_concurrency, len(pieces))
            with ThreadPoolExecutor(workers, thread_name_prefix=f"{job.id}-piece") as pool:
                routed = list(pool.map(synthesize, pieces))
            pcm_pieces = [
                to_pcm(r.value.audio, r.value.audio_format, r.value.sample_rate) for r in routed
            ]
            piece_seconds = [audio.pcm_duration_seconds(pcm, rate) for pcm, rate in pcm_pieces]
            pcm, pcm_rate = join_speech(pcm_pieces)
            encoded = audio.encode_pcm(pcm, pcm_rate, fmt)
            duration, rate = self._measure(encoded, fmt, pcm_rate)
        key = tenant_key(job.tenant, "jobs", job.id, f"run-{job.run}", f"speech.{fmt}")
        self.store.put_bytes(key, encoded)
        result = {
            "object_key": key,
            "content_type": AUDIO_CONTENT_TYPES[fmt],
            "bytes": len(encoded),
            "duration_seconds": round(duration, 3),
            "sample_rate": rate,
            "pieces": len(pieces),
        }
        usage = [
            job_usage(
                job,
                piece_routed,
                call_key=f"piece-{index}" if len(pieces) > 1 else "main",
                characters=piece_routed.value.characters or len(text),
                output_audio_seconds=seconds,
                input_tokens=piece_routed.value.input_tokens,
                output_tokens=piece_routed.value.output_tokens,
            )
            for index, (piece_routed, text, seconds) in enumerate(
                zip(routed, pieces, piece_seconds, strict=True)
            )
        ]
        return self._complete(job, attempts, result, usage, key)

    @staticmethod
    def _measure(encoded: bytes, fmt: str, pcm_rate: int | None) -> tuple[float, int]:
        """Duration and sample rate of the stored audio, with one probe at most."""
        if fmt == "pcm":
            if pcm_rate is None:
                raise ValueError("pcm output needs its sample rate")
            return audio.pcm_duration_seconds(encoded, pcm_rate), pcm_rate
        info = audio.probe(encoded)
        return info.duration_seconds, info.sample_rate

    # --- transcription --------------------------------------------------------------------

    def _run_transcription(
        self,
        job: _Claimed,
        router: Router,
        attempts: _AttemptLog,
        guard: Guard,
        selected_guardrails: tuple[str, ...],
    ) -> str:
        req = job.request
        with tempfile.TemporaryDirectory(prefix="speechq-") as tmp:
            path = Path(tmp) / (req.get("filename") or "audio")
            self.store.download_to(req["input_key"], path)
            input_seconds = audio.probe(path).duration_seconds

            def transcribe(provider: SpeechProvider, deployment: Deployment) -> TranscriptionResult:
                return provider.transcribe(
                    TranscriptionRequest(
                        model=deployment.model,
                        audio_path=path,
                        filename=path.name,
                        language=req.get("language"),
                        prompt=req.get("prompt"),
                        temperature=req.get("temperature"),
                        response_format=req.get("response_format", "json"),
                    )
                )

            routed = router.call(
                job.model,
                transcribe,
                should_stop=lambda: self._stopped(job),
                before_attempt=guard,
            )
        produced = routed.value
        duration = produced.duration_seconds or input_seconds
        screen = self._output_screen(job, selected_guardrails)
        transcript = {
            "text": screen(produced.text),
            "language": produced.language,
            "duration": round(duration, 3),
            "segments": [
                {"start": s.start, "end": s.end, "text": screen(s.text)} for s in produced.segments
            ],
        }
        fmt = req.get("response_format", "json")
        body, content_type = render_transcript(transcript, fmt)
        key = tenant_key(job.tenant, "jobs", job.id, f"run-{job.run}", "transcript.json")
        self.store.put_bytes(key, _json_bytes(transcript))
        result = {
            "object_key": key,
            "content_type": content_type,
            "bytes": len(body),
            "duration_seconds": round(duration, 3),
            "text": transcript["text"],
            "language": produced.language,
        }
        usage = job_usage(
            job,
            routed,
            call_key="main",
            input_audio_seconds=duration,
            input_tokens=produced.input_tokens,
            output_tokens=produced.output_tokens,
        )
        return self._complete(job, attempts, result, [usage], key)

    # --- shared steps ---------------------------------------------------------------------

    def _complete(
        self,
        job: _Claimed,
        attempts: _AttemptLog,
        result: dict[str, Any],
        usage: list[UsageRecord],
        key: str,
    ) -> str:
        expires_at = utcnow() + timedelta(hours=self.settings.result_ttl_hours)
        with session_scope(self.db_url) as session:
            attempts.flush(session)
            done = queries.complete_job(
                session,
                job_id=job.id,
                result=result,
                usage=usage,
                expires_at=expires_at,
                run=job.run,
            )
            event = (
                webhooks.enqueue_job_event(session, job_id=job.id)
                if done and job.webhook_url
                else None
            )
        if not done:
            # Canceled while the provider worked, or taken back from this (stalled) run and
            # claimed again: keep nothing, bill nothing. The key is this run's own.
            self.store.delete(key)
            return JobStatus.canceled.value
        self.events.job_ended(job.id)
        webhooks.publish_delivery(event)
        return JobStatus.succeeded.value

    def _fail(self, job: _Claimed, attempts: _AttemptLog, code: str, message: str) -> str:
        job_id = job.id
        with session_scope(self.db_url) as session:
            attempts.flush(session)
            failed = queries.fail_job(
                session,
                job_id=job_id,
                code=code,
                message=message,
                run=job.run,
                expires_at=utcnow() + timedelta(hours=self.settings.result_ttl_hours),
            )
            # The event is written only if the job has a webhook_url.
            event = webhooks.enqueue_job_event(session, job_id=job_id) if failed else None
        self.events.job_ended(job_id)
        webhooks.publish_delivery(event)
        return JobStatus.failed.value if failed else JobStatus.canceled.value

    def _output_screen(self, job: _Claimed, selected: tuple[str, ...]) -> Callable[[str], str]:
        """Transcript text through the output-stage guardrails (mask or block)."""
        model = self.registry.resolve(job.model) or job.model
        if not self.guardrails.active(model=model, selected=selected, stage=OUTPUT):
            return lambda text: text

        def screen(text: str) -> str:
            return self.guardrails.check(
                text, model=model, param="text", selected=selected, stage=OUTPUT
            ).text

        return screen

    def _budget_guard(self, job: _Claimed, key_budget: float | None) -> Guard:
        return budget_guard(
            self.db_url,
            key_id=job.key_id,
            key_budget=key_budget,
            tenant=job.tenant,
            user=job.user,
            user_budget=self.registry.end_user_budget(job.user),
        )

    def _stopped(self, job: _Claimed) -> bool:
        """Canceled, or taken back from this run and claimed by another."""
        with session_scope(self.db_url) as session:
            row = queries.get_job(session, job_id=job.id, tenant=None)
            return row is None or row.status != JobStatus.running.value or row.runs != job.run


class _AttemptLog:
    """A failed attempt is written at once (visible while the job retries); a successful
    one waits for the transaction that ends the job, saving a commit per job."""

    def __init__(self, db_url: str, job_id: str) -> None:
        self.db_url = db_url
        self.job_id = job_id
        self._pending: list[Attempt] = []
        self._lock = threading.Lock()  # long jobs record from several piece threads

    def add(self, attempt: Attempt) -> None:
        if attempt.ok:
            with self._lock:
                self._pending.append(attempt)
            return
        with session_scope(self.db_url) as session:
            self._write(session, attempt)

    def flush(self, session: Session) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for attempt in pending:
            self._write(session, attempt)

    def _write(self, session: Session, attempt: Attempt) -> None:
        queries.record_attempt(
            session,
            job_id=self.job_id,
            deployment=attempt.deployment.id,
            provider=attempt.deployment.provider,
            model=attempt.deployment.model,
            ok=attempt.ok,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
        )


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def job_usage(job: _Claimed, routed: RoutedResult[Any], **call: Any) -> UsageRecord:
    """The usage row of one of a job's calls; a speech job's voice prices some providers
    (Cloud TTS by voice family), as it does an audiobook segment's."""
    return usage_record(
        routed,
        payer=job,
        model=job.model,
        job_id=job.id,
        voice=job.request.get("voice"),
        **call,
    )
