"""Catalog: the one place every stage reads recordings from and writes decisions to.

All SQL takes values only as parameters. The few identifiers that are interpolated (table
names for export and counts) come from the fixed ``TABLES`` tuple, never from input.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import pathlib
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import duckdb
import pyarrow as pa

from ..licensing import canonical_license
from .migrations import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

TABLES = ("recordings", "decisions", "takedowns", "releases", "release_items", "crawl_cursors", "runs",
          "schema_migrations")
VERDICTS = ("pass", "reject", "review", "flag")

_REC_COLUMNS = ("recording_id", "source", "source_id", "title", "author", "description", "tags", "duration",
                "sample_rate", "channels", "license_raw", "license_canonical", "license_url", "page_url",
                "audio_url", "preview_url", "md5", "content_sha256", "audio_path", "created_at", "crawl_time",
                "first_seen", "extra")
_REC_REQUIRED = ("source", "source_id", "crawl_time")
_REC_ARROW = {c: pa.string() for c in _REC_COLUMNS}
_REC_ARROW.update(tags=pa.list_(pa.string()), duration=pa.float64(), sample_rate=pa.int32(), channels=pa.int32(),
                  created_at=pa.timestamp("us"), crawl_time=pa.timestamp("us"), first_seen=pa.timestamp("us"))


def _fits(value: Any, typ: pa.DataType) -> bool:
    try:
        pa.array([value], type=typ)
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False


class CatalogError(ValueError):
    """Bad input to the catalogue; the message names the item and the reason."""


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


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Catalog:
    def __init__(self, path: str | os.PathLike, *, read_only: bool = False):
        self.path = pathlib.Path(path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(self.path), read_only=read_only)
        if not read_only:
            self.migrate()

    # -- lifecycle -------------------------------------------------------------------------------
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

    # -- recordings ------------------------------------------------------------------------------
    @staticmethod
    def _normalise_recording(rec: dict[str, Any]) -> tuple:
        missing = [k for k in _REC_REQUIRED if rec.get(k) in (None, "")]
        ident = f"{rec.get('source')}:{rec.get('source_id')}"
        if missing:
            raise CatalogError(f"recording {ident}: missing required field(s) {', '.join(missing)}")
        unknown = set(rec) - set(_REC_COLUMNS)
        if unknown:
            raise CatalogError(f"recording {ident}: unknown field(s) {', '.join(sorted(unknown))}")
        if rec["source"] not in ("freesound", "fma", "local"):
            raise CatalogError(f"recording {ident}: source must be freesound, fma or local")
        for key in ("title", "author", "description"):
            if isinstance(rec.get(key), str) and "\x00" in rec[key]:
                raise CatalogError(f"recording {ident}: {key} contains a NUL byte")
        r = dict(rec)
        r["source_id"] = str(r["source_id"])
        r["recording_id"] = f"{r['source']}:{r['source_id']}"
        if rec.get("recording_id") not in (None, r["recording_id"]):
            raise CatalogError(f"recording {ident}: recording_id {rec['recording_id']!r} does not match source:source_id")
        r.setdefault("license_canonical", canonical_license(r.get("license_raw")))
        tags = r.get("tags")
        if tags is not None and (not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags)):
            raise CatalogError(f"recording {ident}: tags must be a list of strings")
        r["tags"] = list(tags) if tags is not None else None
        if r.get("extra") is not None:
            r["extra"] = json.dumps(r["extra"], sort_keys=True)
        r.setdefault("first_seen", r["crawl_time"])
        return tuple(r.get(c) for c in _REC_COLUMNS)

    def upsert_recordings(self, records: Iterable[dict[str, Any]]) -> int:
        """Insert or update recordings by (source, source_id), in one transaction.

        A re-crawled item is updated in place; ``first_seen`` keeps its first value.
        Every record is validated before anything is written, so a bad item leaves the
        catalogue untouched.
        """
        rows = [self._normalise_recording(r) for r in records]
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
        updates = ", ".join(f"{c} = excluded.{c}" for c in _REC_COLUMNS
                            if c not in ("recording_id", "source", "source_id", "first_seen"))
        # bulk path: the batch is an Arrow table scanned by DuckDB (executemany runs one
        # statement per row and is ~100x slower); values still never enter the SQL text
        self.con.register("_sao_incoming", incoming)
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute(f"INSERT INTO recordings ({cols}) SELECT {select} FROM _sao_incoming "
                             f"ON CONFLICT (recording_id) DO UPDATE SET {updates}")
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
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
        rows = []
        now = _utcnow()
        for d in decisions:
            if d.verdict not in VERDICTS:
                raise CatalogError(f"decision for {d.recording_id} at {d.stage}: verdict {d.verdict!r} "
                                   f"is not one of {', '.join(VERDICTS)}")
            if not d.reason:
                raise CatalogError(f"decision for {d.recording_id} at {d.stage}: a reason is required")
            if d.model_name and not (d.checkpoint_sha256 or d.uncalibrated):
                raise CatalogError(f"decision for {d.recording_id} at {d.stage}: model {d.model_name} needs a "
                                   "checkpoint sha256, or uncalibrated=True")
            rows.append([d.recording_id, d.stage, d.verdict, d.reason, d.model_name, d.checkpoint_sha256,
                         d.threshold, d.uncalibrated, d.config_hash,
                         json.dumps(d.details, sort_keys=True) if d.details is not None else None, now])
        if not rows:
            return 0
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.executemany(
                "INSERT INTO decisions (recording_id, stage, verdict, reason, model_name, checkpoint_sha256, "
                "threshold, uncalibrated, config_hash, details, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows)
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
        return len(rows)

    def latest_decisions(self, stage: str | None = None) -> list[dict[str, Any]]:
        """The most recent decision per (recording, stage)."""
        sql = ("SELECT * FROM decisions WHERE (? IS NULL OR stage = ?) "
               "QUALIFY row_number() OVER (PARTITION BY recording_id, stage ORDER BY decision_id DESC) = 1 "
               "ORDER BY recording_id, stage")
        cur = self.con.execute(sql, [stage, stage])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    # -- takedowns -------------------------------------------------------------------------------
    def add_takedown(self, recording_id: str, reason: str, requested_by: str | None = None) -> int:
        if not reason:
            raise CatalogError(f"takedown for {recording_id}: a reason is required")
        return self.con.execute(
            "INSERT INTO takedowns (recording_id, reason, requested_by, received_at) VALUES (?, ?, ?, ?) "
            "RETURNING takedown_id", [recording_id, reason, requested_by, _utcnow()]).fetchall()[0][0]

    def active_takedowns(self) -> set[str]:
        return {r[0] for r in self.con.execute(
            "SELECT recording_id FROM takedowns WHERE status = ?", ["active"]).fetchall()}

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
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        try:
            pq.write_table(arrow, tmp)
            os.replace(tmp, dest)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise
        return dest
