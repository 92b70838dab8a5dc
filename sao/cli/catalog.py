"""`sao config`, `catalog`, `status`, `corpus`, `replica` and `takedown`: the configuration, the catalogue,
the sample corpus, the loopback replicas and take-down requests."""
from __future__ import annotations

import json
import signal

from .. import config as config_mod
from .common import no_config, open_catalog


def cmd_config_show(args, cfg) -> int:
    print(config_mod.to_toml(cfg), end="")
    print(f"# config hash: {cfg.config_hash()}")
    return 0


@no_config
def cmd_config_validate(args, cfg) -> int:
    config_mod.load(args.file)
    print(f"{args.file}: ok")
    return 0


def cmd_catalog_init(args, cfg) -> int:
    with open_catalog(cfg) as cat:
        print(f"{cfg.catalog_path}: schema version {cat.schema_version()}")
    return 0


def cmd_catalog_status(args, cfg) -> int:
    with open_catalog(cfg) as cat:
        print(f"catalogue {cfg.catalog_path} (schema version {cat.schema_version()})")
        for t, n in cat.counts().items():
            print(f"  {t:18s} {n:8d}")
    return 0


def cmd_status(args, cfg) -> int:
    from ..runs import catalogue_state, format_status, freesound_state, latest_runs
    if not cfg.catalog_path.exists():
        print(f"sao: no catalogue at {cfg.catalog_path} yet (run `make demo` or a refresh first)")
        return 1
    with open_catalog(cfg) as cat:
        runs, state = latest_runs(cat, args.runs), catalogue_state(cat)
        state["freesound"] = freesound_state(cat, requests_per_day=cfg.freesound.requests_per_day,
                                             page_size=cfg.freesound.page_size)
    if args.json:
        print(json.dumps({"catalogue": state, "runs": runs}, indent=1, default=str))
    else:
        print(f"{cfg.catalog_path} (schema version {state['schema_version']})")
        print(format_status(runs, state))
    return 0


def cmd_catalog_restart_pass(args, cfg) -> int:
    """Stop the running Freesound pass of a kind: the next `crawl --full` (or `--reconcile`) starts from zero."""
    with open_catalog(cfg) as cat:
        n = cat.abandon_crawl_passes("freesound", args.kind)
    print(f"{n} running {args.kind} pass(es) abandoned; the next --{args.kind} starts a new one" if n
          else f"no {args.kind} pass is running")
    return 0


def cmd_catalog_export(args, cfg) -> int:
    from ..catalog import TABLES
    from ..fsutil import output_folder
    out = cfg.location(args.out or cfg.paths.exports)           # a folder, file:// or any fsspec URL
    tables = TABLES if args.table == "all" else (args.table,)
    with open_catalog(cfg) as cat, output_folder(out) as folder:
        for t in tables:
            cat.export_parquet(t, folder / f"{t}.parquet")
    for t in tables:
        print(f"{out.rstrip('/')}/{t}.parquet")
    return 0


def cmd_corpus_verify(args, cfg) -> int:
    from ..sources import sample_corpus
    rep = sample_corpus.verify(cfg.path(cfg.paths.sample_corpus))
    print(f"{rep.checked} files, {rep.seconds:.1f} s of audio, {rep.bytes / 1e6:.2f} MB")
    for p in rep.problems:
        print(f"  problem: {p}")
    return 0 if rep.ok else 1


def cmd_corpus_list(args, cfg) -> int:
    from ..sources import sample_corpus
    for e in sample_corpus.load_metadata(cfg.path(cfg.paths.sample_corpus)):
        print(f"{e['id']:32s} {e['replica']:9s} {e['kind']:15s} {e['license']:18s} {e['duration']:7.2f}s "
              f"{e['sample_rate']:6d} Hz {e['channels']}ch  {e['title']} - {e['author']}")
    return 0


def cmd_replica_serve(args, cfg) -> int:
    from ..sources import sample_corpus
    from ..sources.replica import ReplicaServer, ReplicaSettings, build_fma_replica, build_freesound_sounds
    rc = cfg.replica
    if args.requests_per_day < 0:
        print("sao: --requests-per-day must be 0 (no daily quota) or more")
        return 2
    entries = sample_corpus.load_metadata(cfg.path(cfg.paths.sample_corpus))
    root = cfg.path(rc.data_dir)
    build_fma_replica(entries, root / "fma")
    settings = ReplicaSettings(api_tokens=rc.api_tokens, oauth_tokens=rc.oauth_tokens,
                               rate_limit_per_minute=args.rate_limit if args.rate_limit is not None
                               else rc.rate_limit_per_minute, requests_per_day=args.requests_per_day,
                               max_page_size=rc.max_page_size,
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


def cmd_takedown_add(args, cfg) -> int:
    with open_catalog(cfg) as cat:
        tid = cat.add_takedown(args.recording, args.reason, args.by)
        known = cat.get_recording(args.recording) is not None
    print(f"take-down {tid} recorded for {args.recording}" + ("" if known else " (not in the catalogue yet)"))
    return 0


def cmd_takedown_list(args, cfg) -> int:
    with open_catalog(cfg) as cat:
        for t in cat.takedowns():
            print(f"{t['takedown_id']:5d} {t['status']:9s} {t['received_at']:%Y-%m-%d %H:%M} {t['recording_id']:24s} "
                  f"{t['reason']} ({t['requested_by'] or '-'})")
    return 0


def cmd_takedown_impact(args, cfg) -> int:
    from ..attribution.release import takedown_impact
    roots = args.checkpoints or [str(cfg.path(cfg.paths.checkpoints))]
    with open_catalog(cfg) as cat:
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


def register(sub) -> None:
    """Add this module's commands to the top-level sub-parsers SUB."""
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
    ex.add_argument("--out", help="output folder or fsspec URL (default [paths].exports)")
    ex.set_defaults(func=cmd_catalog_export)
    rp = cat.add_parser("restart-pass", help="abandon the running Freesound full or reconcile pass "
                        "(a new --full or --reconcile otherwise continues it)")
    rp.add_argument("kind", choices=("full", "reconcile"))
    rp.set_defaults(func=cmd_catalog_restart_pass)

    co = sub.add_parser("corpus", help="the shipped sample corpus").add_subparsers(dest="sub", required=True)
    co.add_parser("verify", help="check every file: present, unmodified, decodable").set_defaults(func=cmd_corpus_verify)
    co.add_parser("list", help="list files with license and format").set_defaults(func=cmd_corpus_list)

    r = sub.add_parser("replica", help="loopback Freesound/FMA replicas").add_subparsers(dest="sub", required=True)
    s = r.add_parser("serve", help="serve the replicas on loopback until interrupted")
    s.add_argument("--host", help="loopback address (default [replica].host)")
    s.add_argument("--port", type=int, help="port (default [replica].port; 0 picks a free one)")
    s.add_argument("--rate-limit", type=int, help="requests per minute per token before 429 (0: no limit)")
    s.add_argument("--requests-per-day", type=int, default=0,
                   help="a daily quota per token, like freesound.org's 2000 (default 0: none)")
    s.set_defaults(func=cmd_replica_serve)

    stp = sub.add_parser("status", help="the latest flow runs and the catalogue's state")
    stp.add_argument("--runs", type=int, default=10, help="how many runs (default 10)")
    stp.add_argument("--json", action="store_true")
    stp.set_defaults(func=cmd_status)

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
