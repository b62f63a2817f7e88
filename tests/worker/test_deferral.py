"""How long a rate-limited audiobook segment waits before it goes again."""

from __future__ import annotations

import random

import pytest

from worker.audiobook.segments import DEFERRAL_MAX_S, deferral_delay_s


def test_the_providers_retry_after_is_the_least_wait_up_to_the_cap() -> None:
    rng = random.Random(7)
    assert deferral_delay_s(0, 30.0, rng) == 30.0  # longer than the backoff: honoured
    assert 4 <= deferral_delay_s(0, 1.0, rng) <= 6  # shorter: the backoff is longer
    assert deferral_delay_s(0, 3600.0, rng) == DEFERRAL_MAX_S


@pytest.mark.parametrize(("deferrals", "low", "high"), [(0, 4, 6), (1, 8, 12), (3, 32, 48)])
def test_without_retry_after_the_wait_doubles_with_jitter(
    deferrals: int, low: float, high: float
) -> None:
    rng = random.Random(7)
    waits = [deferral_delay_s(deferrals, None, rng) for _ in range(200)]
    assert all(low <= wait <= high for wait in waits)
    assert len(set(waits)) > 100  # spread out, so a book's segments do not return together


def test_the_wait_never_passes_the_cap() -> None:
    rng = random.Random(7)
    assert max(deferral_delay_s(n, None, rng) for n in range(30)) <= DEFERRAL_MAX_S
