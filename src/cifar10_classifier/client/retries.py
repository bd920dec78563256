"""When to try a call again: on 429 and 503, after the server's Retry-After (or a doubling backoff without one),
within a bounded number of attempts and a bounded total wait. Pure functions: the client does the sleeping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Overloaded (429: the server's admission limit) or not ready yet (503: the model still loading): both pass.
RETRIED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3  # the first try included: 1 never retries
    max_total_wait_s: float = 10.0  # all the waits of one call together
    backoff_s: float = 0.5  # the first wait when the answer has no Retry-After; it doubles at each attempt
    statuses: frozenset[int] = RETRIED_STATUSES

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if not (self.max_total_wait_s >= 0 and self.backoff_s >= 0):  # `not >=` also refuses NaN
            raise ValueError("max_total_wait_s and backoff_s must be 0 or more")


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header in seconds: delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def next_wait_s(policy: RetryPolicy, attempts_made: int, retry_after: float | None, waited_s: float) -> float | None:
    """Seconds to wait before the next attempt, or None to give up: out of attempts, or the wait would take the
    call past its total bound (a Retry-After beyond it is not shortened: the server said not before then)."""
    if attempts_made >= policy.max_attempts:
        return None
    wait = retry_after if retry_after is not None else policy.backoff_s * 2 ** (attempts_made - 1)
    if not math.isfinite(wait) or waited_s + wait > policy.max_total_wait_s:
        return None
    return wait
