"""The pipeline's commands: `sao refresh` (the data stages, exactly what the scheduled refresh flow runs),
`sao stages` (the registry) and one command per stage (`crawl freesound|fma|local`, `gate`, `download`, `decode`,
`screen`, `review run`, `embed`, `dedup`), each running its registry stage through the one runner."""
from __future__ import annotations

import json
import sys

from .common import group


def _options(args, **kw):
    from ..pipeline.stage import RunOptions
    return RunOptions(**kw)


def _run(cfg, names, options, *, flow: str, secrets: dict | None = None) -> dict:
    """Run the stages, print what each did (its summary line, then its details as JSON) and return their Stats."""
    from ..pipeline.runner import run_pipeline, summary_lines

    def show(stage, st) -> None:
        print(f"== {stage.name} ({st.seconds:.1f}s)", file=sys.stderr)
        for k, v in summary_lines(st):
            print(f"   {k}: {v}", file=sys.stderr)
    return run_pipeline(cfg, names, options=options, secrets=secrets, flow=flow, on_stage=show)


def run_one(cfg, name: str, **options):
    """One registry stage for a command that prints its own summary (`sao release create`, `shards build`)."""
    from ..pipeline.runner import run_pipeline
    from ..pipeline.stage import RunOptions
    return run_pipeline(cfg, [name], options=RunOptions(**options), flow=name)[name]


def _one(cfg, name: str, options, *, required: bool = False) -> tuple[int, object]:
    """One stage. ``required``: a stage that cannot run with this config is an error (exit 1), not a skip."""
    st = _run(cfg, [name], options, flow=name)[name]
    details = {k: v for k, v in st.details.items() if k != "table"}
    print(json.dumps({"skipped": st.skipped} if st.skipped else {**details, "errors": st.errors}, indent=1,
                     default=str))
    if st.skipped and required:
        print(f"sao: {name}: {st.skipped}", file=sys.stderr)
        return 1, st
    return 0, st


def cmd_crawl_freesound(args, cfg) -> int:
    return _one(cfg, "crawl_freesound", _options(args, full=args.full, reconcile=args.reconcile,
                                                 base_url=args.base_url))[0]


def cmd_crawl_fma(args, cfg) -> int:
    return _one(cfg, "ingest_fma", _options(args, fma_dir=args.dir, refresh_cache=True), required=True)[0]


def cmd_crawl_local(args, cfg) -> int:
    return _one(cfg, "ingest_local", _options(args, local_dir=args.dir, refresh_cache=True), required=True)[0]


def cmd_gate(args, cfg) -> int:
    st = _run(cfg, ["license_gate"], _options(args), flow="license_gate")["license_gate"]
    print(st.details["table"])
    print(f"decisions written: {st.details['written']}, take-downs: {st.details['takedowns']}")
    return 0


def cmd_download(args, cfg) -> int:
    code, st = _one(cfg, "download", _options(args, base_url=args.base_url, limit=args.limit))
    failed = st.details.get("failed")
    if failed:          # a run that stored little must not look like success to cron or CI
        print(f"sao: download: {failed} of {st.details['candidates']} downloads failed (kept for the next run; "
              "reasons above and under \"errors\")", file=sys.stderr)
        return 1
    return code


def cmd_decode(args, cfg) -> int:
    code, st = _one(cfg, "decode", _options(args))
    for rid, why in sorted(st.errors.items()):
        print(f"{rid}: rejected: {why}", file=sys.stderr)
    return code


def cmd_refresh(args, cfg) -> int:
    from ..pipeline import registry
    skip = set(args.skip or ())
    for name in skip:
        registry.get(name)                     # an unknown name is an error, not a no-op
    names = [s.name for s in registry.group("refresh") if s.name not in skip]
    out = _run(cfg, names, _options(args, full=args.full, reconcile=args.reconcile, fma_dir=args.fma_dir,
                                    local_dir=args.local_dir, base_url=args.base_url,
                                    refresh_cache=args.refresh_cache,
                                    uncalibrated=True if args.uncalibrated else None), flow="refresh")
    print(json.dumps({n: ({"skipped": st.skipped} if st.skipped else
                          {k: v for k, v in st.details.items() if k != "table"}) for n, st in out.items()},
                     indent=1, default=str))
    if "license_gate" in out and not out["license_gate"].skipped:
        print(out["license_gate"].details["table"])
    return 0


def cmd_screen(args, cfg) -> int:
    return _one(cfg, "music_screen", _options(args, uncalibrated=True if args.uncalibrated else None,
                                              screen_checkpoint=args.checkpoint), required=True)[0]


def cmd_review_run(args, cfg) -> int:
    code, st = _one(cfg, "copyright_review", _options(args, detection_url=args.detection_url))
    if "catalogue match" in st.errors:            # asked for by name: a match that could not run is an error
        print(f"sao: review run: {st.errors['catalogue match']}", file=sys.stderr)
        return 1
    return code


def cmd_embed(args, cfg) -> int:
    code, st = _one(cfg, "embed", _options(args, uncalibrated=True if args.uncalibrated else None), required=True)
    for u in st.details.get("undecodable", []):      # each by name: it is rejected (decode) and never admitted
        print(f"undecodable: {u['path']} ({u['recording_id']}): {u['error']}", file=sys.stderr)
    return code


def cmd_dedup(args, cfg) -> int:
    return _one(cfg, "dedup", _options(args, uncalibrated=True if args.uncalibrated else None))[0]


def cmd_stages(args, cfg) -> int:
    from ..pipeline import registry
    print(f"{'stage':20s} {'group':8s} {'batched':8s} reads -> writes")
    for s in registry.STAGES:
        print(f"{s.name:20s} {s.group:8s} {'yes' if s.batched else 'no':8s} {', '.join(s.reads)} -> "
              f"{', '.join(s.writes)}")
    return 0


def register(sub) -> None:
    """Add this module's commands to the top-level sub-parsers SUB."""
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
    lo = cr.add_parser("local", help="ingest a local folder of audio with metadata.csv or JSON sidecars")
    lo.add_argument("dir", nargs="?", help="the folder (default [local].folder)")
    lo.set_defaults(func=cmd_crawl_local)

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
    rf = sub.add_parser("refresh", help="the data stages, as the scheduled refresh flow runs them (`sao stages`)")
    rf.add_argument("--full", action="store_true", help="ignore the crawl cursors")
    rf.add_argument("--reconcile", action="store_true", help="detect deletions and re-licensing (implies --full)")
    rf.add_argument("--fma-dir", help="folder holding fma_metadata/ (default [fma].metadata_dir)")
    rf.add_argument("--local-dir", help="a local folder source (default [local].folder)")
    rf.add_argument("--base-url", help="Freesound API base URL (default [freesound].base_url)")
    rf.add_argument("--skip", action="append", metavar="STAGE", help="leave out this stage (repeatable)")
    rf.add_argument("--refresh-cache", action="store_true",
                    help="read an FMA dump or local folder again even when it is unchanged since its last ingest")
    rf.add_argument("--uncalibrated", action="store_true",
                    help="screen and embed with random weights where no checkpoint is configured (marked as such)")
    rf.set_defaults(func=cmd_refresh)
    sub.add_parser("stages", help="list the pipeline's stages in order, with what each reads and writes"
                   ).set_defaults(func=cmd_stages)

    sc = sub.add_parser("screen", help="PANNs music screen over admitted audio of the screened sources")
    sc.add_argument("--uncalibrated", action="store_true",
                    help="run with random weights when no checkpoint is configured (decisions say so)")
    sc.add_argument("--checkpoint", help="Cnn14_DecisionLevelMax checkpoint (default [music_screen].checkpoint)")
    sc.set_defaults(func=cmd_screen)

    rv = group(sub, "review", "copyright review queue")
    rr = rv.add_parser("run", help="submit flagged music to content detection, match FMA against the catalogue")
    rr.add_argument("--detection-url", help="content-detection service (default [review].detection_url)")
    rr.set_defaults(func=cmd_review_run)

    em = sub.add_parser("embed", help="LAION-CLAP embeddings of admitted audio not yet embedded")
    em.add_argument("--uncalibrated", action="store_true", help="random weights when no checkpoint is configured")
    em.set_defaults(func=cmd_embed)
    dd = sub.add_parser("dedup", help="group repeated recordings (exact copies, near replicas) and keep one each")
    dd.add_argument("--uncalibrated", action="store_true", help="use embeddings of the random-weight model")
    dd.set_defaults(func=cmd_dedup)
