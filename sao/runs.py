"""Flow-run summaries in the catalogue (`runs` table) and the state `sao status` prints.

``summarize`` is pure: it turns the stats each stage returned into the run's items in, items
passed, rejections by reason and throughput. ``record_run`` writes one row; error text is
redacted of every secret first, so a token in an exception never reaches the catalogue.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import pathlib
import time
import uuid
from collections import Counter
from typing import Any, Iterable, Iterator

from .catalog import Catalog, CatalogInUse
from .log import redact  # noqa: F401 - the one redaction rule (sao.log), used here and by callers of sao.runs

RUN_STATUSES = ("completed", "failed")
log = logging.getLogger(__name__)


def summarize(flow: str, stages: dict[str, Any], seconds: float) -> dict[str, Any]:
    """items_in / passed / rejected {stage:reason: n} / throughput from the ``Stats`` the stages
    returned (sao.pipeline.stage.Stats.to_dict), whichever stages the flow ran. Items in are the
    sources' ingests (else the first stage's input); passed is what the last stage that ran kept."""
    rejected: Counter = Counter()
    stats = [v for v in stages.values() if isinstance(v, dict) and "stage" in v and "items_in" in v]
    ran = [v for v in stats if not v.get("skipped")]
    ingest = [v for v in ran if v.get("ingest")]
    items_in = sum(int(v["items_in"]) for v in ingest) if ingest else (int(ran[0]["items_in"]) if ran else None)
    passed = int(ran[-1]["passed"]) if ran else None
    for v in ran:
        for reason, n in (v.get("rejected") or {}).items():
            rejected[f"{v['stage']}:{reason}"] += int(n)
    if flow == "train":
        items_in = sum(int(v.get("step") or 0) for v in stages.values() if isinstance(v, dict))
    throughput: dict[str, Any] = {"seconds": round(seconds, 2)}
    if items_in:
        throughput["items_per_s"] = round(items_in / seconds, 2) if seconds else 0.0
    for v in ran:
        for key in ("items_per_s", "audio_s_per_s"):
            if v.get(key):
                throughput[f"{v['stage']}.{key}"] = v[key]
    return {"items_in": items_in, "passed": passed, "rejected": dict(sorted(rejected.items())),
            "throughput": throughput}


def record_run(cat: Catalog, *, flow: str, started: dt.datetime, status: str, stages: dict[str, Any],
               seconds: float, config_hash: str, flow_run_id: str | None = None, task_runner: str | None = None,
               cache_hits: int | None = None, error: str | None = None, secrets: Iterable[str | None] = ()) -> str:
    if status not in RUN_STATUSES:
        raise ValueError(f"run status {status!r} is not one of {RUN_STATUSES}")
    s = summarize(flow, stages, seconds)
    run_id = uuid.uuid4().hex
    secrets = list(secrets)
    stages_json = redact(json.dumps(stages, default=str, sort_keys=True), secrets)
    cat.con.execute(
        "INSERT INTO runs (run_id, flow, started_at, finished_at, status, items_in, passed, rejected, throughput, "
        "config_hash, flow_run_id, task_runner, duration_s, stages, cache_hits, error) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, flow, started, dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), status, s["items_in"],
         s["passed"], json.dumps(s["rejected"]), json.dumps(s["throughput"]), config_hash, flow_run_id,
         task_runner, round(seconds, 3), stages_json, cache_hits,
         redact(error, secrets)[:2000] if error else None])
    return run_id


@dataclasses.dataclass
class RunRecording:
    stages: dict[str, Any] = dataclasses.field(default_factory=dict)   # filled by the run as it goes
    cache_hits: int | None = None
    run_id: str | None = None


@contextlib.contextmanager
def recording(catalog_path: str | pathlib.Path, *, flow: str, config_hash: str, task_runner: str | None,
              secrets: Iterable[str | None] = (), flow_run_id: str | None = None, only_if_exists: bool = False
              ) -> Iterator[RunRecording]:
    """Time a run and, when it ends (failed runs included), write its summary from the stages it
    filled in. A summary that cannot be written never hides the run's own error."""
    rec = RunRecording()
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    t0 = time.perf_counter()
    status, error = "failed", None
    try:
        yield rec
        status = "completed"
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if not (only_if_exists and not pathlib.Path(catalog_path).exists()):
            try:
                with Catalog(catalog_path) as cat:
                    rec.run_id = record_run(cat, flow=flow, started=started, status=status, stages=rec.stages,
                                            seconds=time.perf_counter() - t0, config_hash=config_hash,
                                            flow_run_id=flow_run_id, task_runner=task_runner,
                                            cache_hits=rec.cache_hits, error=error, secrets=secrets)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                # a run that failed on a busy catalogue says so itself: the same cause once, not twice
                quiet = status == "failed" and isinstance(exc, CatalogInUse)
                (log.debug if quiet else log.error)("could not record the %s run summary in %s: %s", flow,
                                                    catalog_path, exc)
                if status == "completed":
                    raise
            rec.stages["run_id"] = rec.run_id


def latest_runs(cat: Catalog, limit: int = 10) -> list[dict[str, Any]]:
    rows = cat.query("SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", [limit])
    for r in rows:
        for k in ("rejected", "throughput", "stages"):
            r[k] = json.loads(r[k]) if r.get(k) else {}
    return rows


def catalogue_state(cat: Catalog) -> dict[str, Any]:
    """What the catalogue holds now: recordings per source, admitted, pending work, newest release."""
    q = cat.query
    state: dict[str, Any] = {
        "schema_version": cat.schema_version(),
        "recordings": {r["source"]: r["n"] for r in q("SELECT source, count(*) AS n FROM recordings GROUP BY 1 ORDER BY 1")},
        "license_gate": {r["verdict"]: r["n"] for r in q("SELECT verdict, count(*) AS n FROM latest_decisions "
                                                         "WHERE stage = 'license_gate' GROUP BY 1 ORDER BY 1")},
        "with_audio": q("SELECT count(*) AS n FROM recordings WHERE audio_path IS NOT NULL")[0]["n"],
        "pending_download": q("SELECT count(*) AS n FROM gate_admitted WHERE NOT has_audio")[0]["n"],
        "playable": q("SELECT count(*) AS n FROM playable")[0]["n"],
        "review_queue": {r["status"]: r["n"] for r in q("SELECT status, count(*) AS n FROM review_queue GROUP BY 1 ORDER BY 1")},
        "active_takedowns": q("SELECT count(*) AS n FROM active_takedowns")[0]["n"],
    }
    rel = q("SELECT name, created_at, n_recordings FROM releases ORDER BY created_at DESC LIMIT 1")
    state["latest_release"] = rel[0] if rel else None
    return state


def freesound_state(cat: Catalog, *, requests_per_day: int, page_size: int, now: float | None = None
                    ) -> dict[str, Any]:
    """The Freesound crawl's multi-day passes (items listed out of the API's count, the days still
    needed at ``requests_per_day``) and each credential's requests used and left today."""
    from .sources.freesound_quota import pass_progress, quota_state
    return {"requests_per_day": requests_per_day,
            "passes": pass_progress(cat, page_size=page_size, per_day=requests_per_day, now=now),
            "quota": quota_state(cat, per_day=requests_per_day, now=now)}


def format_freesound(fs: dict[str, Any]) -> list[str]:
    lines = []
    for q in fs.get("quota") or []:
        line = (f"  requests today  {q['used_today']:7d}  used, {q['left_today']} left of {q['requests_per_day']}/day "
                f"(credential {q['credential_id']})")
        if q.get("next_allowed"):
            line += f"; next request allowed {q['next_allowed']:%Y-%m-%d %H:%M} UTC"
        elif q.get("resets_at"):
            line += f"; the oldest counted request leaves the day window {q['resets_at']:%Y-%m-%d %H:%M} UTC"
        lines.append(line)
    for p in fs.get("passes") or []:
        of = (f"{p['listed']} of {'' if p.get('total_exact') else 'at least '}{p['total']} listed" if p["total"]
              else f"{p['listed']} listed")
        line = f"  crawl pass      {p['kind']:9s} {p['status']:9s} {of}"
        if p["status"] == "running":
            if p.get("checks_left") is not None:
                line += f", {p['checks_left']} reconcile checks left"
            line += (f"; ~{p['requests_needed']} requests to go, about {p['days_to_finish']:.1f} day(s) at "
                     f"{fs['requests_per_day']}/day")
        elif p.get("finished_at"):
            line += f" (finished {p['finished_at']:%Y-%m-%d %H:%M})"
        lines.append(line)
    return lines


def format_status(runs: list[dict[str, Any]], state: dict[str, Any]) -> str:
    lines = ["catalogue:"]
    lines.append(f"  recordings      {sum(state['recordings'].values()):7d}  "
                 + ", ".join(f"{k} {v}" for k, v in state["recordings"].items()))
    lines.append("  license gate    " + (", ".join(f"{k} {v}" for k, v in state["license_gate"].items()) or "-"))
    lines.append(f"  with audio      {state['with_audio']:7d}  (pending download {state['pending_download']}, "
                 f"decoded and playable {state.get('playable', 0)})")
    lines.append("  review queue    " + (", ".join(f"{k} {v}" for k, v in state["review_queue"].items()) or "empty"))
    lines.append(f"  take-downs      {state['active_takedowns']:7d}  active")
    rel = state["latest_release"]
    lines.append(f"  latest release  {rel['name']} ({rel['n_recordings']} recordings, {rel['created_at']:%Y-%m-%d %H:%M})"
                 if rel else "  latest release  none")
    lines += format_freesound(state.get("freesound") or {})
    lines.append("")
    if not runs:
        lines.append("no flow runs recorded yet")
        return "\n".join(lines)
    lines.append(f"{'started (UTC)':16s}  {'flow':13s} {'status':9s} {'runner':10s} {'seconds':>8s} {'in':>7s} "
                 f"{'passed':>7s} {'cached':>6s}  rejected (top 3)")
    for r in runs:
        top = sorted(r["rejected"].items(), key=lambda kv: -kv[1])[:3]
        rej = ", ".join(f"{k} {v}" for k, v in top) or "-"
        dur = r.get("duration_s")
        lines.append(f"{r['started_at']:%Y-%m-%d %H:%M}  {r['flow']:13s} {r['status']:9s} {(r.get('task_runner') or '-'):10s} "
                     f"{(f'{dur:.1f}' if dur is not None else '-'):>8s} {_n(r['items_in']):>7s} {_n(r['passed']):>7s} "
                     f"{_n(r.get('cache_hits')):>6s}  {rej}")
        if r.get("error"):
            lines.append(f"{'':18s}error: {r['error'][:160]}")
    return "\n".join(lines)


def _n(v) -> str:
    return "-" if v is None else str(v)
