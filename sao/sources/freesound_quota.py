"""The Freesound request quota as a budget: what a throttle message means, how many requests the day
still allows, where that count lives, and how many days a pass still needs.

Facts (MTG/freesound ``apiv2/throttling.py``, ``freesound/settings.py``): a standard key (level 1)
may make 60 requests a minute and 2,000 a day (level 2: 300/minute, 5,000/day; level 3: 300/minute,
15,000/day). The throttles are DRF sliding windows over a request history per credential (the day
window is the 86,400 s before now). A refused request gets HTTP 429 with ``{"detail": "Request was
throttled because of exceeding a request limit rate (2000/day)"}`` (the rate named is the one
exceeded) and no ``Retry-After``; a suspended credential gets "... because the ApiV2 credential has
been suspended". A refused request is not counted by the server.

What counts: every API request (searches, sound lookups, original downloads: ``limited=True`` in
``FreesoundClient._request``). Previews come from the CDN and do not.

Where the count lives, and why it holds with parallel workers:

* ``api_requests`` in the catalogue holds the requests sent, per credential and second; the day's
  usage is summed from it (a sliding window, like the server's). The credential is named by
  ``credential_id`` (a salted sha256 prefix), never by its token.
* The crawl is one unbatched stage with the catalogue open: its budget is loaded from the table and
  writes each request to it as it is sent (``persist=True``), so a killed crawl never under-counts.
* Batched downloads never touch the catalogue in ``compute``. ``plan`` reads what the day still
  allows (``remaining_today``) and plans at most that many originals; each batch gets a budget of
  exactly one request per item it holds (``allowance``), so the batches together can never spend
  more than ``plan`` saw left, however many run at once and in whatever order. A batch returns the
  seconds it spent; ``store_batch`` adds them to the table. A retry spends from the batch's own
  allowance: a batch that runs out defers its last items to the next run instead of borrowing.
* When the server says the day (or hour) is spent although the budget did not (another program
  uses the same key), ``blocked_until`` is recorded in ``api_quota`` (by the crawl, or by the batch's
  ``store_batch``), and no request is sent before it. Batches in the same process learn it at once
  (``note_block``/``known_block``); a batch in another worker asks once, gets the 429 (which the
  server does not count) and defers the rest of its items.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import math
import re
import threading
import time
from typing import Any, Callable, Iterable

MINUTE_S, HOUR_S, DAY_S = 60, 3600, 86_400
SCOPE_SECONDS = {"second": 1, "minute": MINUTE_S, "hour": HOUR_S, "day": DAY_S}
# DRF's parse_rate reads the period by its first letter; Freesound's settings write these words
_PERIODS = {"s": "second", "sec": "second", "second": "second", "m": "minute", "min": "minute", "minute": "minute",
            "h": "hour", "hour": "hour", "d": "day", "day": "day"}
_RATE = re.compile(r"Request was throttled because of exceeding a request limit rate \((\d{1,9})/([a-z]{1,6})\)")
SUSPENDED = "Request was throttled because the ApiV2 credential has been suspended"
# rows of api_requests older than this are pruned: the day window never reads them
KEEP_S = 2 * DAY_S
_CREDENTIAL_SALT = b"sao-freesound-credential-v1:"


@dataclasses.dataclass(frozen=True)
class Throttle:
    """What a 429's message says: ``scope`` is second/minute/hour/day, or "suspended"; ``limit`` the
    rate's request count (None when suspended)."""
    scope: str
    limit: int | None = None

    @property
    def fatal(self) -> bool:
        return self.scope == "suspended"

    @property
    def waits_long(self) -> bool:
        """A day or hour limit: waiting in-process is pointless, a later run continues."""
        return self.scope in ("hour", "day")


def parse_throttle(detail: object) -> Throttle | None:
    """The throttle a 429's ``detail`` names, or None when the text is not one of the server's two
    messages (then the 429 is treated like any transient one)."""
    if not isinstance(detail, str):
        return None
    if SUSPENDED in detail:
        return Throttle("suspended")
    m = _RATE.search(detail)
    if not m or m.group(2) not in _PERIODS:
        return None
    return Throttle(_PERIODS[m.group(2)], int(m.group(1)))


def throttle_detail(limit: int, scope: str) -> str:
    """The server's message for a request over ``limit``/``scope`` (the replica answers with it)."""
    if scope not in SCOPE_SECONDS:
        raise ValueError(f"throttle scope {scope!r}: one of {', '.join(SCOPE_SECONDS)}")
    return f"Request was throttled because of exceeding a request limit rate ({int(limit)}/{scope})"


def credential_id(token: str) -> str:
    """A non-secret name for a credential: the first 16 hex digits of a salted sha256 of it. It keys
    the persisted usage; the token itself is never stored."""
    if not isinstance(token, str) or not token:
        raise ValueError("credential_id needs a token")
    return hashlib.sha256(_CREDENTIAL_SALT + token.encode()).hexdigest()[:16]


def utc(epoch: float | None) -> dt.datetime | None:
    """Unix time as naive UTC (the catalogue's timestamps)."""
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None)


def epoch(t: dt.datetime | None) -> float | None:
    return None if t is None else t.replace(tzinfo=dt.timezone.utc).timestamp()


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why the budget lets no request go now, and when one may go (Unix time)."""
    why: str
    scope: str            # "day", "hour" or "allowance" (a batch's share is spent: the next run goes on)
    next_allowed: float


class RequestBudget:
    """The requests one client may still send: ``per_day`` over a sliding day window (seeded with the
    persisted history), an optional ``allowance`` (a batch's share: at most this many in all) and a
    ``blocked_until`` set when the server refused the day. ``record(second)`` is called for each
    request let through (the crawl writes it to the catalogue at once); ``spent`` keeps them too.
    Thread-safe: a client's requests may come from several threads."""

    def __init__(self, per_day: int, *, history: Iterable[tuple[int, int]] = (), blocked_until: float | None = None,
                 allowance: int | None = None, clock: Callable[[], float] = time.time,
                 record: Callable[[int], None] | None = None, window: float = DAY_S):
        if isinstance(per_day, bool) or not isinstance(per_day, int) or per_day < 1:
            raise ValueError(f"requests per day must be an integer of at least 1, got {per_day!r}")
        if allowance is not None and (isinstance(allowance, bool) or not isinstance(allowance, int) or allowance < 0):
            raise ValueError(f"request allowance must be a non-negative integer, got {allowance!r}")
        self.per_day, self.window, self.allowance = per_day, float(window), allowance
        self.clock, self.record = clock, record
        self.blocked_until = blocked_until
        self.blocked_scope = "day" if blocked_until is not None else None
        self._seconds: collections.Counter = collections.Counter()
        for second, n in history:
            self._seconds[int(second)] += int(n)
        self.spent: collections.Counter = collections.Counter()    # second -> requests this budget let through
        self.used = 0
        self.lock = threading.Lock()

    def _in_window(self, now: float) -> list[tuple[int, int]]:
        # a request in second s is counted until s + 1 + window: whole seconds, never too early
        return sorted((s, n) for s, n in self._seconds.items() if s + 1 > now - self.window)

    def used_today(self, now: float | None = None) -> int:
        now = self.clock() if now is None else now
        with self.lock:
            return sum(n for _, n in self._in_window(now))

    def remaining(self, now: float | None = None) -> int:
        """Requests that may still go now (0 while blocked)."""
        now = self.clock() if now is None else now
        with self.lock:
            return self._remaining(now)

    def _remaining(self, now: float) -> int:
        if self.blocked_until is not None and now < self.blocked_until:
            return 0
        left = self.per_day - sum(n for _, n in self._in_window(now))
        if self.allowance is not None:
            left = min(left, self.allowance - self.used)
        return max(0, left)

    def _day_frees_at(self, now: float) -> float:
        """When the window next holds fewer than ``per_day`` requests."""
        window = self._in_window(now)
        excess = sum(n for _, n in window) - self.per_day + 1   # requests that must leave the window
        for s, n in window:
            excess -= n
            if excess <= 0:
                return s + 1 + self.window
        return now

    def refusal(self, now: float | None = None) -> Refusal | None:
        now = self.clock() if now is None else now
        with self.lock:
            return self._refusal(now)

    def _refusal(self, now: float) -> Refusal | None:
        if self.blocked_until is not None and now < self.blocked_until:
            return Refusal(f"the Freesound server refused more requests this {self.blocked_scope or 'day'}",
                           self.blocked_scope or "day", self.blocked_until)
        if sum(n for _, n in self._in_window(now)) >= self.per_day:
            return Refusal(f"the day's budget of {self.per_day} requests ([freesound].requests_per_day) is spent",
                           "day", self._day_frees_at(now))
        if self.allowance is not None and self.used >= self.allowance:
            return Refusal(f"this batch's share of the day's requests ({self.allowance}) is spent", "allowance", now)
        return None

    def take(self) -> Refusal | None:
        """Count one request about to be sent; or say why none may go (nothing is counted then)."""
        now = self.clock()
        with self.lock:
            why = self._refusal(now)
            if why is not None:
                return why
            second = int(math.floor(now))
            self._seconds[second] += 1
            self.spent[second] += 1
            self.used += 1
        if self.record:
            self.record(second)
        return None

    def refund(self) -> None:
        """The last request was refused by the throttle (HTTP 429): the server did not count it."""
        with self.lock:
            for counter in (self._seconds, self.spent):
                if counter:
                    second = max(counter)
                    counter[second] -= 1
                    if counter[second] <= 0:
                        del counter[second]
            self.used = max(0, self.used - 1)
        if self.record:
            self.record(-1)

    def server_refused(self, throttle: Throttle) -> float:
        """The server said the ``throttle``'s window (day or hour) is spent: no request before the
        returned Unix time. The estimate: when the oldest request this budget knows of in that window
        leaves it; knowing none (another program spent them), a whole window from now."""
        now = self.clock()
        span = SCOPE_SECONDS.get(throttle.scope, DAY_S)
        with self.lock:
            known = [s for s in self._seconds if s + 1 > now - span]
            until = (min(known) + 1 + span) if known else now + span
            self.blocked_until, self.blocked_scope = until, throttle.scope
        return until

    def spent_seconds(self) -> list[list[int]]:
        """[[second, requests], ...] this budget let through (JSON-like: a batch's result carries it)."""
        with self.lock:
            return [[s, n] for s, n in sorted(self.spent.items())]


# What the server said in this process: credential id -> (until, scope). Batches that cannot read the
# catalogue (a download's compute) start their budgets from it, so after one batch meets the server's
# refusal the batches after it in the same process do not ask again.
_SERVER_BLOCKS: dict[str, tuple[float, str]] = {}
_BLOCKS_LOCK = threading.Lock()


def note_block(cred: str, until: float, scope: str) -> None:
    with _BLOCKS_LOCK:
        if cred not in _SERVER_BLOCKS or _SERVER_BLOCKS[cred][0] < until:
            _SERVER_BLOCKS[cred] = (float(until), scope)


def known_block(cred: str, now: float | None = None) -> tuple[float, str] | None:
    """The server's refusal of ``cred`` seen in this process, while it lasts."""
    now = time.time() if now is None else now
    with _BLOCKS_LOCK:
        block = _SERVER_BLOCKS.get(cred)
    return block if block and block[0] > now else None


# -- the catalogue's copy ---------------------------------------------------------------------------
def read_budget(cat, cred: str, *, per_day: int, clock: Callable[[], float] = time.time,
                record: Callable[[int], None] | None = None) -> RequestBudget:
    """The budget of ``cred`` as the catalogue knows it (its last day of requests, a block the server
    set that has not passed); reads only, so a read-only catalogue (a stage's plan) will do."""
    now = clock()
    state = cat.get_api_quota(cred)
    blocked = epoch(state["blocked_until"]) if state and state["blocked_until"] else None
    if blocked is not None and blocked <= now:
        blocked = None
    budget = RequestBudget(per_day, history=cat.api_request_seconds(cred, int(now - DAY_S - 1)),
                           blocked_until=blocked, clock=clock, record=record)
    if blocked is not None and state["blocked_scope"]:
        budget.blocked_scope = state["blocked_scope"]
    return budget


def load_budget(cat, cred: str, *, per_day: int, per_minute: int, clock: Callable[[], float] = time.time,
                persist: bool = True) -> RequestBudget:
    """``read_budget``, recording the configured rates (for ``sao status``) and pruning old rows; with
    ``persist`` every request it lets through is written to the catalogue at once."""
    now = clock()
    cat.prune_api_requests(int(now - KEEP_S))

    def record(second: int) -> None:
        if second < 0:                               # a refund: the newest second gave one back
            cat.unrecord_api_request(cred)
        else:
            cat.record_api_requests(cred, [(second, 1)])

    budget = read_budget(cat, cred, per_day=per_day, clock=clock, record=record if persist else None)
    cat.set_api_quota(cred, per_day, per_minute, utc(budget.blocked_until), budget.blocked_scope
                      if budget.blocked_until is not None else None)
    return budget


def save_block(cat, cred: str, until: float, scope: str, *, per_day: int, per_minute: int) -> None:
    """Record that the server refused ``cred`` until ``until`` (a later run waits for it)."""
    cat.set_api_quota(cred, per_day, per_minute, utc(until), scope)


def recent_ages(cat, cred: str, now: float, period: float = MINUTE_S) -> list[float]:
    """Seconds since each request of the last ``period`` (to seed a new client's per-minute limiter,
    so a run started right after another does not spend a second minute's worth)."""
    out: list[float] = []
    for second, n in cat.api_request_seconds(cred, int(now - period - 1)):
        out += [max(0.0, now - (second + 1))] * int(n)    # the latest moment in its second: never too old
    return out


# -- progress and the days a pass still needs -------------------------------------------------------
# freesound/settings.py, APIV2_BASIC_THROTTLING_RATES_PER_LEVELS: (level, per minute, per day); 99 is unlimited
API_LEVELS = ((1, 60, 2000), (2, 300, 5000), (3, 300, 15000))
PAPER_FREESOUND_RECORDINGS = 472_618      # paper section 3


def listing_requests(n_recordings: int, *, page_size: int = 150, searches: int = 3) -> int:
    """Search requests a full listing of ``n_recordings`` takes: keyset pages ask again for their boundary
    item (so a page brings ``page_size - 1`` new ones), plus the last page of each license search."""
    return math.ceil(n_recordings / max(1, page_size - 1)) + searches


def crawl_cost(n_recordings: int, *, per_minute: int, per_day: int, page_size: int = 150,
               originals: bool = False) -> dict[str, float]:
    """What a full crawl costs at one API level: requests, days, and minutes of requests on the busiest day.
    Originals are one request each; previews come from the CDN and cost none."""
    requests = listing_requests(n_recordings, page_size=page_size) + (n_recordings if originals else 0)
    return {"requests": requests, "days": math.ceil(requests / per_day),
            "minutes_per_day": min(requests, per_day) / per_minute}


def days_to_finish(requests_needed: int, left_today: int, per_day: int) -> float:
    """Days (counting today as one when it still has requests) until ``requests_needed`` are sent."""
    if requests_needed <= 0:
        return 0.0
    if requests_needed <= left_today:
        return 1.0 if left_today < per_day else requests_needed / per_day
    return (1.0 if left_today > 0 else 0.0) + math.ceil((requests_needed - left_today) / per_day)


def pass_progress(cat, *, page_size: int, per_day: int, now: float | None = None) -> list[dict[str, Any]]:
    """The latest crawl passes: items listed out of the API's count, search requests still needed and
    the days they take at ``per_day``. A search the pass has not begun has no count yet: until every
    search has begun, the total is at least what the catalogue already holds (``total_exact`` False)."""
    from .freesound import ALLOWED_LICENSE_NAMES
    now = time.time() if now is None else now
    left = min((q["left_today"] for q in quota_state(cat, per_day=per_day, now=now)), default=per_day)
    known = cat.query("SELECT count(*) AS n FROM recordings WHERE source = 'freesound'")[0]["n"]
    out = []
    for p in cat.crawl_passes("freesound"):
        cursors = p["cursors"]
        total_known = sum(c["total"] or 0 for c in cursors)
        exact = len(cursors) >= len(ALLOWED_LICENSE_NAMES) and all(c["total"] is not None for c in cursors)
        total = total_known if exact else max(total_known, known)
        needed = 0
        if p["status"] == "running" and not p["listing_done"]:
            begun = sum(math.ceil(max(0, (c["total"] or 0) - c["listed"]) / page_size) + 1
                        for c in cursors if not c["done"])
            not_begun = max(0, len(ALLOWED_LICENSE_NAMES) - len(cursors))
            needed = begun + not_begun + math.ceil(max(0, total - total_known) / page_size)
        checks_left = p["checks_left"]
        needed += checks_left or 0
        out.append({**{k: p[k] for k in ("pass_id", "kind", "status", "started_at", "finished_at", "listing_done")},
                    "listed": p["listed"], "total": total, "total_exact": exact, "requests_needed": needed,
                    "checks_left": checks_left,
                    "days_to_finish": days_to_finish(needed, left, per_day) if p["status"] == "running" else 0.0})
    return out


def quota_state(cat, *, per_day: int, now: float | None = None) -> list[dict[str, Any]]:
    """Per credential the catalogue knows: requests used in the day window, left, and when a request
    is next allowed (the window's oldest request leaving, or the server's block)."""
    now = time.time() if now is None else now
    out = []
    for q in cat.api_quotas():
        limit = per_day or q["requests_per_day"]
        budget = RequestBudget(limit, history=cat.api_request_seconds(q["credential_id"], int(now - DAY_S - 1)),
                               blocked_until=epoch(q["blocked_until"]), clock=lambda: now)
        why = budget.refusal(now)
        window = budget._in_window(now)
        out.append({"credential_id": q["credential_id"], "requests_per_day": limit,
                    "requests_per_minute": q["requests_per_minute"], "used_today": budget.used_today(now),
                    "left_today": budget.remaining(now),
                    "next_allowed": utc(why.next_allowed) if why else None,
                    # the sliding window: the oldest counted request leaves it a day after it was sent
                    "resets_at": utc(window[0][0] + 1 + DAY_S) if window else None,
                    "blocked_until": q["blocked_until"] if q["blocked_until"] and epoch(q["blocked_until"]) > now
                    else None})
    return out
