"""The catalogue's crawl bookkeeping: listing cursors, crawl passes (what each pass saw, for
reconciling deletions), and the API requests and quotas every credential has used. A mixin of
``Catalog`` (it uses ``self.con``, ``self.transaction``): the same file, its own concern."""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Sequence

from .errors import CatalogError, utcnow as _utcnow


class CrawlState:
    def get_cursor(self, source: str, query_key: str) -> dict[str, Any] | None:
        rows = self.con.execute("SELECT last_created, next_page, updated_at FROM crawl_cursors "
                                "WHERE source = ? AND query_key = ?", [source, query_key]).fetchall()
        return {"last_created": rows[0][0], "next_page": rows[0][1], "updated_at": rows[0][2]} if rows else None

    def set_cursor(self, source: str, query_key: str, last_created: dt.datetime | None, next_page: int) -> None:
        self.con.execute(
            "INSERT INTO crawl_cursors (source, query_key, last_created, next_page, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (source, query_key) DO UPDATE SET last_created = excluded.last_created, "
            "next_page = excluded.next_page, updated_at = excluded.updated_at",
            [source, query_key, last_created, next_page, _utcnow()])

    def advance_cursor(self, source: str, query_key: str, last_created: dt.datetime | None, next_page: int) -> None:
        """``set_cursor``, except that ``last_created`` never moves backwards (an older or NULL value
        keeps the stored one): the incremental crawl asks only for what is newer than it."""
        self.con.execute(
            "INSERT INTO crawl_cursors (source, query_key, last_created, next_page, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (source, query_key) DO UPDATE SET last_created = CASE WHEN excluded.last_created IS NULL "
            "THEN crawl_cursors.last_created WHEN crawl_cursors.last_created IS NULL THEN excluded.last_created "
            "ELSE greatest(crawl_cursors.last_created, excluded.last_created) END, "
            "next_page = excluded.next_page, updated_at = excluded.updated_at",
            [source, query_key, last_created, next_page, _utcnow()])

    # -- multi-day crawl passes (a full listing, a reconcile) ------------------------------------
    def open_crawl_pass(self, source: str, kind: str) -> dict[str, Any]:
        """The running pass of ``kind`` for ``source``, or a new one: a pass continues across runs
        until it is done (``abandon_crawl_passes`` starts the next one from zero)."""
        if kind not in ("full", "reconcile"):
            raise CatalogError(f"crawl pass kind {kind!r}: 'full' or 'reconcile'")
        rows = self.query("SELECT * FROM crawl_passes WHERE source = ? AND kind = ? AND status = 'running' "
                          "ORDER BY started_at DESC LIMIT 1", [source, kind])
        if rows:
            return rows[0]
        import uuid
        now = _utcnow()
        pass_id = f"{source}-{kind}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.con.execute("INSERT INTO crawl_passes (pass_id, source, kind, status, started_at, updated_at) "
                         "VALUES (?, ?, ?, 'running', ?, ?)", [pass_id, source, kind, now, now])
        return self.query("SELECT * FROM crawl_passes WHERE pass_id = ?", [pass_id])[0]

    def update_crawl_pass(self, pass_id: str, *, status: str | None = None, listing_done: bool | None = None,
                          checked_through: int | None = None) -> None:
        if status is not None and status not in ("running", "done", "abandoned"):
            raise CatalogError(f"crawl pass {pass_id}: status {status!r} is not running, done or abandoned")
        now = _utcnow()
        self.con.execute(
            "UPDATE crawl_passes SET status = coalesce(?, status), listing_done = coalesce(?, listing_done), "
            "checked_through = coalesce(?, checked_through), updated_at = ?, "
            "finished_at = CASE WHEN ? IN ('done', 'abandoned') THEN ? ELSE finished_at END WHERE pass_id = ?",
            [status, listing_done, checked_through, now, status, now, pass_id])

    def abandon_crawl_passes(self, source: str, kind: str) -> int:
        """Stop the running pass of ``kind`` (the next one starts from zero); returns how many stopped."""
        rows = self.query("SELECT pass_id FROM crawl_passes WHERE source = ? AND kind = ? AND status = 'running'",
                          [source, kind])
        for r in rows:
            self.update_crawl_pass(r["pass_id"], status="abandoned")
        return len(rows)

    def get_pass_cursor(self, pass_id: str, query_key: str) -> dict[str, Any] | None:
        rows = self.query("SELECT last_created, next_page, total, done FROM crawl_pass_cursors "
                          "WHERE pass_id = ? AND query_key = ?", [pass_id, query_key])
        return rows[0] if rows else None

    def set_pass_cursor(self, pass_id: str, query_key: str, last_created: dt.datetime | None, next_page: int, *,
                        total: int | None = None, done: bool = False) -> None:
        """A pass's own cursor for one search (``total``: the API's count when the pass began it)."""
        self.con.execute(
            "INSERT INTO crawl_pass_cursors (pass_id, query_key, last_created, next_page, total, done, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (pass_id, query_key) DO UPDATE SET "
            "last_created = excluded.last_created, next_page = excluded.next_page, "
            "total = coalesce(crawl_pass_cursors.total, excluded.total), done = excluded.done, "
            "updated_at = excluded.updated_at",
            [pass_id, query_key, last_created, next_page, total, done, _utcnow()])
        self.con.execute("UPDATE crawl_passes SET updated_at = ? WHERE pass_id = ?", [_utcnow(), pass_id])

    def add_pass_seen(self, pass_id: str, query_key: str, source_ids: Iterable[str]) -> None:
        """Items a pass listed (the reconcile decides deletions from them): kept across runs."""
        ids = sorted({str(i) for i in source_ids})
        if ids:
            self.con.execute("INSERT INTO crawl_pass_seen SELECT ?, unnest(?::VARCHAR[]), ? ON CONFLICT DO NOTHING",
                             [pass_id, ids, query_key])

    def pass_seen(self, pass_id: str) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT source_id FROM crawl_pass_seen WHERE pass_id = ?",
                                               [pass_id]).fetchall()}

    def reconcile_candidates(self, pass_id: str, source: str) -> list[str]:
        """Recordings of ``source`` known when the pass began that its listing did not show and that
        it has not checked yet (ids in numeric order, after ``checked_through``), not taken down."""
        p = self.query("SELECT started_at, checked_through FROM crawl_passes WHERE pass_id = ?", [pass_id])
        if not p:
            raise CatalogError(f"crawl pass {pass_id!r} does not exist")
        rows = self.con.execute(
            "SELECT r.source_id FROM recordings r WHERE r.source = ? AND r.first_seen <= ? "
            "AND TRY_CAST(r.source_id AS BIGINT) > coalesce(?, -1) "
            "AND r.recording_id NOT IN (SELECT recording_id FROM active_takedowns) "
            "AND r.source_id NOT IN (SELECT source_id FROM crawl_pass_seen WHERE pass_id = ?) "
            "ORDER BY TRY_CAST(r.source_id AS BIGINT)", [source, p[0]["started_at"], p[0]["checked_through"],
                                                         pass_id]).fetchall()
        return [r[0] for r in rows]

    def crawl_passes(self, source: str, limit: int = 4) -> list[dict[str, Any]]:
        """The latest passes of ``source``, newest first, with their cursors, the items each listed,
        and (once its listing is done) the reconcile checks still to make."""
        out = self.query("SELECT * FROM crawl_passes WHERE source = ? ORDER BY started_at DESC LIMIT ?",
                         [source, limit])
        for p in out:
            p["cursors"] = self.query(
                "SELECT c.query_key, c.total, c.done, c.last_created, count(s.source_id) AS listed "
                "FROM crawl_pass_cursors c LEFT JOIN crawl_pass_seen s ON s.pass_id = c.pass_id "
                "AND s.query_key = c.query_key WHERE c.pass_id = ? GROUP BY ALL ORDER BY c.query_key",
                [p["pass_id"]])
            p["listed"] = sum(c["listed"] for c in p["cursors"])
            p["total"] = sum(c["total"] or 0 for c in p["cursors"])
            p["checks_left"] = (len(self.reconcile_candidates(p["pass_id"], source))
                                if p["kind"] == "reconcile" and p["listing_done"] and p["status"] == "running" else None)
        return out

    # -- the Freesound request quota (sao.sources.freesound_quota) -------------------------------
    def record_api_requests(self, credential_id: str, seconds: Iterable[Sequence[int]]) -> None:
        """Add requests sent by ``credential_id`` (a non-secret id, never a token): (second, n) pairs."""
        for second, n in seconds:
            if int(n) > 0:
                self.con.execute("INSERT INTO api_requests VALUES (?, ?, ?) ON CONFLICT (credential_id, second) "
                                 "DO UPDATE SET requests = api_requests.requests + excluded.requests",
                                 [credential_id, int(second), int(n)])

    def unrecord_api_request(self, credential_id: str) -> None:
        """Take back the newest request of ``credential_id`` (the server refused it, so it did not count)."""
        rows = self.con.execute("SELECT second, requests FROM api_requests WHERE credential_id = ? "
                                "ORDER BY second DESC LIMIT 1", [credential_id]).fetchall()
        if not rows:
            return
        if rows[0][1] <= 1:
            self.con.execute("DELETE FROM api_requests WHERE credential_id = ? AND second = ?",
                             [credential_id, rows[0][0]])
        else:
            self.con.execute("UPDATE api_requests SET requests = requests - 1 WHERE credential_id = ? AND second = ?",
                             [credential_id, rows[0][0]])

    def api_request_seconds(self, credential_id: str, since: int) -> list[tuple[int, int]]:
        return [(int(s), int(n)) for s, n in self.con.execute(
            "SELECT second, requests FROM api_requests WHERE credential_id = ? AND second >= ? ORDER BY second",
            [credential_id, int(since)]).fetchall()]

    def prune_api_requests(self, before: int) -> None:
        self.con.execute("DELETE FROM api_requests WHERE second < ?", [int(before)])

    def get_api_quota(self, credential_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM api_quota WHERE credential_id = ?", [credential_id])
        return rows[0] if rows else None

    def set_api_quota(self, credential_id: str, requests_per_day: int, requests_per_minute: int,
                      blocked_until: dt.datetime | None, blocked_scope: str | None) -> None:
        if blocked_scope not in (None, "day", "hour"):
            raise CatalogError(f"quota block scope {blocked_scope!r}: 'day' or 'hour'")
        self.con.execute(
            "INSERT INTO api_quota VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (credential_id) DO UPDATE SET "
            "requests_per_day = excluded.requests_per_day, requests_per_minute = excluded.requests_per_minute, "
            "blocked_until = excluded.blocked_until, blocked_scope = excluded.blocked_scope, "
            "updated_at = excluded.updated_at",
            [credential_id, int(requests_per_day), int(requests_per_minute), blocked_until, blocked_scope, _utcnow()])

    def api_quotas(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM api_quota ORDER BY updated_at DESC")

    # -- audio -----------------------------------------------------------------------------------
