"""Fault injection over the real pipeline: the loopback replicas misbehave, stages are killed with
SIGKILL at random moments, and after every rerun the outputs are checked against the truth.

One scenario = a fresh catalogue and a replica holding the sample corpus, with faults queued on
its search and download paths (every kind of `ReplicaServer.inject`, plus licenses changed and
sounds deleted between crawls). `sao refresh` (crawl, FMA, gate, original downloads with md5
checks) and `sao shards build` run as subprocesses; some runs are killed with SIGKILL after a
random delay and simply run again, as a scheduler would. Then:
- lost: a sound the replica still serves under an allowed license that is missing from the
  catalogue, or admitted but without its audio; a relicensed or deleted sound not taken down;
- duplicates: a recording or an audio file stored twice, a file whose content does not match its
  content-addressed name (a partial file visible under its final name), a shard build that differs
  from an uninterrupted one;
- leaks: the API or OAuth token in any file the runs wrote (catalogue, audio, shards, logs).

`python -m sao.chaos --scenarios 20` (`make chaos`) prints the table; tests/chaos runs a bounded one.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

TOKEN = "chaos-api-token-7f3a9c"
OAUTH = "chaos-oauth-token-2b8e41"
SEARCH = r"/apiv2/search/"
DOWNLOAD = r"/apiv2/sounds/\d+/download/"
# (kind, path, options): what a scenario draws its faults from
FAULTS = [
    ("status", SEARCH, {"status": 500}), ("status", SEARCH, {"status": 502}), ("status", SEARCH, {"status": 503}),
    ("status", SEARCH, {"status": 429, "retry_after": "1"}), ("status", SEARCH, {"status": 429}),
    ("reset", SEARCH, {}), ("stall", SEARCH, {"seconds": 2.5}), ("truncated-json", SEARCH, {}),
    ("content-type", SEARCH, {}), ("duplicate-page", SEARCH, {}), ("reorder", SEARCH, {}),
    ("delete-next", SEARCH, {}),
    ("truncate", DOWNLOAD, {}), ("corrupt", DOWNLOAD, {}), ("reset", DOWNLOAD, {}),
    ("status", DOWNLOAD, {"status": 503}), ("stall", DOWNLOAD, {"seconds": 2.5}),
]


@dataclasses.dataclass
class ScenarioResult:
    seed: int
    faults: collections.Counter
    kills: int = 0
    kill_points: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    runs: int = 0
    recovered: int = 0
    lost: list[str] = dataclasses.field(default_factory=list)
    duplicates: list[str] = dataclasses.field(default_factory=list)
    leaks: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def allowed(sound: dict[str, Any]) -> bool:
    from .licensing import ALLOWED_LICENSES, canonical_license   # exact, never a substring of the URL
    return canonical_license(sound["license"]) in ALLOWED_LICENSES


def _config(root: pathlib.Path, fma_dir: pathlib.Path) -> pathlib.Path:
    cfg = root / "sao.toml"
    cfg.write_text("\n".join([
        "[paths]", f'catalog = "{root / "catalog.duckdb"}"', f'audio_store = "{root / "audio"}"',
        f'exports = "{root / "exports"}"', f'data_dir = "{root}"',
        "[music_screen]", "uncalibrated = true", "[dedup]", "uncalibrated = true", f'embeddings_dir = "{root / "embeddings"}"',
        "[fma]", f'metadata_dir = "{fma_dir}"',
        "[freesound]", "rate_limit_per_minute = 6000", "timeout_s = 1", "max_retries = 8",
        "retry_base_delay_s = 0.05", "download_originals = true", "commit_every_pages = 1", "page_size = 5",
        "[shards]", f'root = "{root / "shards"}"', 'required_stages = ["license_gate"]', "target_shard_mb = 1",
        "workers = 1", ""]))
    return cfg


def _run(cmd: list[str], env: dict[str, str], log: pathlib.Path, kill_after: float | None, timeout: float = 300
         ) -> tuple[int, bool]:
    """(exit code, killed): SIGKILL after ``kill_after`` seconds when it is still running."""
    with open(log, "ab") as out:
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if kill_after is not None:
                try:
                    return p.wait(timeout=kill_after), False
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    return -9, True
            return p.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return -9, False


def _until_done(cmd, env, log, rng: random.Random, kills: int, res: ScenarioResult, max_runs: int = 12,
                done=None, stage: str = "", window: tuple[float, float] = (0.3, 4.0)) -> bool:
    """Run ``cmd`` with up to ``kills`` random SIGKILLs, then until it succeeds and ``done()`` holds
    (a failed run, or one that left work for later, runs again as the daily schedule would)."""
    for attempt in range(max_runs):
        kill_after = rng.uniform(*window) if attempt < kills else None
        rc, killed = _run(cmd, env, log, kill_after)
        res.runs += 1
        if killed:
            res.kills += 1
            res.kill_points[stage or " ".join(cmd[5:7])] += 1
            continue
        if rc == 0 and (done is None or done()):
            if attempt:
                res.recovered += 1
            return True
    return False


def _no_pending_downloads(db: pathlib.Path):
    def done() -> bool:
        from .catalog import Catalog
        from .sources.audio_download import pending_downloads
        with Catalog(db, read_only=True) as cat:
            return not pending_downloads(cat)
    return done


def _sha_name_ok(path: pathlib.Path) -> bool:
    from .fsutil import sha256_file
    return path.name.split(".")[0] == sha256_file(path)


def _leaks(root: pathlib.Path, secrets: list[str]) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            found += [f"{p.relative_to(root)} holds a token" for s in secrets if s.encode() in data]
    return found


def check(root: pathlib.Path, replica, deleted: set[int], relicensed: set[int], res: ScenarioResult) -> None:
    from .catalog import Catalog
    expected = {str(s["id"]) for s in replica.sounds() if allowed(s)}
    with Catalog(root / "catalog.duckdb", read_only=True) as cat:
        rows = cat.query("SELECT source_id, audio_path, content_sha256 FROM recordings WHERE source = 'freesound'")
        n_dupe = cat.query("SELECT count(*) - count(DISTINCT recording_id) AS n FROM recordings")[0]["n"]
        taken = cat.active_takedowns()
        gate = {rid: d["verdict"] for rid, d in cat.latest_decision_map("license_gate").items()}
        dup_decisions = cat.query(
            "SELECT recording_id, count(*) AS n FROM decisions WHERE stage = 'license_gate' "
            "GROUP BY recording_id, verdict, reason HAVING count(*) > 1")
    have = {r["source_id"]: r for r in rows}
    md5 = {str(s["id"]): s.get("md5") for s in replica.sounds()}
    for sid, r in sorted(have.items()):
        if r["audio_path"] and md5.get(sid) and hashlib.md5((root / "audio" / r["audio_path"]).read_bytes()
                                                             ).hexdigest() != md5[sid]:
            res.lost.append(f"freesound:{sid}: stored audio differs from the source (md5)")
    for sid in sorted(expected - set(have)):
        res.lost.append(f"freesound:{sid} missing from the catalogue")
    for sid in sorted(expected & set(have)):
        rid = f"freesound:{sid}"
        if gate.get(rid) == "pass" and rid not in taken and not have[sid]["audio_path"]:
            res.lost.append(f"{rid} admitted without its audio")
    for sid in sorted(relicensed | deleted):
        rid = f"freesound:{sid}"
        if str(sid) in have and rid not in taken and gate.get(rid) == "pass":
            res.lost.append(f"{rid} changed at the source but still admitted (no take-down)")
    if n_dupe:
        res.duplicates.append(f"{n_dupe} duplicate recording rows")
    res.duplicates += [f"{d['recording_id']}: the same gate decision written {d['n']} times" for d in dup_decisions]
    store = root / "audio"
    finals = [p for p in store.rglob("*") if p.is_file() and not p.name.startswith(".")] if store.exists() else []
    res.duplicates += [f"{p.relative_to(root)}: content does not match its name" for p in finals if not _sha_name_ok(p)]
    shas = collections.Counter(p.name.split(".")[0] for p in finals)
    res.duplicates += [f"audio {s[:12]} stored {n} times" for s, n in shas.items() if n > 1]
    res.leaks += _leaks(root, [TOKEN, OAUTH])


def scenario(seed: int, work: pathlib.Path, sounds: list[dict], fma_dir: pathlib.Path, *, faults: int, kills: int,
             shards: bool = True, train: bool = False) -> ScenarioResult:
    from .sources.replica import ReplicaServer, ReplicaSettings
    rng = random.Random(seed)
    root = work / f"scenario-{seed}"
    root.mkdir(parents=True)
    cfg = _config(root, fma_dir)
    log = root / "runs.log"
    env = dict(os.environ, FREESOUND_API_TOKEN=TOKEN, FREESOUND_OAUTH_TOKEN=OAUTH, SAO_NO_PROGRESS="1",
               HF_HUB_OFFLINE="1", PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
    res = ScenarioResult(seed, collections.Counter())
    t0 = time.perf_counter()
    deleted: set[int] = set()
    relicensed: set[int] = set()
    settings = ReplicaSettings(api_tokens=[TOKEN], oauth_tokens=[OAUTH], rate_limit_per_minute=0, max_page_size=5)
    with ReplicaServer(sounds, settings) as srv:
        for _ in range(faults):
            kind, path, opts = rng.choice(FAULTS)
            srv.inject(path, kind, times=1, **opts)
        # the refresh's data stages up to decode: the screen and the embedding are killed on their own below
        analysis = [a for n in ("music_screen", "copyright_review", "embed", "dedup") for a in ("--skip", n)]
        cmd = [sys.executable, "-m", "sao.cli", "--config", str(cfg), "refresh", *analysis, "--base-url", srv.api_url]
        ok = _until_done(cmd, env, log, rng, kills, res, done=_no_pending_downloads(root / "catalog.duckdb"),
                         stage="refresh (crawl, download)")
        # between crawls: a license changes and a sound disappears at the source
        live = [s for s in srv.sounds() if allowed(s)]
        if ok and len(live) > 2:
            a, b = rng.sample(live, 2)
            srv.update_sound(a["id"], license="http://creativecommons.org/licenses/by-nc/4.0/")
            srv.delete_sound(b["id"])
            relicensed.add(a["id"])
            deleted.add(b["id"])
            res.faults["relicensed between crawls"] += 1
            res.faults["deleted between crawls"] += 1
            cmd = [sys.executable, "-m", "sao.cli", "--config", str(cfg), "refresh", "--reconcile", *analysis,
                   "--base-url", srv.api_url]
            ok = _until_done(cmd, env, log, rng, 1, res, done=_no_pending_downloads(root / "catalog.duckdb"),
                             stage="refresh --reconcile")
        deleted |= set(srv.deleted_by_fault)
        res.faults.update(srv.faults_injected)
        if not ok:
            res.lost.append(f"scenario {seed}: refresh never completed (see {log})")
        check(root, srv, deleted, relicensed, res)
    if ok:
        _analysis_after_kills(root, cfg, env, log, rng, res)
    if ok and shards:
        _shards_after_kills(root, cfg, env, log, rng, res)
    if ok and shards and train:
        _training_after_kills(root, env, log, rng, res)
    res.seconds = time.perf_counter() - t0
    return res


def _analysis_after_kills(root, cfg, env, log, rng, res: ScenarioResult) -> None:
    """The music screen and the CLAP embedding, each killed once and rerun: every admitted item is
    screened exactly once and embedded exactly once."""
    from .catalog import Catalog
    from .dedup.stage import admitted
    from .dedup.store import load_embeddings
    from .sources import source_for
    cli = [sys.executable, "-m", "sao.cli", "--config", str(cfg)]
    for stage in ("screen", "embed"):
        if not _until_done(cli + [stage, "--uncalibrated"], env, log, rng, 1, res, stage=stage, window=(1.5, 6.0)):
            res.lost.append(f"sao {stage} never completed")
            return
    with Catalog(root / "catalog.duckdb", read_only=True) as cat:
        items = admitted(cat)
        screened = collections.Counter(r["recording_id"] for r in cat.query(
            "SELECT recording_id FROM decisions WHERE stage = 'music_screen' "
            "OR (stage = 'decode' AND verdict = 'reject')"))     # a file that does not decode is never screened
    for r in items:
        n = screened.get(r["recording_id"], 0)
        if source_for(r["source"]).music_screen and n != 1:
            (res.lost if n == 0 else res.duplicates).append(f"{r['recording_id']}: screened {n} times")
    from .analysis.clap import clap_signature
    emb = load_embeddings(root / "embeddings", clap_signature("HTSAT-tiny", None))
    shas = {r["content_sha256"] for r in items}
    res.lost += [f"audio {s[:12]} never embedded" for s in sorted(shas - set(emb))]
    files = list((root / "embeddings").rglob("*.parquet")) if (root / "embeddings").exists() else []
    import pyarrow.parquet as pq
    rows = collections.Counter(x for f in files for x in pq.read_table(f, columns=["content_sha256"]).column(0).to_pylist())
    res.duplicates += [f"audio {s[:12]} embedded {n} times" for s, n in rows.items() if n > 1]


def _training_after_kills(root, env, log, rng, res: ScenarioResult) -> None:
    """A tiny autoencoder run killed while it trains and checkpoints, then resumed: it reaches its
    last step, and every checkpoint it left loads (no partial file under a final name)."""
    from .models.checkpoint import read_state_dict
    shards_dir = root / "shards" / "clean"
    out = root / "train-vae"
    cmd = [sys.executable, "-m", "sao.cli", "train", "vae", "--shards", str(shards_dir), "--out", str(out),
           "--steps", "6", "--batch-size", "2", "--disc-channels", "4", "--sample-length", "8192",
           "--checkpoint-every", "2"]
    if not _until_done(cmd, env, log, rng, 2, res, stage="train vae (checkpointing)",
                       window=(4.0, 20.0)):
        res.lost.append("training never completed after kills")
        return
    latest = json.loads((out / "latest.json").read_text())
    if latest.get("step") != 6:
        res.lost.append(f"training resumed to step {latest.get('step')}, not 6")
    for f in out.glob("*.safetensors"):
        try:
            read_state_dict(f)
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            res.duplicates.append(f"{f.name}: a checkpoint that does not load ({exc})")


def _shards_after_kills(root, cfg, env, log, rng, res: ScenarioResult) -> None:
    """A shard build killed once and rerun must equal an uninterrupted build of the same catalogue."""
    base = [sys.executable, "-m", "sao.cli", "--config", str(cfg), "shards", "build", "--name"]
    if not _until_done(base + ["killed"], env, log, rng, 1, res, stage="shards build", window=(0.5, 3.0)):
        res.lost.append("shards build never completed")
        return
    if _run(base + ["clean"], env, log, None)[0] != 0:
        res.lost.append("uninterrupted shards build failed")
        return
    from .fsutil import sha256_file
    a = json.loads((root / "shards" / "killed" / "plan.json").read_text())
    b = json.loads((root / "shards" / "clean" / "plan.json").read_text())
    if a["shard_sha256"] != b["shard_sha256"]:
        res.duplicates.append("shard build after a kill differs from an uninterrupted build")
    for p in (root / "shards").rglob("*.tar"):
        want = a["shard_sha256"].get(p.name) or b["shard_sha256"].get(p.name)
        if want and sha256_file(p) != want:
            res.duplicates.append(f"{p.relative_to(root)}: a partial shard under its final name")
    res.leaks += [x for x in _leaks(root / "shards", [TOKEN, OAUTH])]


def run(scenarios: int, *, faults: int = 12, kills: int = 3, seed: int = 0, shards: bool = True,
        train_every: int = 4, work: pathlib.Path | None = None, echo=print) -> list[ScenarioResult]:
    from .sources import sample_corpus
    from .sources.replica import build_fma_replica, build_freesound_sounds
    work = work or pathlib.Path(tempfile.mkdtemp(prefix="sao-chaos-"))
    repo = pathlib.Path(__file__).resolve().parents[1]
    corpus = sample_corpus.load_metadata(repo / "datasets" / "sample")
    sounds = build_freesound_sounds(corpus)
    fma_dir = build_fma_replica(corpus, work / "fma")
    results = []
    for i in range(scenarios):
        r = scenario(seed + i, work, sounds, fma_dir, faults=faults, kills=kills, shards=shards,
                     train=bool(train_every) and i % train_every == 0)
        echo(f"scenario {r.seed}: {sum(r.faults.values())} faults, {r.kills} kills, {r.runs} runs, "
             f"lost {len(r.lost)}, duplicates {len(r.duplicates)}, leaks {len(r.leaks)} ({r.seconds:.0f} s)")
        results.append(r)
    return results


def table(results: list[ScenarioResult]) -> str:
    faults = collections.Counter()
    for r in results:
        faults.update(r.faults)
    lines = ["faults injected by kind:"]
    lines += [f"  {k:28s} {n:5d}" for k, n in sorted(faults.items())]
    lines.append(f"  {'total':28s} {sum(faults.values()):5d}")
    points = collections.Counter()
    for r in results:
        points.update(r.kill_points)
    lines.append("SIGKILLs by stage:")
    lines += [f"  {k:28s} {n:5d}" for k, n in sorted(points.items())]
    lines.append("")
    lines.append(f"{'scenarios':>9s} {'faults':>7s} {'kills':>6s} {'runs':>5s} {'recovered':>9s} "
                 f"{'items lost':>10s} {'duplicates':>10s} {'leaks':>6s}")
    lines.append(f"{len(results):9d} {sum(faults.values()):7d} {sum(r.kills for r in results):6d} "
                 f"{sum(r.runs for r in results):5d} {sum(r.recovered for r in results):9d} "
                 f"{sum(len(r.lost) for r in results):10d} {sum(len(r.duplicates) for r in results):10d} "
                 f"{sum(len(r.leaks) for r in results):6d}")
    for r in results:
        for what, items in (("lost", r.lost), ("duplicate", r.duplicates), ("leak", r.leaks)):
            lines += [f"  scenario {r.seed} {what}: {x}" for x in items[:5]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", type=int, default=20)
    ap.add_argument("--faults", type=int, default=12, help="faults queued per scenario")
    ap.add_argument("--kills", type=int, default=3,
                    help="SIGKILLs per refresh (plus one each for the reconcile, screen, embed and shard build)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-shards", action="store_true")
    ap.add_argument("--train-every", type=int, default=4, help="kill a tiny training run in every Nth scenario (0: never)")
    a = ap.parse_args(argv)
    results = run(a.scenarios, faults=a.faults, kills=a.kills, seed=a.seed, shards=not a.no_shards,
                  train_every=a.train_every)
    print()
    print(table(results))
    bad = sum(len(r.lost) + len(r.duplicates) + len(r.leaks) for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
