"""`sao generate`, `eval`, `tiny-t5`, `train` (and `train encode-latents`) and `memorization`: the models."""
from __future__ import annotations

import json
import pathlib
import sys

from .common import no_config


def cmd_memorization(args, cfg) -> int:
    from ..dedup.memorization import memorization_for_config
    out = memorization_for_config(cfg, args.generated_dir, args.out, top=args.top, k=args.k,
                             uncalibrated=True if args.uncalibrated else None)
    print(json.dumps(out, indent=1))
    return 0


@no_config
def cmd_generate(args, cfg) -> int:
    import soundfile as sf
    import torch

    from ..models import create_model, load_checkpoint
    from ..models.sampling import generate
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


def cmd_eval_autoencoder(args, cfg) -> int:
    from ..eval import autoencoder, report
    out = autoencoder.run(args.checkpoint, args.data, model_config=args.model_config, chunk_seconds=args.chunk_seconds,
                          limit=args.limit, uncalibrated=args.uncalibrated, cfg=cfg)
    s = out["summary"]
    out_dir = pathlib.Path(args.out)
    from ..fsutil import atomic_write_text
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(out, indent=1, default=str))
    files = report.write_report(out_dir, f"Autoencoder evaluation: {args.data}", report.autoencoder_tables(s, args.dataset))
    print(f"{s['recordings']} recordings ({s['skipped']} skipped): STFT distance {s['stft_distance']:.3f}, "
          f"MEL distance {s['mel_distance']:.3f}, SI-SDR {s['si_sdr']:.2f} dB; latent {s['latent_rate_hz']:g} Hz x "
          f"{s['latent_channels']}; {s['audio_s_per_s']:.1f} audio-s/s" + (" [UNCALIBRATED]" if s["uncalibrated"] else ""))
    print(f"report: {files['html']} (and report.md, results.json)")
    return 0


@no_config
def cmd_eval_generate(args, cfg) -> int:
    from ..eval import generation
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


def cmd_tiny_t5(args, cfg) -> int:
    from ..models.t5_local import build_tiny_t5
    from ..sources import sample_corpus
    texts = [f"{e['title']} {e.get('description') or ''} {' '.join(e.get('tags') or [])}"
             for e in sample_corpus.load_metadata(cfg.path(cfg.paths.sample_corpus))] * 20
    print(build_tiny_t5(args.dir, texts, d_model=args.d_model))
    return 0


def cmd_train(args, cfg) -> int:
    from ..signing import key_file_for
    from ..train.trainer import TrainSettings, train_dit, train_vae
    from ..train.config import DIT_SETTINGS, VAE_SETTINGS
    # the training-section flags: only those given override the model config (the rest stay None)
    named = {f: getattr(args, f) for f in (VAE_SETTINGS if args.sub == "vae" else DIT_SETTINGS)}
    s = TrainSettings(stage=args.sub, shards_dir=args.shards, out_dir=args.out, model_config=args.model_config,
                      steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, seed=args.seed,
                      checkpoint_every=args.checkpoint_every, precision=args.precision, logger=args.logger,
                      gradient_checkpointing=args.gradient_checkpointing, t5_path=args.t5_path,
                      vae_checkpoint=args.vae_checkpoint, freeze_encoder=args.freeze_encoder,
                      sample_length=args.sample_length, training=dict(args.set) or None,
                      data_streams=args.data_streams, global_batch_size=args.global_batch_size,
                      latents=getattr(args, "latents", None), signing_key_file=key_file_for(cfg, args.key_file),
                      catalog=str(cfg.catalog_path) if cfg.catalog_path.exists() else None, **named)
    out = train_vae(s) if args.sub == "vae" else train_dit(s)
    print(json.dumps(out, indent=1))
    return 0


@no_config
def cmd_encode_latents(args, cfg) -> int:
    from ..train.latents import encode_latents
    print(json.dumps(encode_latents(args.shards, args.vae_checkpoint, model_config=args.model_config,
                                    out_dir=args.out, set_=args.set), indent=1))
    return 0


_FLAG_TYPES = {"disc_channels": int}


def _set_arg(text: str) -> tuple[str, object]:
    import argparse
    path, eq, value = text.partition("=")
    if not eq or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PATH=VALUE")
    try:
        return path, json.loads(value)
    except json.JSONDecodeError:
        return path, value            # a bare string (a choice such as paper)


def _training_flags(t, stage: str) -> None:
    """The model config's training section from the command line, generated from its schema: one flag per
    TrainSettings shortcut (the config paths it sets in its help) and --set for any path."""
    from ..train.config import DIT_SCHEMA, DIT_SETTINGS, VAE_SCHEMA, VAE_SETTINGS, schema_paths
    table, schema = (VAE_SETTINGS, VAE_SCHEMA) if stage == "vae" else (DIT_SETTINGS, DIT_SCHEMA)
    g = t.add_argument_group("training section overrides (default: the model config's values)")
    for field, paths in table.items():
        g.add_argument(f"--{field.replace('_', '-')}", dest=field, type=_FLAG_TYPES.get(field, float),
                       help="sets training." + ", training.".join(paths))
    if stage == "dit":        # one flag set for both stages' commands (scripts pass it to both): no effect here
        g.add_argument("--disc-channels", type=int, help="the autoencoder's discriminator filters (no effect on dit)")
    g.add_argument("--set", action="append", default=[], type=_set_arg, metavar="PATH=VALUE",
                   help="set training.PATH (VALUE as JSON, else a string); repeatable. PATH is one of: "
                        + ", ".join(schema_paths(schema)))


def register(sub) -> None:
    """Add this module's commands to the top-level sub-parsers SUB."""
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
        t.add_argument("--checkpoint-every", type=int, default=50)
        t.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
        t.add_argument("--gradient-checkpointing", action="store_true")
        t.add_argument("--logger", default="jsonl", choices=["jsonl", "tensorboard", "wandb"],
                       help="also send the losses to TensorBoard (<out>/tensorboard) or Weights & Biases")
        t.add_argument("--t5-path")
        t.add_argument("--vae-checkpoint", help="dit: the trained autoencoder weights (safetensors)")
        t.add_argument("--freeze-encoder", action="store_true", help="vae stage 2: train the decoder on")
        t.add_argument("--sample-length", type=int, default=16384, help="vae: samples per training clip")
        t.add_argument("--key-file", help="ed25519 private key signing the checkpoints (default [signing].key_file, "
                       "else $SAO_SIGNING_KEY; none: unsigned)")
        if stage == "dit":
            t.add_argument("--latents", help="pre-encoded latent shards (sao train encode-latents)")
        _training_flags(t, stage)
        t.set_defaults(func=cmd_train)
    el = trs.add_parser("encode-latents", help="pre-encode the diffusion shards with a trained autoencoder")
    el.add_argument("--shards", required=True)
    el.add_argument("--vae-checkpoint", required=True)
    el.add_argument("--model-config", default="tiny")
    el.add_argument("--set", default="diffusion")
    el.add_argument("--out", help="default: SHARDS/latents/<autoencoder sha256[:12]>")
    el.set_defaults(func=cmd_encode_latents)
