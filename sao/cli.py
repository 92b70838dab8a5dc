"""The `sao` command line: one entry point, one sub-command per job, `--help` on each."""
from __future__ import annotations

import argparse
import json
import pathlib
import logging
import os
import signal
import sys

from . import __version__
from . import config as config_mod
from .log import install_excepthook, redact, register_secrets, setup_logging

log = logging.getLogger("sao")


def _cfg(args) -> config_mod.Config:
    return config_mod.load(args.config)


def _catalog(cfg: config_mod.Config, **kw):
    """The configured catalogue (migrated to the current schema unless read_only)."""
    from .catalog import Catalog
    return Catalog(cfg.catalog_path, **kw)


# -- config -------------------------------------------------------------------------------------
def cmd_config_show(args) -> int:
    cfg = _cfg(args)
    print(config_mod.to_toml(cfg), end="")
    print(f"# config hash: {cfg.config_hash()}")
    return 0


def cmd_config_validate(args) -> int:
    config_mod.load(args.file)
    print(f"{args.file}: ok")
    return 0


# -- catalogue ----------------------------------------------------------------------------------
def cmd_catalog_init(args) -> int:
    cfg = _cfg(args)
    with _catalog(cfg) as cat:
        print(f"{cfg.catalog_path}: schema version {cat.schema_version()}")
    return 0


def cmd_catalog_status(args) -> int:
    cfg = _cfg(args)
    with _catalog(cfg) as cat:
        print(f"catalogue {cfg.catalog_path} (schema version {cat.schema_version()})")
        for t, n in cat.counts().items():
            print(f"  {t:18s} {n:8d}")
    return 0


def cmd_status(args) -> int:
    from .runs import catalogue_state, format_status, latest_runs
    cfg = _cfg(args)
    if not cfg.catalog_path.exists():
        print(f"sao: no catalogue at {cfg.catalog_path} yet (run `make demo` or a refresh first)")
        return 1
    with _catalog(cfg) as cat:
        runs, state = latest_runs(cat, args.runs), catalogue_state(cat)
    if args.json:
        print(json.dumps({"catalogue": state, "runs": runs}, indent=1, default=str))
    else:
        print(f"{cfg.catalog_path} (schema version {state['schema_version']})")
        print(format_status(runs, state))
    return 0


def cmd_catalog_export(args) -> int:
    import pathlib

    from .catalog import TABLES
    cfg = _cfg(args)
    out = pathlib.Path(args.out) if args.out else cfg.path(cfg.paths.exports)
    tables = TABLES if args.table == "all" else (args.table,)
    with _catalog(cfg) as cat:
        for t in tables:
            print(cat.export_parquet(t, out / f"{t}.parquet"))
    return 0


# -- corpus -------------------------------------------------------------------------------------
def cmd_corpus_verify(args) -> int:
    from .sources import sample_corpus
    cfg = _cfg(args)
    rep = sample_corpus.verify(cfg.path(cfg.paths.sample_corpus))
    print(f"{rep.checked} files, {rep.seconds:.1f} s of audio, {rep.bytes / 1e6:.2f} MB")
    for p in rep.problems:
        print(f"  problem: {p}")
    return 0 if rep.ok else 1


def cmd_corpus_list(args) -> int:
    from .sources import sample_corpus
    cfg = _cfg(args)
    for e in sample_corpus.load_metadata(cfg.path(cfg.paths.sample_corpus)):
        print(f"{e['id']:32s} {e['replica']:9s} {e['kind']:15s} {e['license']:18s} {e['duration']:7.2f}s "
              f"{e['sample_rate']:6d} Hz {e['channels']}ch  {e['title']} - {e['author']}")
    return 0


# -- replicas -----------------------------------------------------------------------------------
def cmd_replica_serve(args) -> int:
    from .sources import sample_corpus
    from .sources.replica import ReplicaServer, ReplicaSettings, build_fma_replica, build_freesound_sounds
    cfg = _cfg(args)
    rc = cfg.replica
    entries = sample_corpus.load_metadata(cfg.path(cfg.paths.sample_corpus))
    root = cfg.path(rc.data_dir)
    build_fma_replica(entries, root / "fma")
    settings = ReplicaSettings(api_tokens=rc.api_tokens, oauth_tokens=rc.oauth_tokens,
                               rate_limit_per_minute=args.rate_limit if args.rate_limit is not None
                               else rc.rate_limit_per_minute, max_page_size=rc.max_page_size,
                               page_site=rc.page_site)
    srv = ReplicaServer(build_freesound_sounds(entries), settings, fma_dir=root / "fma",
                        cache_dir=root / "previews", host=args.host or rc.host,
                        port=args.port if args.port is not None else rc.port)
    print(f"Freesound APIv2 replica: {srv.api_url}/search/   (tokens: [replica].api_tokens in the config)")
    print(f"FMA replica:             {srv.base_url}/fma/fma_metadata/tracks.csv   (folder: {root / 'fma'})")
    print("Ctrl-C stops.", flush=True)
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.httpd.server_close()
    return 0


# -- crawl, gate, download, take-downs -------------------------------------------------------------
def cmd_crawl_freesound(args) -> int:
    from .refresh import stage_crawl_freesound
    cfg = _cfg(args)
    out = stage_crawl_freesound(cfg, full=args.full, reconcile=args.reconcile, base_url=args.base_url)
    print(json.dumps(out, indent=1, default=str))
    return 0


def cmd_crawl_fma(args) -> int:
    from .refresh import stage_ingest_fma
    print(json.dumps(stage_ingest_fma(_cfg(args), args.dir), indent=1))
    return 0


def cmd_gate(args) -> int:
    from .licensing.stage import counts_table
    from .refresh import stage_license_gate
    st = stage_license_gate(_cfg(args))
    print(counts_table(st))
    print(f"decisions written: {st.written}, take-downs: {st.takedowns}")
    return 0


def cmd_download(args) -> int:
    from . import refresh
    out = refresh.stage_download(_cfg(args), base_url=args.base_url, limit=args.limit)
    print(json.dumps(out, indent=1))
    if out.get("failed"):          # a run that stored little must not look like success to cron or CI
        print(f"sao: download: {out['failed']} of {out['candidates']} downloads failed (kept for the next run; "
              "reasons above and under \"failures\")", file=sys.stderr)
        return 1
    return 0


def cmd_decode(args) -> int:
    from .refresh import stage_decode
    out = stage_decode(_cfg(args))
    for rid, why in sorted(out["errors"].items()):
        print(f"{rid}: rejected: {why}", file=sys.stderr)
    print(json.dumps({k: v for k, v in out.items() if k != "errors"}, indent=1))
    return 0


def cmd_refresh(args) -> int:
    from .licensing.stage import counts_table
    from .refresh import refresh
    out = refresh(_cfg(args), full=args.full, reconcile=args.reconcile, fma_dir=args.fma_dir, base_url=args.base_url)
    gate = out.pop("gate")
    print(json.dumps(out, indent=1, default=str))
    print(counts_table(gate))
    return 0


def cmd_takedown_add(args) -> int:
    cfg = _cfg(args)
    with _catalog(cfg) as cat:
        tid = cat.add_takedown(args.recording, args.reason, args.by)
        known = cat.get_recording(args.recording) is not None
    print(f"take-down {tid} recorded for {args.recording}" + ("" if known else " (not in the catalogue yet)"))
    return 0


def cmd_takedown_list(args) -> int:
    cfg = _cfg(args)
    with _catalog(cfg) as cat:
        for t in cat.takedowns():
            print(f"{t['takedown_id']:5d} {t['status']:9s} {t['received_at']:%Y-%m-%d %H:%M} {t['recording_id']:24s} "
                  f"{t['reason']} ({t['requested_by'] or '-'})")
    return 0


def cmd_takedown_impact(args) -> int:
    from .attribution.release import takedown_impact
    cfg = _cfg(args)
    roots = args.checkpoints or [str(cfg.path(cfg.paths.checkpoints))]
    with _catalog(cfg) as cat:
        out = takedown_impact(cat, args.recording, shards_root=config_mod.shards_root(cfg), checkpoint_roots=roots)
    print(f"{args.recording}: take-downs {len(out['takedowns'])}; in {len(out['releases'])} release(s), "
          f"{len(out['shards'])} shard(s), {len(out['checkpoints'])} checkpoint manifest(s)")
    for r in out["releases"]:
        print(f"  release {r}")
    for s in out["shards"]:
        print(f"  shard {s['build']}/{s['shard']} ({s['samples']} samples)")
    for c in out["checkpoints"]:
        print(f"  checkpoint {c['checkpoint']} ({c['stage']} step {c['step']})")
    return 0


def cmd_release_create(args) -> int:
    from .refresh import stage_release
    out = stage_release(_cfg(args), args.name, notes=args.notes, key_file=args.key_file)
    print(f"release {out['name']} {out['status']} (version {out['version']}): {out['recordings']} recordings, "
          f"sha256 {out['content_sha256'][:16]}, {out['seconds']} s")
    print(f"signature: {out['signature']} (key {out['signed_by'][:16]})" if out.get("signature")
          else "signature: UNSIGNED (no signing key configured)")
    if out.get("excluded"):
        print("excluded: " + ", ".join(f"{k} {v}" for k, v in out["excluded"].items()))
    return 0


def cmd_release_verify(args) -> int:
    from .attribution.release_signature import verify_release
    from .signing import SigningError, load_public_key
    cfg = _cfg(args)
    try:
        key = load_public_key(args.key)
        with _catalog(cfg, read_only=True) as cat:
            out = verify_release(cat, args.name, cfg.path(cfg.paths.releases), key)
    except SigningError as exc:
        print(f"sao: release verify FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"ok: release {out['release']} ({out['recordings']} recordings, sha256 {out['content_sha256'][:16]}) "
          f"signed by ed25519 key {out['signed_by'][:16]} ({out['signature']})")
    return 0


def cmd_release_list(args) -> int:
    from .attribution.release import list_releases
    with _catalog(_cfg(args)) as cat:
        for r in list_releases(cat):
            print(f"{r['version'] or '-':>4} {r['name']:24s} {r['n_recordings']:8d} {r['content_sha256'][:16]} "
                  f"{r['created_at']:%Y-%m-%d %H:%M}")
    return 0


def cmd_release_diff(args) -> int:
    from .attribution.release import diff
    with _catalog(_cfg(args)) as cat:
        out = diff(cat, args.old, args.new)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{args.old} -> {args.new}: {len(out['added'])} added, {len(out['removed'])} removed, "
          f"{len(out['changed'])} changed")
    for a in out["added"]:
        print(f"  + {a['recording_id']}")
    for r in out["removed"]:
        print(f"  - {r['recording_id']}: {r['cause']}")
    for c in out["changed"]:
        print(f"  ~ {c['recording_id']}: " + "; ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in c["fields"].items()))
    return 0


def cmd_release_report(args) -> int:
    from .refresh import stage_attribution
    out = stage_attribution(_cfg(args), args.name)
    print(f"attribution report of {out['release']}: {out['html']} ({out['recordings']} recordings, "
          f"{out['seconds']} s)")
    return 0


def cmd_shards_build(args) -> int:
    from .refresh import stage_shards
    out = stage_shards(_cfg(args), name=args.name, workers=args.workers, release=args.release)
    print(f"shards {out['name']}: {out['shards']} shard(s) ({out['shards_written']} written, "
          f"{out['shards_skipped']} already there), {out['bytes'] / 1e6:.1f} MB, samples {out['samples']}")
    print(f"  location: {out['location']}")
    print(f"  license mix: {json.dumps(out['license_mix'])}")
    print(f"  throughput: {out['audio_s_per_s']} audio-seconds per second")
    if out.get("rebuilt_without"):
        print(f"  built again without the recordings that failed to decode: {json.dumps(out['rebuilt_without'])}")
    if out["decode_failures"]:
        print(f"  undecodable, skipped: {json.dumps(out['decode_failures'])}")
    if not out["samples"]:
        print("  the catalogue has no admitted recording with audio yet: run `sao refresh` (or `make demo`) first")
    if out["status"] != "complete":
        print(f"error: shards {out['name']} are {out['status']}: recordings failed to decode while they were "
              "written (now rejected); run `sao shards build` again", file=sys.stderr)
        return 1
    return 0


def cmd_screen(args) -> int:
    from .refresh import stage_music_screen
    out = stage_music_screen(_cfg(args), uncalibrated=True if args.uncalibrated else None, checkpoint=args.checkpoint)
    print(json.dumps(out, indent=1))
    return 0


def cmd_review_run(args) -> int:
    from .refresh import stage_review
    print(json.dumps(stage_review(_cfg(args), detection_url=args.detection_url), indent=1, default=str))
    return 0


def cmd_review_list(args) -> int:
    from .review import queue
    cfg = _cfg(args)
    with _catalog(cfg) as cat:
        rows = queue.items(cat, None if args.status == "all" else args.status)
        for r in rows:
            rec = cat.get_recording(r["recording_id"]) or {}
            print(f"{r['review_id']:5d} {r['status']:9s} {r['kind']:17s} {r['recording_id']:22s} "
                  f"{(rec.get('title') or '')[:30]:30s} {(rec.get('author') or '')[:24]}")
        if not rows:
            print(f"no review items with status {args.status}")
    return 0


def cmd_review_show(args) -> int:
    from .review.stage import describe_item
    cfg = _cfg(args)
    with _catalog(cfg) as cat:
        print(describe_item(cat, args.id, cfg.path(cfg.paths.audio_store)))
    return 0


def _reviewer(args) -> str:
    import getpass
    return args.by or os.environ.get("SAO_REVIEWER") or getpass.getuser()


def cmd_review_decide(args) -> int:
    from .review import queue
    cfg = _cfg(args)
    cleared = args.sub == "approve"
    with _catalog(cfg) as cat:
        item = queue.get(cat, args.id)
        if item["status"] in ("cleared", "flagged") and not args.force:
            print(f"sao: error: review {args.id} is already {item['status']} (use --force to decide again)",
                  file=sys.stderr)
            return 1
        queue.decide(cat, args.id, cleared=cleared, by=_reviewer(args), note=args.note, config_hash=cfg.config_hash())
    print(f"review {args.id}: {'cleared' if cleared else 'flagged'} by {_reviewer(args)}")
    return 0


def cmd_review_load(args) -> int:
    from .review.catalogue_match import load_catalogue
    cfg = _cfg(args)
    with _catalog(cfg) as cat:
        print(f"{load_catalogue(cat, args.file)} copyrighted recordings loaded from {args.file}")
    return 0


def cmd_review_serve(args) -> int:
    from .review.detection_service import DetectionService
    cfg = _cfg(args)
    refs = args.references or cfg.review.reference_dir
    key = os.environ.get(cfg.review.detection_key_env, "").strip()
    if not key:                            # no default key: refuse to start rather than accept a public one
        raise config_mod.ConfigError(f"[review].detection_key_env: set ${cfg.review.detection_key_env} to the API key "
                                     "the detection service will require (there is no default key)")
    svc = DetectionService(cfg.path(refs) if refs else None, api_key=key, port=args.port)
    print(f"content-detection service: {svc.url}/v1/identify  ({len(svc.index.names)} reference tracks)", flush=True)
    try:
        svc.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_embed(args) -> int:
    from .refresh import stage_embed
    out = stage_embed(_cfg(args), uncalibrated=True if args.uncalibrated else None)
    for u in out["undecodable"]:           # each by name: it is rejected (decode) and never admitted
        print(f"undecodable: {u['path']} ({u['recording_id']}): {u['error']}", file=sys.stderr)
    print(json.dumps(out, indent=1))
    return 0


def cmd_dedup(args) -> int:
    from .refresh import stage_dedup
    print(json.dumps(stage_dedup(_cfg(args), uncalibrated=True if args.uncalibrated else None), indent=1))
    return 0


def cmd_memorization(args) -> int:
    from .refresh import stage_memorization
    out = stage_memorization(_cfg(args), args.generated_dir, args.out, top=args.top, k=args.k,
                             uncalibrated=True if args.uncalibrated else None)
    print(json.dumps(out, indent=1))
    return 0


def cmd_generate(args) -> int:
    import soundfile as sf
    import torch

    from .models import create_model, load_checkpoint
    from .models.sampling import generate
    if args.ckpt is None and args.model_config == "stable_audio_open_1_0":
        print("sao: error: the official config needs its weights: --ckpt model.safetensors", file=sys.stderr)
        return 1
    model = create_model(args.model_config, t5_path=args.t5_path)
    if args.ckpt:
        load_checkpoint(model, args.ckpt)
    else:
        print("warning: no --ckpt: random weights (uncalibrated); the output is noise", file=sys.stderr)
    audio = generate(model, [args.prompt], seconds_total=args.seconds, steps=args.steps, cfg_scale=args.cfg_scale,
                     sampler=args.sampler, seed=args.seed, sigma_min=args.sigma_min, sigma_max=args.sigma_max)[0]
    peak = float(audio.abs().max()) or 1.0
    audio = (audio / peak).clamp(-1, 1) if args.normalize else audio.clamp(-1, 1)
    sf.write(args.out, audio.T.numpy(), model.sample_rate, subtype="PCM_16")
    print(f"{args.out}: {audio.shape[-1] / model.sample_rate:.2f} s, {model.sample_rate} Hz, {audio.shape[0]} channels "
          f"({args.sampler}, {args.steps} steps, cfg {args.cfg_scale}, seed {args.seed}, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'})")
    return 0


def cmd_eval_autoencoder(args) -> int:
    from .eval import autoencoder, report
    cfg = _cfg(args)
    out = autoencoder.run(args.checkpoint, args.data, model_config=args.model_config, chunk_seconds=args.chunk_seconds,
                          limit=args.limit, uncalibrated=args.uncalibrated, cfg=cfg)
    s = out["summary"]
    out_dir = pathlib.Path(args.out)
    from .fsutil import atomic_write_text
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(out, indent=1, default=str))
    files = report.write_report(out_dir, f"Autoencoder evaluation: {args.data}", report.autoencoder_tables(s, args.dataset))
    print(f"{s['recordings']} recordings ({s['skipped']} skipped): STFT distance {s['stft_distance']:.3f}, "
          f"MEL distance {s['mel_distance']:.3f}, SI-SDR {s['si_sdr']:.2f} dB; latent {s['latent_rate_hz']:g} Hz x "
          f"{s['latent_channels']}; {s['audio_s_per_s']:.1f} audio-s/s" + (" [UNCALIBRATED]" if s["uncalibrated"] else ""))
    print(f"report: {files['html']} (and report.md, results.json)")
    return 0


def cmd_eval_generate(args) -> int:
    from .eval import generation
    res = generation.run(args.checkpoint, args.prompts, args.out, model_config=args.model_config, t5_path=args.t5_path,
                         uncalibrated=args.uncalibrated, seconds_total=args.seconds, trim_seconds=args.trim or args.seconds,
                         steps=args.steps, cfg_scale=args.cfg_scale, seed=args.seed, batch_size=args.batch_size,
                         clap_checkpoint=args.clap_checkpoint, clap_model=args.clap_model,
                         panns_checkpoint=args.panns_checkpoint, limit=args.limit, dataset=args.dataset)
    m = res["tables"]["main"]
    print(f"{m['files']} generations: FD {m['fd']}, KL {m['kl']}, CLAP score {m['clap_score']}"
          + (" [UNCALIBRATED]" if res["uncalibrated"] else ""))
    for k, v in sorted(res["scores"]["embedders"].items()):
        print(f"  {k}: {v}")
    print(f"report: {res['files']['html']} (per prompt: {res['files']['prompts']})")
    return 0


def cmd_tiny_t5(args) -> int:
    from .models.t5_local import build_tiny_t5
    from .sources import sample_corpus
    cfg = _cfg(args)
    texts = [f"{e['title']} {e.get('description') or ''} {' '.join(e.get('tags') or [])}"
             for e in sample_corpus.load_metadata(cfg.path(cfg.paths.sample_corpus))] * 20
    print(build_tiny_t5(args.dir, texts, d_model=args.d_model))
    return 0


def cmd_train(args) -> int:
    from .signing import key_file_for
    from .train.trainer import TrainSettings, train_dit, train_vae
    cfg = _cfg(args)
    s = TrainSettings(stage=args.sub, shards_dir=args.shards, out_dir=args.out, model_config=args.model_config,
                      steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, seed=args.seed,
                      lr=args.lr, checkpoint_every=args.checkpoint_every, precision=args.precision,
                      gradient_checkpointing=args.gradient_checkpointing, t5_path=args.t5_path,
                      vae_checkpoint=args.vae_checkpoint, freeze_encoder=args.freeze_encoder,
                      disc_channels=args.disc_channels, sample_length=args.sample_length,
                      data_streams=args.data_streams, global_batch_size=args.global_batch_size,
                      latents=getattr(args, "latents", None), signing_key_file=key_file_for(cfg, args.key_file),
                      catalog=str(cfg.catalog_path) if cfg.catalog_path.exists() else None)
    out = train_vae(s) if args.sub == "vae" else train_dit(s)
    print(json.dumps(out, indent=1))
    return 0


def cmd_encode_latents(args) -> int:
    from .train.latents import encode_latents
    print(json.dumps(encode_latents(args.shards, args.vae_checkpoint, model_config=args.model_config,
                                    out_dir=args.out, set_=args.set), indent=1))
    return 0


def cmd_manifest_verify(args) -> int:
    from .signing import SigningError, load_public_key
    from .train.manifest import ManifestError, verify
    try:
        key = load_public_key(args.key) if args.key else None
        out = verify(args.checkpoint, check_shards=not args.skip_shards, public_key=key)
    except (ManifestError, SigningError) as exc:
        print(f"sao: manifest check FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {out['checkpoint']} matches {out['manifest']} (sha256 {out['manifest_sha256'][:16]}), tensors "
          f"{out['weights_sha256'][:16]}, {out['shards_checked']} shard(s) verified, {out['recordings']} recordings")
    if out.get("autoencoder"):
        ae = out["autoencoder"]
        print(f"autoencoder: tensors {ae['weights_sha256'][:16]} as recorded, {ae['recordings']} recordings; "
              f"its manifest {ae['manifest']}")
    if out["signed_by"]:
        print(f"signature: valid, ed25519 key {out['signed_by'][:16]}")
    else:
        print(f"signature: NOT CHECKED (no --key; the manifest says {out['signing_status']}): this shows only that "
              "the files agree with each other, not who made them")
    return 0


def cmd_keys_generate(args) -> int:
    from .signing import generate_keys
    out = generate_keys(args.out)
    print(f"private key: {out['private']} (mode 0600; keep it secret: set [signing].key_file or $SAO_SIGNING_KEY)")
    print(f"public key:  {out['public']} (key id {out['keyid'][:16]}; give it to verifiers: --key)")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    run_demo(_cfg(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sao", description="License-clean text-to-audio data pipeline and training.")
    p.add_argument("--version", action="version", version=f"sao {__version__}")
    p.add_argument("--config", help="TOML config file (default: $SAO_CONFIG, ./sao.toml, or built-in defaults)")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default from config)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("config", help="show or validate configuration").add_subparsers(dest="sub", required=True)
    c.add_parser("show", help="print the effective configuration as TOML").set_defaults(func=cmd_config_show)
    v = c.add_parser("validate", help="check a config file")
    v.add_argument("file")
    v.set_defaults(func=cmd_config_validate)

    cat = sub.add_parser("catalog", help="the DuckDB catalogue").add_subparsers(dest="sub", required=True)
    cat.add_parser("init", help="create the catalogue or apply pending migrations").set_defaults(func=cmd_catalog_init)
    cat.add_parser("status", help="row counts per table").set_defaults(func=cmd_catalog_status)
    ex = cat.add_parser("export", help="export tables to Parquet")
    ex.add_argument("table", nargs="?", default="all", help="a table name, or 'all' (default)")
    ex.add_argument("--out", help="output folder (default [paths].exports)")
    ex.set_defaults(func=cmd_catalog_export)

    co = sub.add_parser("corpus", help="the shipped sample corpus").add_subparsers(dest="sub", required=True)
    co.add_parser("verify", help="check every file: present, unmodified, decodable").set_defaults(func=cmd_corpus_verify)
    co.add_parser("list", help="list files with license and format").set_defaults(func=cmd_corpus_list)

    r = sub.add_parser("replica", help="loopback Freesound/FMA replicas").add_subparsers(dest="sub", required=True)
    s = r.add_parser("serve", help="serve the replicas on loopback until interrupted")
    s.add_argument("--host", help="loopback address (default [replica].host)")
    s.add_argument("--port", type=int, help="port (default [replica].port; 0 picks a free one)")
    s.add_argument("--rate-limit", type=int, help="requests per minute per token before 429 (0: no limit)")
    s.set_defaults(func=cmd_replica_serve)

    cr = sub.add_parser("crawl", help="crawl sources into the catalogue").add_subparsers(dest="sub", required=True)
    f = cr.add_parser("freesound", help="incremental Freesound crawl, one search per allowed license")
    f.add_argument("--full", action="store_true", help="ignore the cursors and list everything again")
    f.add_argument("--reconcile", action="store_true",
                   help="full listing, then check items no longer listed (deleted or re-licensed -> take-down)")
    f.add_argument("--base-url", help="API base URL (default [freesound].base_url)")
    f.set_defaults(func=cmd_crawl_freesound)
    fm = cr.add_parser("fma", help="ingest an fma_metadata folder and its fma_large audio tree")
    fm.add_argument("dir", nargs="?", help="folder holding fma_metadata/ (default [fma].metadata_dir)")
    fm.set_defaults(func=cmd_crawl_fma)

    sub.add_parser("gate", help="run the license gate over the catalogue").set_defaults(func=cmd_gate)
    dl = sub.add_parser("download", help="download audio of admitted Freesound items",
                        description="Download audio of admitted Freesound items into the audio store. "
                                    "Exit status: 0 when every download succeeded, 1 when any failed "
                                    "(a one-line summary on stderr; failed items are tried again next run).")
    dl.add_argument("--base-url", help="API base URL (default [freesound].base_url)")
    dl.add_argument("--limit", type=int, help="at most this many files")
    dl.set_defaults(func=cmd_download)
    sub.add_parser("decode", help="read every newly stored file: duration, rate and channels from the audio, "
                                  "undecodable files rejected").set_defaults(func=cmd_decode)
    stp = sub.add_parser("status", help="the latest flow runs and the catalogue's state")
    stp.add_argument("--runs", type=int, default=10, help="how many runs (default 10)")
    stp.add_argument("--json", action="store_true")
    stp.set_defaults(func=cmd_status)
    rf = sub.add_parser("refresh", help="crawl Freesound and FMA, gate, download (the scheduled refresh)")
    rf.add_argument("--full", action="store_true", help="ignore the crawl cursors")
    rf.add_argument("--reconcile", action="store_true", help="detect deletions and re-licensing (implies --full)")
    rf.add_argument("--fma-dir", help="folder holding fma_metadata/ (default [fma].metadata_dir)")
    rf.add_argument("--base-url", help="Freesound API base URL (default [freesound].base_url)")
    rf.set_defaults(func=cmd_refresh)

    td = sub.add_parser("takedown", help="take-down requests").add_subparsers(dest="sub", required=True)
    ta = td.add_parser("add", help="record a take-down for SOURCE:ID")
    ta.add_argument("recording", metavar="SOURCE:ID", help="e.g. freesound:12345 or fma:2")
    ta.add_argument("--reason", required=True)
    ta.add_argument("--by", help="who asked (e.g. an e-mail reference)")
    ta.set_defaults(func=cmd_takedown_add)
    td.add_parser("list", help="list take-downs").set_defaults(func=cmd_takedown_list)
    ti = td.add_parser("impact", help="every release, shard and checkpoint manifest that contained SOURCE:ID")
    ti.add_argument("recording", metavar="SOURCE:ID")
    ti.add_argument("--checkpoints", action="append", help="folders to search for checkpoint manifests "
                    "(default [paths].checkpoints); repeatable")
    ti.set_defaults(func=cmd_takedown_impact)

    sh = sub.add_parser("shards", help="WebDataset shards").add_subparsers(dest="sub", required=True)
    sb = sh.add_parser("build", help="build autoencoder and diffusion shards for the current catalogue")
    sb.add_argument("--name", help="output folder name under [shards].root (default: snap-<plan hash>)")
    sb.add_argument("--workers", type=int, help="parallel shard writers (default [shards].workers)")
    sb.add_argument("--release", help="only this release's items (the manifest then names the release)")
    sb.set_defaults(func=cmd_shards_build)

    rl = sub.add_parser("release", help="immutable releases and their attribution reports").add_subparsers(
        dest="sub", required=True)
    rc = rl.add_parser("create", help="freeze the admitted recordings into release NAME")
    rc.add_argument("name")
    rc.add_argument("--notes")
    rc.add_argument("--key-file", help="ed25519 private key signing the release (default [signing].key_file, "
                    "else $SAO_SIGNING_KEY; none: unsigned)")
    rc.set_defaults(func=cmd_release_create)
    rl.add_parser("list", help="list releases").set_defaults(func=cmd_release_list)
    rvf = rl.add_parser("verify", help="check release NAME's signature against its items in the catalogue")
    rvf.add_argument("name")
    rvf.add_argument("--key", required=True, metavar="PUB", help="ed25519 public key (PEM)")
    rvf.set_defaults(func=cmd_release_verify)
    rd = rl.add_parser("diff", help="what was added, removed (and why) and changed from release A to B")
    rd.add_argument("old")
    rd.add_argument("new")
    rd.add_argument("--json", action="store_true")
    rd.set_defaults(func=cmd_release_diff)
    rr = rl.add_parser("report", help="attribution files and report of a release (default: the newest)")
    rr.add_argument("name", nargs="?")
    rr.set_defaults(func=cmd_release_report)

    sc = sub.add_parser("screen", help="PANNs music screen over admitted Freesound audio")
    sc.add_argument("--uncalibrated", action="store_true",
                    help="run with random weights when no checkpoint is configured (decisions say so)")
    sc.add_argument("--checkpoint", help="Cnn14_DecisionLevelMax checkpoint (default [music_screen].checkpoint)")
    sc.set_defaults(func=cmd_screen)

    rv = sub.add_parser("review", help="copyright review queue").add_subparsers(dest="sub", required=True)
    rr = rv.add_parser("run", help="submit flagged music to content detection, match FMA against the catalogue")
    rr.add_argument("--detection-url", help="content-detection service (default [review].detection_url)")
    rr.set_defaults(func=cmd_review_run)
    rl = rv.add_parser("list", help="list review items")
    rl.add_argument("--status", default="pending", choices=["pending", "submitted", "cleared", "flagged", "all"])
    rl.set_defaults(func=cmd_review_list)
    rs = rv.add_parser("show", help="one item, with its audio path and the matching catalogue rows")
    rs.add_argument("id", type=int)
    rs.set_defaults(func=cmd_review_show)
    for verb, text in (("approve", "clear the item for training"), ("reject", "exclude the item from every later stage")):
        d = rv.add_parser(verb, help=text)
        d.add_argument("id", type=int)
        d.add_argument("--note", required=True, help="why (stored with the decision)")
        d.add_argument("--by", help="reviewer name (default $SAO_REVIEWER or the login name)")
        d.add_argument("--force", action="store_true", help="decide an already decided item again")
        d.set_defaults(func=cmd_review_decide)
    lc = rv.add_parser("load-catalogue", help="load a CSV/Parquet of copyrighted recordings (artist,title,...)")
    lc.add_argument("file")
    lc.set_defaults(func=cmd_review_load)
    sv = rv.add_parser("serve-detection", help="run the loopback content-detection service")
    sv.add_argument("--references", help="folder of reference tracks declared copyrighted")
    sv.add_argument("--port", type=int, default=0)
    sv.set_defaults(func=cmd_review_serve)

    em = sub.add_parser("embed", help="LAION-CLAP embeddings of admitted audio not yet embedded")
    em.add_argument("--uncalibrated", action="store_true", help="random weights when no checkpoint is configured")
    em.set_defaults(func=cmd_embed)
    dd = sub.add_parser("dedup", help="group repeated recordings (exact copies, near replicas) and keep one each")
    dd.add_argument("--uncalibrated", action="store_true", help="use embeddings of the random-weight model")
    dd.set_defaults(func=cmd_dedup)
    mz = sub.add_parser("memorization", help="HTML page of generations closest to the training set")
    mz.add_argument("generated_dir")
    mz.add_argument("--out", default="attribution/memorization", help="output folder (index.html + media/)")
    mz.add_argument("--top", type=int, default=50)
    mz.add_argument("--k", type=int, default=3, help="nearest training recordings per generation")
    mz.add_argument("--uncalibrated", action="store_true")
    mz.set_defaults(func=cmd_memorization)

    ge = sub.add_parser("generate", help="text to audio with a model config (and its weights)")
    ge.add_argument("prompt")
    ge.add_argument("--model-config", default="stable_audio_open_1_0",
                    help="shipped model config name (stable_audio_open_1_0, tiny) or a JSON path")
    ge.add_argument("--ckpt", help="model.safetensors or model.ckpt")
    ge.add_argument("--t5-path", help="local folder with the T5 encoder and tokenizer (or $SAO_T5_PATH)")
    ge.add_argument("--seconds", type=float, default=10.0)
    ge.add_argument("--steps", type=int, default=100)
    ge.add_argument("--cfg-scale", type=float, default=7.0)
    ge.add_argument("--sampler", default="dpmpp-3m-sde", choices=["dpmpp-3m-sde", "dpmpp-2m"])
    ge.add_argument("--sigma-min", type=float, default=0.3)
    ge.add_argument("--sigma-max", type=float, default=500.0)
    ge.add_argument("--seed", type=int, default=0)
    ge.add_argument("--normalize", action="store_true", help="peak-normalise the output")
    ge.add_argument("--out", default="generated.wav")
    ge.set_defaults(func=cmd_generate)
    ev = sub.add_parser("eval", help="paper-style evaluation tables").add_subparsers(dest="sub", required=True)
    ea = ev.add_parser("autoencoder", help="reconstruction metrics (STFT, MEL, SI-SDR) as paper tables 3 and 4")
    ea.add_argument("checkpoint", nargs="?", help="autoencoder .safetensors (sao train vae, or a whole model)")
    ea.add_argument("--data", required=True, help="a folder of audio files, or a release name")
    ea.add_argument("--model-config", default="tiny")
    ea.add_argument("--chunk-seconds", type=float, default=47.55)
    ea.add_argument("--limit", type=int)
    ea.add_argument("--dataset", choices=["audiocaps", "songdescriber"], default="audiocaps",
                    help="which paper table to print beside ours")
    ea.add_argument("--uncalibrated", action="store_true", help="allow random weights (marked in every table)")
    ea.add_argument("--out", default="data/eval/autoencoder")
    ea.set_defaults(func=cmd_eval_autoencoder)
    eg = ev.add_parser("generate", help="FD, KL and CLAP score as paper tables 1, 2 and 5")
    eg.add_argument("checkpoint", nargs="?", help="model .safetensors")
    eg.add_argument("--prompts", required=True, help="CSV/JSONL (id, caption[, audio]) or one caption per line")
    eg.add_argument("--model-config", default="tiny")
    eg.add_argument("--t5-path")
    eg.add_argument("--seconds", type=float, default=10.0, help="seconds_total of each generation")
    eg.add_argument("--trim", type=float, help="keep this many seconds from the start (default --seconds)")
    eg.add_argument("--steps", type=int, default=100)
    eg.add_argument("--cfg-scale", type=float, default=7.0)
    eg.add_argument("--seed", type=int, default=0)
    eg.add_argument("--batch-size", type=int, default=4)
    eg.add_argument("--clap-checkpoint", help="LAION-CLAP checkpoint (audio and roberta text towers)")
    eg.add_argument("--clap-model", default="HTSAT-tiny")
    eg.add_argument("--panns-checkpoint", help="Cnn14_DecisionLevelMax checkpoint (the KL tagger)")
    eg.add_argument("--limit", type=int)
    eg.add_argument("--dataset", choices=["audiocaps", "songdescriber"], default="audiocaps")
    eg.add_argument("--uncalibrated", action="store_true", help="allow random weights (marked in every table)")
    eg.add_argument("--out", default="data/eval/generation")
    eg.set_defaults(func=cmd_eval_generate)
    tt = sub.add_parser("tiny-t5", help="write a small random T5 encoder + tokenizer folder for CPU smoke runs")
    tt.add_argument("dir")
    tt.add_argument("--d-model", type=int, default=32)
    tt.set_defaults(func=cmd_tiny_t5)

    tr = sub.add_parser("train", help="train the autoencoder or the DiT on shards (torchrun for DDP)")
    trs = tr.add_subparsers(dest="sub", required=True)
    for stage in ("vae", "dit"):
        t = trs.add_parser(stage, help=f"train the {'autoencoder' if stage == 'vae' else 'diffusion transformer'}")
        t.add_argument("--shards", required=True, help="a complete shards build (folder or fsspec URL)")
        t.add_argument("--out", required=True, help="checkpoint folder (resumes from it)")
        t.add_argument("--model-config", default="tiny")
        t.add_argument("--steps", type=int, default=100)
        t.add_argument("--batch-size", type=int, default=4, help="per process and micro-batch")
        t.add_argument("--global-batch-size", type=int, default=0,
                       help="if set: per-process batch = global / (processes x grad-accum)")
        t.add_argument("--data-streams", type=int, default=0,
                       help="data streams the shards are dealt to (default: one per process); fixing it makes "
                            "the data order independent of the number of processes")
        t.add_argument("--grad-accum", type=int, default=1)
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--lr", type=float)
        t.add_argument("--checkpoint-every", type=int, default=50)
        t.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
        t.add_argument("--gradient-checkpointing", action="store_true")
        t.add_argument("--t5-path")
        t.add_argument("--vae-checkpoint", help="dit: the trained autoencoder weights (safetensors)")
        t.add_argument("--freeze-encoder", action="store_true", help="vae stage 2: train the decoder on")
        t.add_argument("--disc-channels", type=int, default=32)
        t.add_argument("--sample-length", type=int, default=16384, help="vae: samples per training clip")
        t.add_argument("--key-file", help="ed25519 private key signing the checkpoints (default [signing].key_file, "
                       "else $SAO_SIGNING_KEY; none: unsigned)")
        if stage == "dit":
            t.add_argument("--latents", help="pre-encoded latent shards (sao train encode-latents)")
        t.set_defaults(func=cmd_train)
    el = trs.add_parser("encode-latents", help="pre-encode the diffusion shards with a trained autoencoder")
    el.add_argument("--shards", required=True)
    el.add_argument("--vae-checkpoint", required=True)
    el.add_argument("--model-config", default="tiny")
    el.add_argument("--set", default="diffusion")
    el.add_argument("--out", help="default: SHARDS/latents/<autoencoder sha256[:12]>")
    el.set_defaults(func=cmd_encode_latents)
    mf = sub.add_parser("manifest", help="attribution manifests of checkpoints").add_subparsers(dest="sub", required=True)
    mv = mf.add_parser("verify", help="check a checkpoint against its manifest and the shards")
    mv.add_argument("checkpoint")
    mv.add_argument("--skip-shards", action="store_true", help="only check weights against the manifest")
    mv.add_argument("--key", metavar="PUB", help="ed25519 public key (PEM): also check the signed statement "
                    "(without it no signature is checked, and the output says so)")
    mv.set_defaults(func=cmd_manifest_verify)
    ky = sub.add_parser("keys", help="ed25519 signing keys").add_subparsers(dest="sub", required=True)
    kg = ky.add_parser("generate", help="write DIR/signing.key (private, mode 0600) and DIR/signing.pub")
    kg.add_argument("--out", required=True, metavar="DIR")
    kg.set_defaults(func=cmd_keys_generate)

    sub.add_parser("demo", help="run every stage end to end on the embedded defaults").set_defaults(func=cmd_demo)
    return p


def _register_secrets(cfg: config_mod.Config) -> None:
    """Every credential the config reaches is hidden from all output from here on."""
    try:
        register_secrets(config_mod.secrets(cfg))
    except config_mod.ConfigError:       # e.g. a missing token file: the command that needs it says so
        register_secrets(x for x in (*cfg.replica.api_tokens, *cfg.replica.oauth_tokens))


def main(argv: list[str] | None = None) -> int:
    from .attribution.policy import ReleaseError
    from .fsutil import UnsafePathError
    args = build_parser().parse_args(argv)
    install_excepthook()                   # an unexpected traceback is redacted too
    try:
        try:
            cfg = config_mod.load(args.config)
        except config_mod.ConfigError:
            if not args.log_level:
                raise
            cfg = None                     # the command reports it if it needs the config
        if cfg is not None:
            _register_secrets(cfg)
        setup_logging(args.log_level or cfg.logging.level)
        return args.func(args)
    except config_mod.ConfigError as exc:
        print(redact(f"sao: config error: {exc}"), file=sys.stderr)
        return 2
    except (ReleaseError, UnsafePathError) as exc:   # bad input: a bad name, an unknown or changed release
        print(redact(f"sao: {exc}"), file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - top level: one clear line, details at DEBUG
        from .catalog import CatalogError, CatalogInUse
        from .sources.freesound import FreesoundError
        from .sources.sample_corpus import CorpusError
        from .analysis.panns import CheckpointError
        from .models import CheckpointMismatch
        if isinstance(exc, CatalogInUse):  # another sao run holds the catalogue: nothing was done, try later
            log.debug("details", exc_info=True)
            print(redact(f"sao: error: {exc}"), file=sys.stderr)
            return 2
        if isinstance(exc, (CatalogError, CorpusError, FreesoundError, CheckpointError, CheckpointMismatch, ValueError,
                            OSError)):
            log.debug("details", exc_info=True)
            print(redact(f"sao: error: {exc}"), file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
