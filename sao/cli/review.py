"""`sao review list|show|approve|reject|load-catalogue|serve-detection`: the copyright review queue.

`review run`, a pipeline stage, lives in pipeline.py; both add to the one `review` group (common.group)."""
from __future__ import annotations

import os
import sys

from .. import config as config_mod
from .common import group, open_catalog


def cmd_review_list(args, cfg) -> int:
    from ..review import queue
    with open_catalog(cfg) as cat:
        rows = queue.items(cat, None if args.status == "all" else args.status)
        for r in rows:
            rec = cat.get_recording(r["recording_id"]) or {}
            print(f"{r['review_id']:5d} {r['status']:9s} {r['kind']:17s} {r['recording_id']:22s} "
                  f"{(rec.get('title') or '')[:30]:30s} {(rec.get('author') or '')[:24]}")
        if not rows:
            print(f"no review items with status {args.status}")
    return 0


def cmd_review_show(args, cfg) -> int:
    from ..review.stage import describe_item
    with open_catalog(cfg) as cat:
        print(describe_item(cat, args.id, cfg.path(cfg.paths.audio_store)))
    return 0


def _reviewer(args) -> str:
    import getpass
    return args.by or os.environ.get("SAO_REVIEWER") or getpass.getuser()


def cmd_review_decide(args, cfg) -> int:
    from ..review import queue
    cleared = args.sub == "approve"
    with open_catalog(cfg) as cat:
        item = queue.get(cat, args.id)
        if item["status"] in ("cleared", "flagged") and not args.force:
            print(f"sao: error: review {args.id} is already {item['status']} (use --force to decide again)",
                  file=sys.stderr)
            return 1
        queue.decide(cat, args.id, cleared=cleared, by=_reviewer(args), note=args.note, config_hash=cfg.config_hash())
    print(f"review {args.id}: {'cleared' if cleared else 'flagged'} by {_reviewer(args)}")
    return 0


def cmd_review_load(args, cfg) -> int:
    from ..review.catalogue_match import load_catalogue
    with open_catalog(cfg) as cat:
        print(f"{load_catalogue(cat, args.file)} copyrighted recordings loaded from {args.file}")
    return 0


def cmd_review_serve(args, cfg) -> int:
    from ..review.detection_service import DetectionService
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


def register(sub) -> None:
    """Add this module's commands to the top-level sub-parsers SUB."""
    rv = group(sub, "review", "copyright review queue")
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
