"""`sao release`, `shards`, `manifest` and `keys`: releases, their shards, checkpoint manifests and signing keys."""
from __future__ import annotations

import json
import sys

from .common import no_config, open_catalog


def cmd_release_create(args, cfg) -> int:
    from .pipeline import run_one
    out = run_one(cfg, "release", release_name=args.name, release_notes=args.notes, key_file=args.key_file).details
    print(f"release {out['name']} {out['status']} (version {out['version']}): {out['recordings']} recordings, "
          f"sha256 {out['content_sha256'][:16]}, {out['seconds']} s; built for model use {out['model_use']}")
    print(f"signature: {out['signature']} (key {out['signed_by'][:16]})" if out.get("signature")
          else "signature: UNSIGNED (no signing key configured)")
    if out.get("excluded"):
        print("excluded: " + ", ".join(f"{k} {v}" for k, v in out["excluded"].items()))
    return 0


def cmd_release_verify(args, cfg) -> int:
    from ..attribution.release_signature import verify_release
    from ..signing import SigningError, load_public_key
    try:
        key = load_public_key(args.key)
        with open_catalog(cfg, read_only=True) as cat:
            out = verify_release(cat, args.name, cfg.path(cfg.paths.releases), key)
    except SigningError as exc:
        print(f"sao: release verify FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"ok: release {out['release']} ({out['recordings']} recordings, sha256 {out['content_sha256'][:16]}) "
          f"signed by ed25519 key {out['signed_by'][:16]} ({out['signature']})")
    return 0


def cmd_release_list(args, cfg) -> int:
    from ..attribution.release import list_releases
    with open_catalog(cfg) as cat:
        for r in list_releases(cat):
            print(f"{r['version'] or '-':>4} {r['name']:24s} {r['n_recordings']:8d} {r['content_sha256'][:16]} "
                  f"{r['created_at']:%Y-%m-%d %H:%M}")
    return 0


def cmd_release_diff(args, cfg) -> int:
    from ..attribution.release import diff
    with open_catalog(cfg) as cat:
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


def cmd_release_report(args, cfg) -> int:
    import dataclasses

    from .pipeline import run_one
    if args.out:                                  # this run's output location: a folder or any fsspec URL
        cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, releases=args.out))
    out = run_one(cfg, "attribution_report", release_name=args.name).details
    print(f"attribution report of {out['release']}: {out['html']} ({out['recordings']} recordings, "
          f"{out['seconds']} s)")
    return 0


def cmd_shards_build(args, cfg) -> int:
    from .pipeline import run_one
    out = run_one(cfg, "shards", shards_name=args.name, workers=args.workers, release_name=args.release).details
    print(f"shards {out['name']}: {out['shards']} shard(s) ({out['shards_written']} written, "
          f"{out['shards_skipped']} already there), {out['bytes'] / 1e6:.1f} MB, samples {out['samples']}")
    print(f"  location: {out['location']}")
    print(f"  license mix: {json.dumps(out['license_mix'])}")
    print(f"  throughput: {out['audio_s_per_s']} audio-seconds per second")
    if out.get("rerun_after"):
        print(f"  built again without the recordings that failed to decode: {json.dumps(out['rerun_after'])}")
    if out["decode_failures"]:
        print(f"  undecodable, skipped: {json.dumps(out['decode_failures'])}")
    if not out["samples"]:
        print("  the catalogue has no admitted recording with audio yet: run `sao refresh` (or `make demo`) first")
    if out["status"] != "complete":
        print(f"error: shards {out['name']} are {out['status']}: recordings failed to decode while they were "
              "written (now rejected); run `sao shards build` again", file=sys.stderr)
        return 1
    return 0


@no_config
def cmd_manifest_verify(args, cfg) -> int:
    from ..signing import SigningError, load_public_key
    from ..train.manifest import ManifestError, verify
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


@no_config
def cmd_keys_generate(args, cfg) -> int:
    from ..signing import generate_keys
    out = generate_keys(args.out)
    print(f"private key: {out['private']} (mode 0600; keep it secret: set [signing].key_file or $SAO_SIGNING_KEY)")
    print(f"public key:  {out['public']} (key id {out['keyid'][:16]}; give it to verifiers: --key)")
    return 0


def register(sub) -> None:
    """Add this module's commands to the top-level sub-parsers SUB."""
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
    rr.add_argument("--out", help="where the report folder goes: a folder or fsspec URL (default [paths].releases)")
    rr.set_defaults(func=cmd_release_report)

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
