"""The license gate as a pipeline stage (the rule itself: sao.licensing.gate, pure)."""
from __future__ import annotations

from ... import config as config_mod
from ...licensing.stage import STAGE, counts_table, run_license_gate
from ..stage import Plan, Stage, StageContext, Stats


class LicenseGate(Stage):
    name = STAGE
    reads = ("recordings", "decisions", "takedowns")
    writes = ("decisions:license_gate", "takedowns")

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        with ctx.catalog() as cat:
            st = run_license_gate(cat, config_mod.license_policy(ctx.cfg), config_hash=ctx.config_hash)
        # what this run decided (new or changed items): a rerun that changes nothing reports nothing;
        # the catalogue's whole standing is in details["kept"] / ["table"]
        out = Stats(self.name, items_in=st.written, passed=st.new_pass)
        for (source, category), n in st.new_rejected.items():
            out.reject(f"{source}:{category}", n)
        out.details = {"evaluated": st.evaluated, "written": st.written, "takedowns": st.takedowns,
                       "new_pass": st.new_pass,
                       "new_rejected": {f"{s}:{k}": n for (s, k), n in sorted(st.new_rejected.items())},
                       "kept": {f"{s}:{k}": n for (s, k), n in sorted(st.kept.items())},
                       "table": counts_table(st)}
        return out
