"""The source protocol: everything the pipeline needs to know about where recordings come from.

Freesound, FMA and a local folder each implement ``Source`` in one file; the rest of the
pipeline asks the source (``source_for(rec["source"])``) instead of branching on its name.
Adding a source is one file with one ``Source`` subclass and one line in ``SOURCES``
(sao/sources/__init__.py), plus its name in the catalogue's ``source`` CHECK.

``rec`` below is a recording as the catalogue stores it (a ``recordings`` row as a dict, its
``extra`` decoded), or the subset the shard plan and the release read: ``source``,
``source_id``, ``title``, ``author``, ``description``, ``tags``, ``license_canonical``,
``license_url``, ``page_url`` and ``extra``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..pipeline.stage import Stage
    from ..prompts.builder import PromptInputs

GATE_READS = ("license_raw", "license_url")
COPYRIGHT_REVIEWS = ("content", "catalogue")


class Source:
    name: ClassVar[str] = ""                  # the catalogue's `source` value
    title: ClassVar[str] = ""                 # how people call it ("Freesound")
    # what the license gate reads: "license_raw" (Freesound's license name) or "license_url" (a deed URL,
    # with the published title beside it)
    gate_reads: ClassVar[str] = "license_url"
    music_screen: ClassVar[bool] = True        # PANNs screens its audio for music (then copyright review)
    # "content": flagged audio goes to content detection; "catalogue": metadata matched against the
    # copyrighted-music catalogue (FMA: it is all music)
    copyright_review: ClassVar[str] = "content"
    # the prompt builder's style (sao.prompts.builder.PROMPT_STYLES): "freesound" draws from title,
    # description and tags; "fma" from year, genres, album, title and artist
    prompt_style: ClassVar[str] = "freesound"
    # the shard plan's chunk policy (paper 3.1): regular 5 s autoencoder chunks (one per full 5 s, up
    # to [shards].ae_max_chunks), and whether every recording is high-fidelity (its extra chunks then
    # need no high-frequency check; otherwise only stereo >= 48 kHz audio is a candidate)
    autoencoder_chunks: ClassVar[bool] = True
    always_hifi: ClassVar[bool] = False
    # the source's own attribution text, one line per item, in the release report (None: the TASL
    # line in attribution-tasl.csv is the only one)
    own_attribution_file: ClassVar[str | None] = None

    def ingest_stage(self) -> "Stage | None":
        """The stage that lists/crawls the source and records its items (license fields, audio)."""
        return None

    def audio_stage(self) -> "Stage | None":
        """A stage that fetches audio after the license gate (Freesound's download), if any."""
        return None

    def attribution_line(self, rec: dict[str, Any]) -> str:
        """One line naming title, author, source link and license (with version and deed link)."""
        from ..licensing.attribution import attribution_line
        return attribution_line(title=rec.get("title"), author=rec.get("author"), url=rec.get("page_url"),
                                license_canonical=rec.get("license_canonical") or "unknown",
                                license_url=rec.get("license_url"))

    def prompt_inputs(self, rec: dict[str, Any]) -> "PromptInputs":
        """What the prompt builder draws from (paper 3.2); the default is the sound style."""
        from ..prompts import PromptInputs
        return PromptInputs(self.prompt_style, title=rec.get("title") or "",
                            description=rec.get("description") or "", tags=tuple(rec.get("tags") or ()))

    def __repr__(self) -> str:
        return f"<source {self.name}>"


def check_source(src: Source) -> Source:
    """A Source whose declarations are ones the pipeline knows (a typo is an error at import)."""
    from ..prompts.builder import PROMPT_STYLES
    problems = [f"{k} {v!r} not one of {allowed}" for k, v, allowed in (
        ("gate_reads", src.gate_reads, GATE_READS), ("copyright_review", src.copyright_review, COPYRIGHT_REVIEWS),
        ("prompt_style", src.prompt_style, tuple(PROMPT_STYLES))) if v not in allowed]
    if not src.name:
        problems.append("no name")
    if problems:
        raise TypeError(f"source {type(src).__name__}: {'; '.join(problems)}")
    return src


# -- the digest of what an ingest last read completely (a crawl_cursors row per source) ---------------
def input_key(*parts: Any) -> str:
    """sha256 over what decides an ingest's outcome (the input's digest, the license policy, the store)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def last_ingest_key(cat: "Catalog", source: str, kind: str) -> str | None:
    """The key recorded by the last complete ingest of ``source`` (``crawl_cursors`` row
    ``(source, '<kind>:<key>')``: the table has no text column, so the key is in the query_key)."""
    rows = cat.con.execute("SELECT query_key FROM crawl_cursors WHERE source = ? AND starts_with(query_key, ?) "
                           "ORDER BY updated_at DESC LIMIT 1", [source, f"{kind}:"]).fetchall()
    return rows[0][0][len(kind) + 1:] if rows else None


def unchanged_since_last_ingest(ctx, source: str, kind: str, key: str) -> bool:
    """Whether the last complete ingest of ``source`` into ``ctx``'s catalogue read what ``key`` names
    (never, with ``RunOptions.refresh_cache``, or before the catalogue exists)."""
    if ctx.options.refresh_cache or not ctx.cfg.catalog_path.exists():
        return False
    with ctx.catalog(read_only=True) as cat:
        return last_ingest_key(cat, source, kind) == key


def record_ingest_key(cat: "Catalog", source: str, kind: str, key: str) -> None:
    """Remember that an ingest of ``source`` read everything ``key`` names (replacing the last one)."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with cat.transaction():
        cat.con.execute("DELETE FROM crawl_cursors WHERE source = ? AND starts_with(query_key, ?)",
                        [source, f"{kind}:"])
        cat.set_cursor(source, f"{kind}:{key}", now, 1)


class FolderIngest:
    """The ingest of a source read whole from one folder (an FMA dump, a local collection): skipped
    when nothing is configured, and not read again while the folder's digest, the license policy and
    the audio store are those of its last complete ingest (``RunOptions.refresh_cache`` reads it anyway).
    Mixed into a ``Stage``; subclasses give ``source``, ``what``, ``missing``, ``root``, ``digest``, ``ingest``."""
    optional = True           # a source nobody configured is not a warning
    source: ClassVar[str] = ""
    what: ClassVar[str] = ""              # "the FMA dump", for messages
    missing: ClassVar[str] = ""           # why it is skipped when nothing is configured
    cursor_kind: ClassVar[str] = "dump"
    # the source's own "this folder cannot be read" error: the stage reports it and the run goes on
    folder_error: ClassVar[tuple] = ()

    def root(self, ctx):
        raise NotImplementedError

    def digest(self, root) -> str:
        raise NotImplementedError

    def ingest(self, cat, root, ctx):
        """Read the folder into the catalogue; the ``Stats`` of it."""
        raise NotImplementedError

    def skip(self, ctx) -> str | None:
        return None if self.root(ctx) else self.missing

    def plan(self, ctx):
        from .. import config as config_mod
        from ..pipeline.stage import Plan
        root = self.root(ctx)
        if root is None:
            return Plan(skipped=self.missing)
        try:
            digest = self.digest(root)
        except self.folder_error as exc:
            return self._unreadable(root, exc)
        key = input_key(digest, config_mod.license_policy(ctx.cfg).describe(), str(ctx.audio_store))
        if unchanged_since_last_ingest(ctx, self.source, self.cursor_kind, key):
            return Plan(skipped=f"{self.what} in {root} is unchanged since its last complete ingest "
                                f"(digest {key[:12]}); refresh_cache reads it again")
        return Plan(meta={"root": str(root), "key": key})

    def _unreadable(self, root, exc):
        import logging

        from ..pipeline.stage import Plan
        logging.getLogger(__name__).warning("%s %s cannot be read, nothing ingested from it: %s", self.what, root, exc)
        return Plan(skipped=f"{self.what} {root} cannot be read: {exc}")

    def store(self, ctx, plan, results):
        import time
        t0 = time.perf_counter()
        with ctx.catalog() as cat:
            try:
                out = self.ingest(cat, plan.meta["root"], ctx)
            except self.folder_error as exc:
                from ..pipeline.stage import Stats
                return Stats(self.name, ingest=True, errors={plan.meta["root"]: str(exc)},
                             skipped=self._unreadable(plan.meta["root"], exc).skipped)
            if not out.details.get("unreadable"):   # a transient OSError: read the folder again next run
                record_ingest_key(cat, self.source, self.cursor_kind, plan.meta["key"])
        out.ingest, out.seconds = True, time.perf_counter() - t0
        out.details["digest"] = plan.meta["key"]
        return out
