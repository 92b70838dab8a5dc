"""The Freesound client's HTTP pieces, apart from the client: its errors (what is worth retrying,
and when a spent quota allows the next request), the client-side rate limiter and the retry policy."""
from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .freesound_quota import utc


class FreesoundError(RuntimeError):
    """A request failed for good (4xx other than 429, or retries exhausted)."""

    def __init__(self, message: str, status: int | None = None, *, transient: bool | None = None):
        super().__init__(message)
        self.status = status
        self._transient = transient

    @property
    def transient(self) -> bool:
        """Worth retrying later: no answer at all, 429 or 5xx (unless the error says otherwise)."""
        if self._transient is not None:
            return self._transient
        return self.status is None or self.status == 429 or self.status >= 500


class QuotaExhausted(FreesoundError):
    """The day's (or hour's) requests are spent: by the budget, before asking, or by the server's 429.
    Not retried in-process; ``next_allowed`` (Unix time) says when a later run may go on."""

    def __init__(self, message: str, *, scope: str, next_allowed: float, by_server: bool):
        super().__init__(message, 429, transient=False)
        self.scope, self.next_allowed, self.by_server = scope, float(next_allowed), by_server

    @property
    def next_allowed_utc(self):
        return utc(self.next_allowed)


class RateLimiter:
    """At most ``max_calls`` per ``period`` seconds over any sliding window, across threads.

    ``margin`` widens the window a little, so network jitter cannot make the server see
    one call too many in its own window.
    """

    def __init__(self, max_calls: int, period: float = 60.0, margin: float = 0.05,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if max_calls < 1:
            raise ValueError("rate limit must be at least 1 call per period")
        self.max_calls, self.period = max_calls, period * (1 + margin)
        self.calls: collections.deque = collections.deque()
        self.clock, self.sleep = clock, sleep
        self.lock = threading.Lock()
        self.waited = 0.0

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = self.clock()
                while self.calls and now - self.calls[0] >= self.period:
                    self.calls.popleft()
                if len(self.calls) < self.max_calls:
                    self.calls.append(now)
                    return
                wait = self.period - (now - self.calls[0])
            self.waited += wait
            self.sleep(wait)

    def seed(self, ages: list[float]) -> None:
        """Calls made ``ages`` seconds ago (by an earlier run of the same credential) fill the window."""
        with self.lock:
            now = self.clock()
            stamps = sorted(now - a for a in ages if 0 <= a < self.period)
            self.calls = collections.deque(sorted([*self.calls, *stamps])[-self.max_calls:])


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), 3600.0)   # the server knows best; never wait past an hour
            except ValueError:
                pass
        return min(self.max_delay, self.base_delay * 2 ** attempt) * (0.5 + random.random() / 2)
