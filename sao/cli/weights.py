"""`sao weights list` and `sao weights fetch NAME`: the pretrained checkpoints, verified (sao.weights)."""
from __future__ import annotations

import os
import pathlib
import sys

from .common import group


def _models_dir(args, cfg) -> pathlib.Path:
    from ..weights.fetch import default_models_dir
    return pathlib.Path(args.dir).expanduser() if args.dir else default_models_dir(cfg)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def _setting_lines(cfg, models_dir: pathlib.Path) -> list[str]:
    """For each stage: the setting (or option) that points the pipeline at the fetched file, and what the
    config says now where it has a setting."""
    from ..weights import table
    now = {"music_screen": cfg.music_screen.checkpoint, "dedup": cfg.dedup.clap_checkpoint}
    # (an empty setting was pointed at a fetched, verified file when the config was loaded)
    wanted = {"music_screen": table.file_path(models_dir, table.entry("panns"), table.entry("panns").files[0]),
              "dedup": table.file_path(models_dir, table.entry("clap"), table.entry("clap").files[0])}
    lines = []
    for stage, hint in table.config_hints(models_dir):
        if stage in now:
            value = now[stage]
            if value and cfg.path(value).resolve() == wanted[stage].resolve():
                state = "uses the fetched file (a setting left empty follows weights.lock.json):"
            elif value:
                state = f"now {value!r}: elsewhere; to use the fetched file set"
            else:
                state = "not set: add"
            lines.append(f"  {stage}: {state} {hint}")
        else:
            t5 = os.environ.get("SAO_T5_PATH")
            extra = f" ($SAO_T5_PATH is {t5!r})" if t5 and stage == "dit_text_encoder" else ""
            lines.append(f"  {stage}: {hint}{extra}")
    return lines


def cmd_weights_list(args, cfg) -> int:
    from ..weights import fetch, table
    d = _models_dir(args, cfg)
    files, calibrated = fetch.status(d, verify=args.verify)
    print(f"weights in {d} (lock file {fetch.LOCK_NAME})")
    width = max(len(s.key) for s in files)
    print(f"  {'NAME/FILE':<{width}}  {'STAGE':<16}  STATUS")
    for s in files:
        print(f"  {s.key:<{width}}  {s.stage:<16}  {s.state}" + (f" ({s.detail})" if s.detail else ""))
    print("stages:")
    for stage, (what, _) in table.STAGES.items():
        short = [s.key for s in files if s.state != "present"
                 and s.key.split("/", 1)[0] in table.STAGES[stage][1]]
        state = "calibrated" if calibrated[stage] else f"NOT calibrated (needs {', '.join(short)})"
        print(f"  {stage:<16}  {state}: {what}")
    print("where the pipeline finds them:")
    print("\n".join(_setting_lines(cfg, d)))
    return 0


def cmd_weights_fetch(args, cfg) -> int:
    from ..log import register_secrets
    from ..weights import fetch, table
    d = _models_dir(args, cfg)
    token = args.token or os.environ.get(fetch.TOKEN_ENV, "").strip() or None
    register_secrets([token])            # hidden from every log line and error from here on
    mirror = fetch.mirror_from_env()
    e = table.entry(args.name)
    if e.gated and not token and not mirror:
        print(f"note: {e.hf_repo} is gated: accept its licence on https://huggingface.co/{e.hf_repo} and pass "
              f"--token or set ${fetch.TOKEN_ENV}, or the download is refused", file=sys.stderr)
    done = fetch.fetch(args.name, d, files=args.file, expect=args.expect, token=token, mirror=mirror,
                       progress=not args.no_progress, retries=args.retries)
    for r in done:
        how = (f"{_size(r.downloaded)} in {r.seconds:.1f} s ({_size(r.rate)}/s)" if r.downloaded
               else "already there")
        print(f"{r.key}: {how}, {r.digest_kind} {r.digest} verified -> {r.path}")
    hint = dict(table.config_hints(d)).get(e.stage)
    if hint:
        print(f"{e.stage}: {hint}")
    return 0


def register(sub) -> None:
    """Add this module's commands to the top-level sub-parsers SUB."""
    from ..weights import table
    w = group(sub, "weights", "the pretrained checkpoints (PANNs, LAION-CLAP, T5, SAO): fetch and check")
    ls = w.add_parser("list", help="every checkpoint: present, missing or mismatched, and which stages run "
                                   "calibrated")
    ls.add_argument("--dir", help="models folder (default: <[paths].data_dir>/models)")
    ls.add_argument("--verify", action="store_true", help="hash every file again, even those the lock file "
                                                         "recorded unchanged")
    ls.set_defaults(func=cmd_weights_list)
    fe = w.add_parser("fetch", help="download a checkpoint, verify its digest and record it in weights.lock.json")
    fe.add_argument("name", choices=[e.name for e in table.ENTRIES], help="which checkpoint (`sao weights list` "
                    "shows them all)")
    fe.add_argument("--dir", help="models folder (default: <[paths].data_dir>/models)")
    fe.add_argument("--file", action="append", help="only this file of the entry (repeatable)")
    fe.add_argument("--expect", action="append", metavar="[FILE=]HEX",
                    help="the digest a file without a published one must have (repeatable)")
    fe.add_argument("--token", help="Hugging Face token (default $HF_TOKEN); sent to huggingface.co only")
    fe.add_argument("--retries", type=int, default=3, help="resume attempts after a lost connection")
    fe.add_argument("--no-progress", action="store_true", help="no progress bar")
    fe.set_defaults(func=cmd_weights_fetch)
