"""'Job X ended' notices, so a waiting request answers as soon as its job ends.

With Redis as the broker the worker publishes on `speechq:job-ended:<id>` and each API
process keeps one pattern subscription; without Redis (the embedded default) waiters poll
the database. Notices are only a hint to look again: the database row stays the truth,
and a lost notice costs at most one slow poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aioredis

__all__ = ["CHANNEL_PREFIX", "JobEventPublisher", "JobWaiter"]

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "speechq:job-ended:"
_POLL_START_S = 0.02
_POLL_MAX_S = 0.25
_NOTIFIED_RECHECK_S = 1.0  # with notices, still look every second in case one was lost


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))


class JobEventPublisher:
    """Used by whoever ends a job (worker, cancel route)."""

    def __init__(self, broker_url: str) -> None:
        self.client = (
            redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)
            if _is_redis(broker_url)
            else None
        )

    def job_ended(self, job_id: str) -> None:
        if self.client is None:
            return
        try:
            self.client.publish(CHANNEL_PREFIX + job_id, b"1")
        except redis.RedisError:
            log.warning("could not publish the end of job %s; waiters will poll", job_id)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class JobWaiter:
    """Used by the API: wait until a job has ended, or a deadline passes."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self._events: dict[str, list[asyncio.Event]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self._client: aioredis.Redis | None = None

    async def start(self) -> None:
        if _is_redis(self.broker_url):
            self._client = aioredis.Redis.from_url(self.broker_url)
            self._task = asyncio.create_task(self._listen(), name="speechq-job-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def _listen(self) -> None:
        assert self._client is not None
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                    async for message in pubsub.listen():
                        if message.get("type") != "pmessage":
                            continue
                        channel = message["channel"]
                        if isinstance(channel, bytes):
                            channel = channel.decode()
                        for event in self._events.get(channel.removeprefix(CHANNEL_PREFIX), []):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("job event subscription lost; retrying", exc_info=True)
                await asyncio.sleep(1)

    @property
    def notified(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait(
        self, job_id: str, timeout_s: float, has_ended: Callable[[], Awaitable[bool]]
    ) -> bool:
        """True once `has_ended()` says so; False if `timeout_s` passed first."""
        deadline = time.monotonic() + timeout_s
        event = asyncio.Event()
        self._events[job_id].append(event)
        delay = _POLL_START_S
        try:
            while True:
                if await has_ended():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if self.notified:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), min(remaining, _NOTIFIED_RECHECK_S))
                    event.clear()
                else:
                    await asyncio.sleep(min(delay, remaining))
                    delay = min(delay * 2, _POLL_MAX_S)
        finally:
            waiters = self._events[job_id]
            waiters.remove(event)
            if not waiters:
                del self._events[job_id]
