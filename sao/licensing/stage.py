"""The license_gate stage: run the pure gate over every catalogued recording and write one
decision per recording whose inputs changed since its last decision (so a rerun writes
nothing). An item that had passed and now fails (re-licensed, or its author opted out)
also gets a take-down, which every later stage and release must honour. A change of policy alone
([policy].model_use, the allowed licenses) re-decides every item but takes nothing down: the
recording did not change, and a use it suits again (or a release made for its old use) still may have it."""
from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter

from ..catalog import Catalog, Decision
from ..sources import source_for
from .gate import LicensePolicy, license_gate, shown
from .table import BY_ID

log = logging.getLogger(__name__)
STAGE = "license_gate"


@dataclasses.dataclass
class GateStats:
    evaluated: int = 0
    written: int = 0
    takedowns: int = 0
    kept: Counter = dataclasses.field(default_factory=Counter)       # (source, canonical) -> n
    rejected: Counter = dataclasses.field(default_factory=Counter)   # (source, category) -> n
    # the decisions this run wrote (new items, changed licenses or policy): what a run summary reports
    new_pass: int = 0
    new_rejected: Counter = dataclasses.field(default_factory=Counter)  # (source, category) -> n


def run_license_gate(cat: Catalog, policy: LicensePolicy, *, config_hash: str) -> GateStats:
    stats = GateStats()
    previous = cat.latest_decision_map(STAGE)
    # each recording's latest *pass*: a take-down is owed when what admitted it changed, even if a policy
    # change rejected it in between (a later opt-out or re-license must still reach the releases it is in)
    last_pass = {rid: json.loads(d) if d else None for rid, d in cat.con.execute(
        "SELECT recording_id, details FROM decisions WHERE stage = ? AND verdict = 'pass' "
        "QUALIFY row_number() OVER (PARTITION BY recording_id ORDER BY decision_id DESC) = 1", [STAGE]).fetchall()}
    taken = cat.active_takedowns()
    rows = cat.con.execute(
        "SELECT recording_id, source, license_raw, license_url, "
        "json_extract_string(extra, '$.license_title') AS license_title, "
        # the preference as JSON, decoded below: json_extract_string would turn a list or a number
        # into text that could look like a value; the gate refuses anything not a known string
        "json_extract(extra, '$.gen_ai_preference') AS gen_ai FROM recordings").fetchall()
    decisions, new_takedowns = [], []
    policy_desc = policy.describe()
    reads: dict[str, str] = {}
    # the gate is a pure function of these texts and the policy: most recordings share a license and
    # a preference, so each distinct combination is judged once (its decision is still per recording)
    judged: dict[tuple, tuple] = {}
    for rid, source, raw, url, title, gen_ai_json in rows:
        stats.evaluated += 1
        if source not in reads:
            reads[source] = source_for(source).gate_reads
        by_url = reads[source] == "license_url"
        key = (by_url, url, title, gen_ai_json) if by_url else (by_url, raw, gen_ai_json)
        if key not in judged:
            gen_ai = json.loads(gen_ai_json) if gen_ai_json is not None else None
            if by_url:                             # a deed URL, with the published license title beside it
                judged[key] = (gen_ai, license_gate(url, title, gen_ai_preference=gen_ai, policy=policy))
            else:                                  # the source's license field as it says it
                judged[key] = (gen_ai, license_gate(raw, None, gen_ai_preference=gen_ai, policy=policy))
        gen_ai, result = judged[key]
        if result.verdict == "pass":
            stats.kept[(source, result.canonical)] += 1
        else:
            stats.rejected[(source, result.category)] += 1
        # what the catalogue's admission view compares with the recording's current values: a
        # decision stops counting the moment any of these changes (sao/catalog/migrations.py, 8)
        inputs = {"license": raw, "license_url": url, "license_title": title, "gen_ai_preference": gen_ai,
                  "policy": policy_desc}
        prev = previous.get(rid)
        if prev and prev["details"] and prev["details"].get("inputs") == inputs and prev["reason"] == result.reason:
            continue
        decisions.append(Decision(rid, STAGE, result.verdict, result.reason, config_hash=config_hash,
                                  details={"inputs": inputs, "canonical": result.canonical}))
        if result.verdict == "pass":
            stats.new_pass += 1
        else:
            stats.new_rejected[(source, result.category)] += 1
        if (rid in last_pass and result.verdict == "reject" and rid not in taken
                and not _only_policy_changed(last_pass[rid], inputs)):
            new_takedowns.append((rid, f"{result.category}-after-admission: {result.reason}"))
    with cat.transaction():
        stats.written = cat.add_decisions(decisions)
        for rid, reason in new_takedowns:
            cat.add_takedown(rid, reason, "license_gate")
            log.warning("%s: take-down recorded (%s)", rid, reason)
    stats.takedowns = len(new_takedowns)
    return stats


def _only_policy_changed(prev_details: dict | None, inputs: dict) -> bool:
    """The previous decision read this recording's current values under another policy, so the policy made
    the difference. Same values and same policy (a fixed gate rule) is the item's own change, and so is a
    decision that recorded no inputs (older catalogues): those still take the recording down."""
    prev_inputs = (prev_details or {}).get("inputs")
    if not isinstance(prev_inputs, dict) or prev_inputs.get("policy") == inputs["policy"]:
        return False
    return ({k: v for k, v in prev_inputs.items() if k != "policy"}
            == {k: v for k, v in inputs.items() if k != "policy"})


def decided_under_other_policy(cat: Catalog, policy: LicensePolicy) -> dict[str, int]:
    """{model use (or what else differs): recordings} whose latest gate decision recorded a policy other
    than POLICY: the gate has not yet decided them for it (``sao gate`` does). A decision that recorded no
    policy is not compared, as the admission view compares only the inputs a decision recorded."""
    want = policy.describe()
    stale: Counter = Counter()
    for policy_json, n in cat.con.execute(
            "SELECT json_extract(details, '$.inputs.policy') AS p, count(*) FROM latest_decisions "
            "WHERE stage = ? AND coalesce(json_exists(details, '$.inputs.policy'), false) GROUP BY p",
            [STAGE]).fetchall():
        recorded = json.loads(policy_json)
        if recorded == want:
            continue
        use = recorded.get("model_use") if isinstance(recorded, dict) else None
        if not isinstance(use, str):
            label = "no model use (decided before [policy].model_use existed)"
        elif use != policy.model_use:
            label = f"model use {shown(use)}"
        else:
            label = f"model use {shown(use)} with other allowed licenses or table"
        stale[label] += n
    return dict(sorted(stale.items()))


def counts_table(stats: GateStats) -> str:
    """A plain-text table of kept licenses and rejection reasons per source."""
    lines = [f"{'source':10s} {'outcome':8s} {'license / reason':32s} {'n':>6s}"]
    for (source, lic), n in sorted(stats.kept.items()):
        lines.append(f"{source:10s} {'kept':8s} {(BY_ID[lic].spdx if lic in BY_ID else lic):32s} {n:6d}")     # SPDX, as every output
    for (source, cat_), n in sorted(stats.rejected.items()):
        lines.append(f"{source:10s} {'rejected':8s} {cat_:32s} {n:6d}")
    kept, rej = sum(stats.kept.values()), sum(stats.rejected.values())
    lines.append(f"{'total':10s} {'':8s} {'kept ' + str(kept) + ', rejected ' + str(rej):32s} {kept + rej:6d}")
    return "\n".join(lines)


def summary_json(stats: GateStats) -> str:
    return json.dumps({"kept": {f"{s}:{k}": n for (s, k), n in stats.kept.items()},
                       "rejected": {f"{s}:{k}": n for (s, k), n in stats.rejected.items()}}, sort_keys=True)


def undecided_policy_problem(cat: Catalog, policy: LicensePolicy) -> str | None:
    """Why a release or shards for POLICY must wait (``decided_under_other_policy`` is not empty), or None:
    the admission view trusts a gate decision while its recording is unchanged, whatever policy made it."""
    stale = decided_under_other_policy(cat, policy)
    if not stale:
        return None
    return (f"the license gate has not decided for model use {policy.model_use} yet: the latest gate decisions of "
            f"{sum(stale.values())} recording(s) were made under another policy ("
            + "; ".join(f"{k}: {n}" for k, n in stale.items()) + "); run `sao gate` first")
