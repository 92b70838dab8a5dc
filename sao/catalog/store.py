"""Catalog: the one place every stage reads recordings from and writes decisions to.

All SQL takes values only as parameters. The few identifiers that are interpolated (table
names for export and counts) come from the fixed ``TABLES`` tuple, never from input.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import duckdb
import pyarrow as pa

from ..fsutil import atomic_path
from ..licensing import canonical_license
from .columns import _CHECKS, _REC_ARROW, _REC_COLUMNS, _REC_REQUIRED, _column_problem, _fits, _text, extra_json
from .crawl_state import CrawlState
from .errors import CatalogError, CatalogInUse, utcnow as _utcnow
from .migrations import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)
_REC_COLUMN_SET = frozenset(_REC_COLUMNS)

TABLES = ("recordings", "decisions", "takedowns", "releases", "release_items", "crawl_cursors", "runs",
          "review_queue", "copyright_catalogue", "duplicate_groups", "release_exclusions", "catalog_meta",
          "schema_migrations", "api_requests", "api_quota", "crawl_passes", "crawl_pass_cursors", "crawl_pass_seen")
VERDICTS = ("pass", "reject", "review", "flag")
# the sources' names (sao.sources.SOURCES, which imports the catalogue: kept here so the catalogue imports
# no source; tests/test_sources.py checks that the two agree, and the migrations' CHECK allows the same)
SOURCE_NAMES = ("freesound", "fma", "local")

@dataclass(frozen=True)
class Decision:
    """One curation decision. Model stages must fill model_name and checkpoint_sha256."""
    recording_id: str
    stage: str
    verdict: str
    reason: str
    config_hash: str
    model_name: str | None = None
    checkpoint_sha256: str | None = None
    threshold: float | None = None
    uncalibrated: bool = False
    details: dict | None = None


CHECKPOINT_THRESHOLD = "256MB"


class Catalog(CrawlState):
    def __init__(self, path: str | os.PathLike, *, read_only: bool = False, migrate_to: int | None = None):
        self.path = pathlib.Path(path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            # DuckDB's lock error is a raw IO traceback to a user; name the file and the holder instead
            if "lock" not in str(exc).lower():
                raise CatalogError(f"catalogue {self.path} cannot be opened: {exc}") from None
            pid = re.search(r"\(PID (\d+)\)", str(exc))
            raise CatalogInUse(f"catalogue {self.path} is in use by another sao process"
                               + (f" (pid {pid.group(1)})" if pid else "")
                               + "; wait for it to finish (or stop it), then run this again") from None
        self._tx_depth = 0
        if not read_only:
            # DuckDB checkpoints every 16 MB of WAL by default, and each checkpoint rewrites the
            # recordings' key indexes whole: a 486k-record crawl spent a fifth of its time there,
            # growing with the table. The WAL is as durable either way; it is only replayed longer.
            self.con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
            self.migrate(migrate_to)

    # -- lifecycle -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self):
        """One transaction; nested uses join the outer one (so a page and its cursor commit together)."""
        if self._tx_depth:
            self._tx_depth += 1
            try:
                yield self
            finally:
                self._tx_depth -= 1
            return
        self.con.execute("BEGIN TRANSACTION")
        self._tx_depth = 1
        try:
            yield self
        except BaseException:
            self._tx_depth = 0
            self.con.execute("ROLLBACK")
            raise
        self._tx_depth = 0
        self.con.execute("COMMIT")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def schema_version(self) -> int:
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", ["schema_migrations"]).fetchall()[0][0]
        if not exists:
            return 0
        return self.con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0]

    def migrate(self, target: int | None = None) -> list[int]:
        """Apply pending migrations up to ``target`` (default: latest); returns those applied."""
        target = SCHEMA_VERSION if target is None else target
        self.con.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                         "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise CatalogError(f"{self.path}: schema version {current} is newer than this sao ({SCHEMA_VERSION}); "
                               "upgrade sao instead of downgrading the catalogue")
        applied = []
        for version, name, sql in MIGRATIONS:
            if version <= current or version > target:
                continue
            self.con.execute("BEGIN TRANSACTION")
            try:
                self.con.execute(sql)
                self.con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, _utcnow()])
                self.con.execute("COMMIT")
            except Exception:
                self.con.execute("ROLLBACK")
                raise
            log.info("catalogue %s: applied migration %d (%s)", self.path, version, name)
            applied.append(version)
        return applied

    def instance_id(self) -> str:
        """A random id made when this catalogue was created (cached results are keyed by it)."""
        return self.con.execute("SELECT value FROM catalog_meta WHERE key = 'instance_id'").fetchall()[0][0]

    # -- recordings ------------------------------------------------------------------------------
    @classmethod
    def validate_recording(cls, rec: dict[str, Any]) -> tuple:
        """Raise CatalogError (a ValueError naming the recording) when ``rec`` cannot be stored;
        else return its row as ``upsert_rows`` stores it."""
        return cls._normalise_recording(rec)

    @staticmethod
    def _normalise_recording(rec: dict[str, Any]) -> tuple:
        missing = [k for k in _REC_REQUIRED if rec.get(k) in (None, "")]
        ident = f"{rec.get('source')}:{rec.get('source_id')}"
        if missing:
            raise CatalogError(f"recording {ident}: missing required field(s) {', '.join(missing)}")
        unknown = rec.keys() - _REC_COLUMN_SET
        if unknown:
            raise CatalogError(f"recording {ident}: unknown field(s) {', '.join(sorted(unknown))}")
        if rec["source"] not in SOURCE_NAMES:
            raise CatalogError(f"recording {ident}: source must be one of {', '.join(SOURCE_NAMES)}")
        for c, v in rec.items():
            why = None if v is None or c not in _CHECKS or c == "extra" else _CHECKS[c](v)
            if why:
                shown = repr(v) if len(repr(v)) <= 80 else repr(v)[:77] + "..."
                raise CatalogError(f"recording {ident}: field {c} has a bad value {shown}: {why}")
        for key in ("title", "author", "description"):
            if isinstance(rec.get(key), str) and "\x00" in rec[key]:
                raise CatalogError(f"recording {ident}: {key} contains a NUL byte")
        r = dict(rec)
        r["source_id"] = str(r["source_id"])
        r["recording_id"] = f"{r['source']}:{r['source_id']}"
        if rec.get("recording_id") not in (None, r["recording_id"]):
            raise CatalogError(f"recording {ident}: recording_id {rec['recording_id']!r} does not match source:source_id")
        if not r.get("license_canonical"):
            r["license_canonical"] = canonical_license(r.get("license_raw"))
        tags = r.get("tags")
        if tags is not None and (not isinstance(tags, (list, tuple)) or any(_text(t) for t in tags)):
            raise CatalogError(f"recording {ident}: tags must be a list of strings (whole characters)")
        r["tags"] = list(tags) if tags is not None else None
        if r.get("extra") is not None:       # checked and serialised in one pass
            try:
                why = _column_problem("extra", r["extra"]) if not isinstance(r["extra"], dict) else None
                r["extra"] = None if why else extra_json(r["extra"])
            except (TypeError, ValueError) as exc:
                why = f"not JSON: {exc}"
            if why:
                shown = repr(rec["extra"]) if len(repr(rec["extra"])) <= 80 else repr(rec["extra"])[:77] + "..."
                raise CatalogError(f"recording {ident}: field extra has a bad value {shown}: {why}")
        r.setdefault("first_seen", r["crawl_time"])
        return tuple(map(r.get, _REC_COLUMNS))

    def upsert_recordings(self, records: Iterable[dict[str, Any]]) -> int:
        """Insert or update recordings by (source, source_id), in one transaction.

        A re-crawled item is updated in place; ``first_seen`` keeps its first value.
        Every record is validated before anything is written, so a bad item leaves the
        catalogue untouched.
        """
        return self.upsert_rows([self._normalise_recording(r) for r in records])

    def upsert_rows(self, rows: list[tuple]) -> int:
        """``upsert_recordings`` for rows ``validate_recording`` returned (a caller that checked each
        item as it arrived, to set a bad one aside, does not pay for the check twice)."""
        if not rows:
            return 0
        # one row per key: the last version of an item in the batch wins
        rows = list({r[0]: r for r in rows}.values())
        arrays = {}
        for i, c in enumerate(_REC_COLUMNS):
            try:
                arrays[c] = pa.array([r[i] for r in rows], type=_REC_ARROW[c])
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                bad = next((r for r in rows if not _fits(r[i], _REC_ARROW[c])), rows[0])
                raise CatalogError(f"recording {bad[0]}: field {c} has a bad value {bad[i]!r}: {exc}") from exc
        incoming = pa.table(arrays)
        cols = ", ".join(_REC_COLUMNS)
        select = ", ".join(f"CAST({c} AS JSON)" if c == "extra" else c for c in _REC_COLUMNS)
        # stored audio survives a re-crawl unless the source's file changed (different md5)
        keep_audio = {c: (f"{c} = CASE WHEN excluded.{c} IS NOT NULL THEN excluded.{c} "
                          f"WHEN excluded.md5 IS DISTINCT FROM recordings.md5 THEN NULL ELSE recordings.{c} END")
                      for c in ("content_sha256", "audio_path")}
        updates = ", ".join(keep_audio.get(c, f"{c} = excluded.{c}") for c in _REC_COLUMNS
                            if c not in ("recording_id", "source", "source_id", "first_seen"))
        updates += "".join(f", {c} = CASE WHEN excluded.md5 IS DISTINCT FROM recordings.md5 OR (excluded.content_sha256 "
                           f"IS NOT NULL AND excluded.content_sha256 IS DISTINCT FROM recordings.content_sha256) THEN NULL "
                           f"ELSE recordings.{c} END" for c in ("audio_duration", "audio_sample_rate", "audio_channels"))
        updates += (", audio_variant = CASE WHEN excluded.content_sha256 IS NOT NULL THEN NULL "
                    "WHEN excluded.md5 IS DISTINCT FROM recordings.md5 THEN NULL ELSE recordings.audio_variant END")
        # bulk path: the batch is an Arrow table scanned by DuckDB (executemany runs one
        # statement per row and is ~100x slower); values still never enter the SQL text
        self.con.register("_sao_incoming", incoming)
        try:
            with self.transaction():
                # items already stored are updated (ON CONFLICT), the new ones appended by a plain
                # INSERT: the same result, and the usual crawl batch of new items skips the
                # conflict check's per-row index probe and update path
                self.con.execute(f"INSERT INTO recordings ({cols}) SELECT {select} FROM _sao_incoming "
                                 "WHERE recording_id IN (SELECT recording_id FROM recordings) "
                                 f"ON CONFLICT (recording_id) DO UPDATE SET {updates}")
                self.con.execute(f"INSERT INTO recordings ({cols}) SELECT {select} FROM _sao_incoming "
                                 "WHERE recording_id NOT IN (SELECT recording_id FROM recordings)")
        finally:
            self.con.unregister("_sao_incoming")
        return len(rows)

    def get_recording(self, recording_id: str) -> dict[str, Any] | None:
        cur = self.con.execute("SELECT * FROM recordings WHERE recording_id = ?", [recording_id])
        rows = cur.fetchall()
        if not rows:
            return None
        return dict(zip([d[0] for d in cur.description], rows[0]))

    # -- decisions -------------------------------------------------------------------------------
    def add_decisions(self, decisions: Sequence[Decision]) -> int:
        """Append decisions (validated first; all or nothing)."""
        now = _utcnow()
        rows = []
        for d in decisions:
            if d.verdict not in VERDICTS:
                raise CatalogError(f"decision for {d.recording_id} at {d.stage}: verdict {d.verdict!r} "
                                   f"is not one of {', '.join(VERDICTS)}")
            if not d.reason:
                raise CatalogError(f"decision for {d.recording_id} at {d.stage}: a reason is required")
            if d.model_name and not (d.checkpoint_sha256 or d.uncalibrated):
                raise CatalogError(f"decision for {d.recording_id} at {d.stage}: model {d.model_name} needs a "
                                   "checkpoint sha256, or uncalibrated=True")
            rows.append(d)
        if not rows:
            return 0
        table = pa.table({
            "recording_id": pa.array([d.recording_id for d in rows], pa.string()),
            "stage": pa.array([d.stage for d in rows], pa.string()),
            "verdict": pa.array([d.verdict for d in rows], pa.string()),
            "reason": pa.array([d.reason for d in rows], pa.string()),
            "model_name": pa.array([d.model_name for d in rows], pa.string()),
            "checkpoint_sha256": pa.array([d.checkpoint_sha256 for d in rows], pa.string()),
            "threshold": pa.array([d.threshold for d in rows], pa.float64()),
            "uncalibrated": pa.array([bool(d.uncalibrated) for d in rows], pa.bool_()),
            "config_hash": pa.array([d.config_hash for d in rows], pa.string()),
            "details": pa.array([json.dumps(d.details, sort_keys=True) if d.details is not None else None
                                 for d in rows], pa.string()),
            "decided_at": pa.array([now] * len(rows), pa.timestamp("us")),
        })
        self.con.register("_sao_decisions", table)
        try:
            with self.transaction():
                self.con.execute(
                    "INSERT INTO decisions (recording_id, stage, verdict, reason, model_name, checkpoint_sha256, "
                    "threshold, uncalibrated, config_hash, details, decided_at) SELECT recording_id, stage, verdict, "
                    "reason, model_name, checkpoint_sha256, threshold, uncalibrated, config_hash, "
                    "CAST(details AS JSON), decided_at FROM _sao_decisions")
        finally:
            self.con.unregister("_sao_decisions")
        return len(rows)

    def latest_decision_map(self, stage: str) -> dict[str, dict[str, Any]]:
        """{recording_id: its latest decision at ``stage``} (details decoded)."""
        cur = self.con.execute("SELECT recording_id, verdict, reason, details, decision_id FROM latest_decisions "
                               "WHERE stage = ?", [stage])
        return {r[0]: {"verdict": r[1], "reason": r[2], "details": json.loads(r[3]) if r[3] else None,
                       "decision_id": r[4]} for r in cur.fetchall()}

    def latest_decisions(self, stage: str | None = None) -> list[dict[str, Any]]:
        """The most recent decision per (recording, stage)."""
        return self.query("SELECT * FROM latest_decisions WHERE (? IS NULL OR stage = ?) "
                          "ORDER BY recording_id, stage", [stage, stage])

    # -- the admission rule (migration 8: one definition, in the catalogue) ----------------------
    def admission(self, required_stages: Sequence[str]) -> list[dict[str, Any]]:
        """Every recording with why it is not admitted under ``required_stages`` (reason None when
        it is); the license gate and decode are always required."""
        return self.query("SELECT recording_id, reason, detail FROM admission(?) ORDER BY recording_id",
                          [list(required_stages)])

    def admitted_ids(self, required_stages: Sequence[str]) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT recording_id FROM admitted(?)",
                                               [list(required_stages)]).fetchall()}

    # -- takedowns -------------------------------------------------------------------------------
    def add_takedown(self, recording_id: str, reason: str, requested_by: str | None = None) -> int:
        """Record a take-down; an item already taken down keeps its first active record."""
        if not reason:
            raise CatalogError(f"takedown for {recording_id}: a reason is required")
        if ":" not in recording_id:
            raise CatalogError(f"takedown for {recording_id!r}: expected SOURCE:ID, e.g. freesound:12345")
        existing = self.con.execute("SELECT takedown_id FROM takedowns WHERE recording_id = ? AND status = ?",
                                    [recording_id, "active"]).fetchall()
        if existing:
            return existing[0][0]
        return self.con.execute(
            "INSERT INTO takedowns (recording_id, reason, requested_by, received_at) VALUES (?, ?, ?, ?) "
            "RETURNING takedown_id", [recording_id, reason, requested_by, _utcnow()]).fetchall()[0][0]

    def takedowns(self) -> list[dict[str, Any]]:
        cur = self.con.execute("SELECT * FROM takedowns ORDER BY takedown_id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    # -- crawl cursors ---------------------------------------------------------------------------
    def set_audio(self, recording_id: str, sha256: str, audio_path: str, variant: str) -> None:
        """Record the stored audio of a recording (after its file is complete under its final name).
        New content forgets what the old file was probed to hold: the decode stage probes it again."""
        self.con.execute("UPDATE recordings SET audio_duration = CASE WHEN content_sha256 IS NOT DISTINCT FROM ? "
                         "THEN audio_duration END, audio_sample_rate = CASE WHEN content_sha256 IS NOT DISTINCT "
                         "FROM ? THEN audio_sample_rate END, audio_channels = CASE WHEN content_sha256 IS NOT "
                         "DISTINCT FROM ? THEN audio_channels END, content_sha256 = ?, audio_path = ?, "
                         "audio_variant = ? WHERE recording_id = ?",
                         [sha256, sha256, sha256, sha256, audio_path, variant, recording_id])

    def set_probed(self, rows: Sequence[tuple[str, str, float, int, int]]) -> None:
        """(recording_id, content_sha256, duration, sample_rate, channels) as the decode stage read
        them from the stored file; a row whose content changed meanwhile is not applied."""
        for rid, sha, duration, sr, ch in rows:
            self.con.execute("UPDATE recordings SET audio_duration = ?, audio_sample_rate = ?, audio_channels = ? "
                             "WHERE recording_id = ? AND content_sha256 = ?", [duration, sr, ch, rid, sha])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a read query with parameters; rows as dicts."""
        cur = self.con.execute(sql, list(params))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def active_takedowns(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT recording_id FROM active_takedowns").fetchall()}

    # -- reporting and export --------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {t: self.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}  # noqa: S608

    def export_parquet(self, table: str, dest: str | os.PathLike) -> pathlib.Path:
        """Write one table to Parquet; the file appears under its final name only when complete."""
        if table not in TABLES:
            raise CatalogError(f"cannot export {table!r}: not a catalogue table ({', '.join(TABLES)})")
        import pyarrow.parquet as pq
        dest = pathlib.Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        arrow = self.con.sql(f"SELECT * FROM {table}").to_arrow_table()  # noqa: S608 (whitelisted)
        with atomic_path(dest) as tmp:
            pq.write_table(arrow, tmp)
        return dest
