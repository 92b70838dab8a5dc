"""The Free Music Archive as a pipeline source: an ``fma_metadata`` dump and its audio tree
(sao.sources.fma) read by the ``ingest_fma`` stage.

Every track is music, so nothing is screened for music: each admitted track's title and artist are
matched against the copyrighted-music catalogue instead (copyright review "catalogue"). The gate
reads the deed URL of ``raw_tracks.csv`` with the license title of ``tracks.csv`` beside it.

An unchanged dump is not read again: the digest of the last complete ingest (the dump's bytes and
audio listing, the license policy and the audio store) is kept in ``crawl_cursors`` (source
``fma``, query_key ``dump:<digest>``); ``RunOptions.refresh_cache`` reads it anyway.
"""
from __future__ import annotations

from typing import Any

from .. import config as config_mod
from ..pipeline.stage import Stage, StageContext, Stats
from .base import FolderIngest, Source

CURSOR_KIND = "dump"


def dump_root(ctx: StageContext):
    """The dump folder for this run (RunOptions.fma_dir, else [fma].metadata_dir), or None."""
    root = ctx.options.fma_dir or ctx.cfg.fma.metadata_dir
    return ctx.cfg.path(root) if root else None


class IngestFma(FolderIngest, Stage):
    name = "ingest_fma"
    reads = ("FMA dump (fma_metadata/, fma_large/)", "crawl_cursors")
    writes = ("recordings", "decisions:record", "decisions:audio", "audio store", "takedowns", "crawl_cursors")
    source, what = "fma", "the FMA dump"
    missing = "no [fma].metadata_dir configured (nor an FMA folder given)"
    cursor_kind = CURSOR_KIND

    def root(self, ctx: StageContext):
        return dump_root(ctx)

    def digest(self, root) -> str:
        from .fma import source_digest
        return source_digest(root)

    def ingest(self, cat, root, ctx: StageContext) -> Stats:
        from .fma import ingest_fma
        st = ingest_fma(cat, root, audio_store=ctx.audio_store, config_hash=ctx.config_hash,
                        policy=config_mod.license_policy(ctx.cfg))   # audio only for what the gate admits
        out = Stats(self.name, items_in=st.tracks + st.malformed, passed=st.tracks, audio_seconds=st.audio_seconds)
        out.reject("unusable-row", st.malformed)                 # not stored (no usable track_id, a NUL byte)
        out.reject("malformed-record", st.malformed_fields)      # stored, bad fields NULL, a record reject
        out.reject("audio-missing", st.audio_missing)
        out.reject("audio-corrupt", st.audio_corrupt)
        for label, why in list(st.refused.items())[:50]:
            out.error(label, why)
        out.details = {"tracks": st.tracks, "with_audio": st.with_audio, "withheld": st.withheld,
                       "audio_missing": st.audio_missing, "audio_corrupt": st.audio_corrupt,
                       "malformed": st.malformed, "malformed_fields": st.malformed_fields, "removed": st.removed,
                       "tracks_per_s": round(st.tracks / st.seconds, 1) if st.seconds else 0.0}
        return out


class FmaSource(Source):
    name = "fma"
    title = "FMA"
    gate_reads = "license_url"           # raw_tracks.csv's deed URL, with tracks.csv's license title
    music_screen = False                 # all of it is music: no screen, a catalogue match instead
    copyright_review = "catalogue"
    prompt_style = "fma"
    autoencoder_chunks = False           # paper 3.1: FMA tracks give only the high-fidelity extra chunks
    always_hifi = True

    def ingest_stage(self) -> Stage:
        return IngestFma()

    def prompt_inputs(self, rec: dict[str, Any]):
        from ..prompts import PromptInputs
        extra = rec.get("extra") or {}
        return PromptInputs("fma", title=rec.get("title") or "", artist=rec.get("author") or "",
                            album=extra.get("album") or "", genres=tuple(extra.get("genres") or ()),
                            year=str(extra.get("year") or ""))
