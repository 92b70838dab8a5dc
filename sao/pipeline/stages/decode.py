"""Decode every newly stored file: the facts (duration, rate, channels) every later decision uses,
or a reject for what does not decode (sao.audio.stage)."""
from __future__ import annotations

import logging

from ...audio.stage import STAGE, decode_files, plan_decode, store_decode
from ..stage import Plan, Stage, StageContext, Stats

log = logging.getLogger(__name__)


class Decode(Stage):
    name = STAGE
    reads = ("gate_admitted", "audio store")
    writes = ("decisions:decode", "recordings.audio_duration/sample_rate/channels")
    batched = True

    def plan(self, ctx: StageContext) -> Plan:
        with ctx.catalog(read_only=True) as cat:
            return Plan(plan_decode(cat, ctx.audio_store))

    def compute(self, ctx: StageContext, meta: dict, batch: list) -> list:
        return decode_files(batch, show_progress=False)

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        flat = [r for batch in results for r in batch]
        with ctx.catalog() as cat:
            out = store_decode(cat, flat, config_hash=ctx.config_hash)
        st = Stats(self.name, items_in=len(flat), passed=out["decoded"], audio_seconds=out["audio_seconds"])
        for rid, why in sorted(out["errors"].items()):
            log.warning("%s: does not decode, rejected: %s", rid, why)
            st.error(rid, why)
        st.reject("audio-corrupt", out["rejected"])
        return st
