"""Run one audiobook segment: from the cache if this tenant already paid for the same
audio, else through the router (within the deployment's slot cap), stored as FLAC under
its cache key and billed once.

Safe to repeat like a job: the claim is a compare-and-set, the audio's key is its cache
key (a re-run writes the same object), and the segment ends, with its usage row, only for
the run that claimed it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from datetime import timedelta

from speechq.registry import Registry
from speechq.settings import Settings
from storage import audiobook_queries as books
from storage.audiobook_models import Audiobook
from storage.counters import Counters
from storage.db import session_scope
from storage.models import UsageRecord, utcnow
from storage.objects import ObjectStore, tenant_key
from worker import audio
from worker.audio_join import to_pcm
from worker.budget import BudgetExceeded, Guard, budget_guard, key_facts
from worker.lease import SegmentLease
from worker.providers.base import Deployment, SpeechProvider, SynthesisRequest, SynthesisResult
from worker.providers.errors import InvalidInput, ProviderUnavailable, RateLimited
from worker.router import AllDeploymentsFailed, NoFreeSlot, Router
from worker.usage import usage_record

from .dispatch import SegmentSlots, publish_segments

__all__ = [
    "SEGMENT_FORMAT",
    "MAX_DEFERRALS",
    "segment_cache_key",
    "deferral_delay_s",
    "SegmentRunner",
    "SegmentOutcome",
]

log = logging.getLogger(__name__)

# Asked of every provider: lossless, so joins and the final encode lose nothing, and one
# format for every book, so a book in mp3 and its re-render in opus share the cache.
SEGMENT_FORMAT = "pcm"


# A provider's rate limit outlasting the router's retries is expected under a book's load
# (per-minute quotas): the segment waits and goes again, up to this many times (with the
# delays below, at least an hour and a quarter in all), before it fails.
MAX_DEFERRALS = 20
DEFERRAL_BASE_S = 5.0
DEFERRAL_MAX_S = 300.0


def deferral_delay_s(
    deferrals: int, retry_after_s: float | None, rng: random.Random | None = None
) -> float:
    """How long a rate-limited segment waits: 5 s doubling per earlier deferral, jittered
    so a book's segments spread out, and never less than the provider's Retry-After (a
    short Retry-After was already waited out by the router's retries); at most 5 min."""
    backoff = DEFERRAL_BASE_S * 2 ** min(deferrals, 10) * (rng or random).uniform(0.8, 1.2)
    return min(max(backoff, retry_after_s or 0.0), DEFERRAL_MAX_S)


def segment_cache_key(*, model: str, voice: str | None, speed: float, text: str) -> str:
    """sha256 of (model, voice, format, speed, text): the same audio has the same key."""
    parts = [model, voice or "", SEGMENT_FORMAT, f"{speed:g}", text]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class SegmentOutcome:
    """What became of a run: its segment's status, and the book and model it belongs to."""

    status: str
    book_id: str
    chapter_index: int
    model: str


@dataclass(frozen=True)
class _Claimed:
    id: str
    run: int
    book_id: str
    chapter_index: int
    text: str
    voice: str | None
    cache_key: str
    model: str
    tenant: str
    key_id: str | None
    team: str | None
    user: str | None
    speed: float
    book_open: bool
    deferrals: int


class SegmentRunner:
    def __init__(
        self, settings: Settings, registry: Registry, store: ObjectStore, counters: Counters
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.counters = counters
        self.db_url = settings.resolved_database_url

    def run(self, segment_id: int) -> SegmentOutcome | None:
        """Run the segment if it is queued; None if it was not ours to run."""
        claimed = self._claim(segment_id)
        if claimed is None:
            return None
        if not claimed.book_open:
            with session_scope(self.db_url) as session:
                books.cancel_running_segment(session, segment_id=segment_id, run=claimed.run)
            return SegmentOutcome(
                books.CANCELED, claimed.book_id, claimed.chapter_index, claimed.model
            )
        lease_s = self.settings.job_lease_seconds
        with SegmentLease(self.db_url, segment_id, claimed.run, lease_s):
            status = self._run_claimed(claimed)
        return SegmentOutcome(status, claimed.book_id, claimed.chapter_index, claimed.model)

    def _claim(self, segment_id: int) -> _Claimed | None:
        with session_scope(self.db_url) as session:
            segment = books.claim_segment(
                session, segment_id=segment_id, lease_seconds=self.settings.job_lease_seconds
            )
            if segment is None:
                return None
            book = session.get(Audiobook, segment.book_id)
            assert book is not None  # segments are deleted with their book
            return _Claimed(
                id=str(segment.id),
                run=segment.runs,
                book_id=book.id,
                chapter_index=segment.chapter_index,
                text=segment.text,
                voice=segment.voice,
                cache_key=segment.cache_key,
                model=segment.model,
                tenant=book.tenant,
                key_id=book.key_id,
                team=book.team,
                user=book.user,
                speed=book.speed,
                book_open=book.status in books.OPEN_BOOK,
                deferrals=segment.deferrals,
            )

    def _run_claimed(self, seg: _Claimed) -> str:
        segment_id = int(seg.id)
        try:
            with session_scope(self.db_url) as session:
                entry = books.cached_segment(session, tenant=seg.tenant, cache_key=seg.cache_key)
                hit = entry is not None and self.store.exists(entry.object_key)
            if hit:
                return self._finish(seg, cached=True, usage=None)
            return self._synthesize(seg)
        except NoFreeSlot:
            # Every deployment is busy with other segments: wait for the next dispatch.
            with session_scope(self.db_url) as session:
                books.segment_back_to_pending(session, segment_id=segment_id, run=seg.run)
            return books.PENDING
        except InvalidInput as exc:
            return self._fail(seg, "invalid_input", exc.message)
        except BudgetExceeded as exc:
            return self._fail(seg, "budget_exceeded", str(exc))
        except AllDeploymentsFailed as exc:
            if isinstance(exc.last, RateLimited) and seg.deferrals < MAX_DEFERRALS:
                return self._defer(seg, exc.last)
            return self._fail(seg, "provider_error", str(exc))
        except Exception:
            log.exception("segment %s failed with an internal error", seg.id)
            return self._fail(seg, "internal_error", "the segment failed with an internal error")

    def _synthesize(self, seg: _Claimed) -> str:
        segment_id = int(seg.id)

        def call(provider: SpeechProvider, deployment: Deployment) -> SynthesisResult:
            produced = provider.synthesize(
                SynthesisRequest(
                    model=deployment.model,
                    text=seg.text,
                    voice=seg.voice,
                    response_format=SEGMENT_FORMAT,
                    speed=seg.speed,
                )
            )
            try:
                # Decoded here so undecodable audio is this attempt's failure (retried).
                to_pcm(produced.audio, produced.audio_format, produced.sample_rate)
            except (audio.InvalidAudio, ValueError) as exc:
                raise ProviderUnavailable(
                    f"{deployment.provider}: undecodable audio ({exc})"
                ) from exc
            return produced

        router = Router(self.registry, self.counters, on_attempt=lambda _: None)
        routed = router.call(
            seg.model,
            call,
            should_stop=lambda: self._stopped(segment_id, seg.run),
            before_attempt=self._guard(seg),
            slots=SegmentSlots(self.db_url, self.settings, segment_id, seg.run),
        )
        produced = routed.value
        pcm, rate = to_pcm(produced.audio, produced.audio_format, produced.sample_rate)
        seconds = audio.pcm_duration_seconds(pcm, rate)
        object_key = tenant_key(seg.tenant, "audiobook-segments", f"{seg.cache_key}.flac")
        self.store.put_bytes(object_key, audio.encode_pcm(pcm, rate, "flac"))
        # Cached first, in its own transaction: even if this run lost the segment meanwhile,
        # the audio is paid for and the run that took it over gets it free.
        with session_scope(self.db_url) as session:
            books.remember_segment(
                session,
                tenant=seg.tenant,
                cache_key=seg.cache_key,
                object_key=object_key,
                sample_rate=rate,
                duration_seconds=round(seconds, 3),
            )
        characters = produced.characters or len(seg.text)
        usage = usage_record(
            routed,
            payer=seg,
            model=seg.model,
            audiobook_id=seg.book_id,
            call_key=f"segment-{seg.id}",
            voice=seg.voice,
            characters=characters,
            output_audio_seconds=seconds,
            input_tokens=produced.input_tokens,
            output_tokens=produced.output_tokens,
        )
        return self._finish(seg, cached=False, usage=usage)

    def _finish(self, seg: _Claimed, *, cached: bool, usage: UsageRecord | None) -> str:
        with session_scope(self.db_url) as session:
            done = books.finish_segment(
                session, segment_id=int(seg.id), run=seg.run, cached=cached, usage=usage
            )
        return books.SUCCEEDED if done else books.CANCELED

    def _defer(self, seg: _Claimed, error: RateLimited) -> str:
        delay = deferral_delay_s(seg.deferrals, error.retry_after_s)
        with session_scope(self.db_url) as session:
            deferred = books.defer_segment(
                session,
                segment_id=int(seg.id),
                run=seg.run,
                until=utcnow() + timedelta(seconds=delay),
            )
        if not deferred:
            return books.CANCELED
        log.info("segment %s rate limited; again in %.1fs", seg.id, delay)
        publish_segments([int(seg.id)], countdown=delay)
        return books.QUEUED

    def _fail(self, seg: _Claimed, code: str, message: str) -> str:
        with session_scope(self.db_url) as session:
            failed = books.fail_segment(
                session, segment_id=int(seg.id), run=seg.run, code=code, message=message
            )
        return books.FAILED if failed else books.CANCELED

    def _guard(self, seg: _Claimed) -> Guard:
        return budget_guard(
            self.db_url,
            key_id=seg.key_id,
            key_budget=key_facts(self.db_url, seg.key_id).budget_usd,
            tenant=seg.tenant,
            user=seg.user,
            user_budget=self.registry.end_user_budget(seg.user),
        )

    def _stopped(self, segment_id: int, run: int) -> bool:
        """The book was canceled, or this segment was taken back from this run."""
        with session_scope(self.db_url) as session:
            return not books.segment_still_running(session, segment_id=segment_id, run=run)
