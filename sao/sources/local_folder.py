"""A local folder as a source ("local"): your own collection of CC-licensed recordings.

The folder holds audio files (at any depth) and what they are, either in ``metadata.csv``

    file,title,author,license_url,source_url[,id,description,tags]
    rain/roof.wav,Rain on a tin roof,Ada,https://creativecommons.org/licenses/by/4.0/,https://example.org/rain

or in one JSON sidecar per audio file (``roof.wav.json`` or ``roof.json``, the same keys; a sidecar
describes the file beside it). ``tags`` are comma- or semicolon-separated (a list in a sidecar).
Set ``[local].folder`` (or pass ``RunOptions.local_dir``) and the ``ingest_local`` stage records it.

Everything in the folder is hostile input (sao.sources.local_metadata): a bad field is stored NULL
with a ``record`` reject (a path that leaves the folder: ``malformed-record: file: ...``); an entry
with no usable id is counted, logged and skipped, the rest ingested. The license is the deed URL,
judged by the same license gate as every source (this only stores ``license_url``/``license_raw``);
audio is copied into the content-addressed store only for entries the gate's pure function admits
(so nothing it would reject is ever stored), and its duration is left to the decode stage: the
metadata names none. ``source_id`` is the ``id`` column or the file's path (``local:rain/roof.wav``).
An unchanged rerun writes nothing; an entry gone from the folder gets a take-down, as an FMA
track gone from its dump does. Like FMA, an unchanged folder is not read again (``crawl_cursors``
``local``/``folder:<digest>``) unless ``RunOptions.refresh_cache``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import pathlib
import time
from typing import Any

from .. import config as config_mod
from ..pipeline.stage import Stage, StageContext, Stats
from .base import FolderIngest, Source
from .local_metadata import (MAX_AUDIO_BYTES, SOURCE, LocalFolderError, checked_entry, folder_digest, read_folder,
                             regular_file)

log = logging.getLogger(__name__)
CURSOR_KIND = "folder"
__all__ = ["LocalFolderError", "LocalFolderSource", "LocalStats", "ingest_local"]

# what an upsert would change (crawl_time says when, not what): an entry equal in all of these is not written
_COMPARED = ("title", "author", "description", "tags", "license_raw", "license_canonical", "license_url", "page_url",
             "audio_url", "md5", "content_sha256", "audio_path", "extra")


@dataclasses.dataclass
class LocalStats:
    items: int = 0             # entries stored (well-formed or not)
    written: int = 0           # ... of which new or changed (an unchanged rerun writes none)
    copied: int = 0            # audio copied into the store (the gate admits the entry)
    withheld: int = 0          # audio present but not read: the gate (or a take-down, a bad record) refuses it
    audio_missing: int = 0
    audio_corrupt: int = 0
    unreadable: int = 0        # ... of which an OSError (disk full, permissions): tried again next run
    malformed: int = 0         # entries that could not be stored (no usable id, a NUL byte, an unreadable sidecar)
    malformed_fields: int = 0  # entries stored with bad fields left NULL and a ``record`` reject
    ignored: int = 0           # JSON files that describe no audio, sidecars of files metadata.csv describes
    removed: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    refused: dict = dataclasses.field(default_factory=dict)    # entry -> why it could not be stored


def _as_stored(rec: dict[str, Any]) -> tuple:
    return tuple(json.loads(json.dumps(rec.get(c), sort_keys=True)) if c == "extra" and rec.get(c) is not None
                 else (list(rec.get(c) or []) if c == "tags" else rec.get(c)) for c in _COMPARED)


def _stored(cat) -> dict[str, tuple]:
    out = {}
    for row in cat.query(f"SELECT source_id, {', '.join(_COMPARED)} FROM recordings "  # noqa: S608 (fixed names)
                         "WHERE source = ?", [SOURCE]):
        row["extra"] = json.loads(row["extra"]) if row["extra"] is not None else None
        out[row["source_id"]] = _as_stored(row)
    return out


def ingest_local(cat, root: str | os.PathLike, *, audio_store: str | os.PathLike, config_hash: str,
                 policy=None) -> LocalStats:
    """Ingest a local folder into the catalogue (see the module docstring)."""
    from ..audio import AudioDecodeError, file_digests, probe
    from ..catalog import Catalog, CatalogError, Decision
    from ..licensing import LicensePolicy, license_gate
    from . import record_checks as rc
    from .fma import decode_reason, store_copy
    t0 = time.perf_counter()
    policy = policy or LicensePolicy()
    root, store = pathlib.Path(root), pathlib.Path(audio_store)
    stats = LocalStats()
    entries, refused, stats.ignored = read_folder(root)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    previous, already, stored = cat.latest_decision_map("audio"), cat.active_takedowns(), _stored(cat)
    records, decisions, problems, present = [], [], {}, {}
    for label, raw, sidecar_audio in entries:
        try:
            rec, bad, path = checked_entry(root, label, raw, sidecar_audio, now)
            if rec["source_id"] in present:
                raise rc.UnusableItem(f"id {rec['source_id']!r} is also {present[rec['source_id']]}")
            present[rec["source_id"]] = label
            Catalog.validate_recording(rec)          # what the catalogue refuses (a NUL byte...) per entry
        except (rc.UnusableItem, CatalogError) as exc:
            refused[label] = str(exc)
            continue
        rid, rel = f"{SOURCE}:{rec['source_id']}", rec["audio_url"]
        # the same pure gate, on the same inputs, as the license_gate stage will run (gate_reads "license_url")
        admissible = (not bad and rid not in already
                      and license_gate(rec["license_url"], None, policy=policy).verdict == "pass")
        reason = None
        if path is None:
            pass                                     # the file field is bad: its record reject says why
        elif not regular_file(path):                 # absent, or a FIFO/device: never opened
            reason, stats.audio_missing = f"audio-missing: {rel} not found (or not a plain file)", \
                stats.audio_missing + 1
        elif not admissible:
            stats.withheld += 1                      # never read: nothing the gate refuses is stored
        elif path.stat().st_size > MAX_AUDIO_BYTES:
            reason, stats.audio_corrupt = (f"audio-corrupt: {rel} is larger than {MAX_AUDIO_BYTES >> 20} MB",
                                           stats.audio_corrupt + 1)
        else:
            try:
                info = probe(path)
                sha, md5 = file_digests(path)
                dst = store_copy(path, store, sha)
                rec.update(md5=md5, content_sha256=sha, audio_path=dst.relative_to(store).as_posix())
                stats.copied += 1
                stats.audio_seconds += info.duration
            except AudioDecodeError as exc:
                reason, stats.audio_corrupt = decode_reason(path, rel, exc), stats.audio_corrupt + 1
            except (OSError, ValueError) as exc:     # unreadable, or a type the store does not keep
                reason, stats.audio_corrupt = f"audio-corrupt: cannot store {rel}: {exc}", stats.audio_corrupt + 1
                stats.unreadable += isinstance(exc, OSError)
        if reason:
            if (previous.get(rid) or {}).get("reason") != reason:
                log.warning("%s: %s", rid, reason)
                decisions.append(Decision(rid, "audio", "reject", reason, config_hash=config_hash))
        elif path is not None and rid in previous and previous[rid]["verdict"] == "reject":
            decisions.append(Decision(rid, "audio", "pass", "audio-present", config_hash=config_hash))
        if stored.get(rec["source_id"]) != _as_stored(rec):
            records.append(rec)
        problems[rid] = bad
        stats.items += 1
        stats.malformed_fields += bool(bad)
    for label, why in refused.items():
        log.error("local folder %s: skipping malformed entry: %s", label, why)
    stats.malformed, stats.refused = len(refused), dict(refused)
    decisions += rc.record_decisions(problems, cat.latest_decision_map(rc.STAGE), config_hash=rc.RULES_VERSION)
    with cat.transaction():
        cat.upsert_recordings(records)
        cat.add_decisions(decisions)
        for sid in sorted(set(stored) - set(present)):
            if f"{SOURCE}:{sid}" not in already:
                cat.add_takedown(f"{SOURCE}:{sid}", "removed-at-source: no longer in the local folder", "crawl")
                stats.removed += 1
    stats.written = len(records)
    stats.seconds = time.perf_counter() - t0
    return stats


def folder(ctx: StageContext) -> pathlib.Path | None:
    """The folder for this run (RunOptions.local_dir, else [local].folder), or None."""
    root = ctx.options.local_dir or ctx.cfg.local.folder
    return ctx.cfg.path(root) if root else None


NO_FOLDER = "no [local].folder configured (nor a folder given)"


class IngestLocal(FolderIngest, Stage):
    name = "ingest_local"
    reads = ("local folder (metadata.csv, JSON sidecars, audio)", "crawl_cursors")
    writes = ("recordings", "decisions:record", "decisions:audio", "audio store", "takedowns", "crawl_cursors")
    source, what, missing, cursor_kind = SOURCE, "the local folder", NO_FOLDER, CURSOR_KIND
    folder_error = (LocalFolderError,)

    def root(self, ctx: StageContext):
        return folder(ctx)

    def digest(self, root) -> str:
        if not root.is_dir():
            raise LocalFolderError(f"{root}: not a folder")
        return folder_digest(root)

    def ingest(self, cat, root, ctx: StageContext) -> Stats:
        st = ingest_local(cat, root, audio_store=ctx.audio_store, config_hash=ctx.config_hash,
                          policy=config_mod.license_policy(ctx.cfg))
        out = Stats(self.name, items_in=st.items + st.malformed, passed=st.items, audio_seconds=st.audio_seconds)
        out.reject("unusable-entry", st.malformed)
        out.reject("malformed-record", st.malformed_fields)
        out.reject("audio-missing", st.audio_missing)
        out.reject("audio-corrupt", st.audio_corrupt)
        for label, why in list(st.refused.items())[:50]:
            out.error(label, why)
        out.details = {k: v for k, v in dataclasses.asdict(st).items() if k not in ("refused", "seconds")}
        return out


class LocalFolderSource(Source):
    name = SOURCE
    title = "local folder"
    gate_reads = "license_url"           # the deed URL of metadata.csv / the sidecar
    music_screen = True                  # anything may be music: screened, then content detection
    copyright_review = "content"
    prompt_style = "freesound"           # sounds described by title, description and tags
    autoencoder_chunks = True
    always_hifi = False

    def ingest_stage(self) -> Stage:
        return IngestLocal()
