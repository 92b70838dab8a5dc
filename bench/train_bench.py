"""Training throughput: samples per second of the tiny autoencoder and DiT configs on a shards
build (and, on CUDA, of the official DiT shape on synthetic batches), on any torch device
(--device, default CUDA when present, else CPU). --dtype is mixed precision as training uses it:
the trainers' torch.autocast (TrainSettings.precision bf16/fp16, float16 with a GradScaler), the
weights and optimizer state staying float32; encode-latents runs under the same autocast.

Without SHARDS_DIR it builds what it needs in a temporary folder, as the tests do: a catalogue of
the shipped sample corpus (license gate passed, then the decode stage), its shards, and, without
--t5-path, a tiny random T5 trained on the corpus's texts; so the DiT rows run too.

    python bench/train_bench.py [SHARDS_DIR] [--t5-path DIR] [--steps 10]
    python bench/train_bench.py --small     # 2 steps at batch 2, 8,192-sample autoencoder clips, on shards
                                            # of 2 corpus files (1 official DiT step on CUDA)
    python bench/train_bench.py --device cuda --dtype bfloat16

The trainers pick their device themselves (CUDA when available: sao.train.loop.init_distributed);
for a single-process run this bench points that choice at --device.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("SAO_NO_PROGRESS", "1")

import torch
from _device import add_device_args, autocast, device_line, dtype_name, resolve, synchronize

import sao.train.loop as train_loop
from sao.train.latents import encode_latents
from sao.train.trainer import TrainSettings, train_dit, train_vae

PRECISION = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}     # TrainSettings.precision
HOW = "mixed precision: torch.autocast, weights float32"


@contextlib.contextmanager
def trainers_on(device: torch.device):
    """Single-process runs of the trainers on ``device`` (they pick CUDA when available themselves)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:              # torchrun: the launcher's choice stands
        yield
        return
    original = train_loop.init_distributed
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    train_loop.init_distributed = lambda: (0, 1, device)
    try:
        yield
    finally:
        train_loop.init_distributed = original


def official_dit_step_rate(device: torch.device, dtype: torch.dtype, steps: int = 5) -> float:
    from sao.models import create_model
    m = create_model("stable_audio_open_1_0").model.model.to(device).train()
    opt = torch.optim.AdamW(m.parameters(), lr=5e-5)
    x = torch.randn(4, 64, 1024, device=device)
    t = torch.rand(4, device=device)
    cross, glob = torch.randn(4, 130, 768, device=device), torch.randn(4, 1536, device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    for i in range(steps + 1):
        if i == 1:                                           # step 0 is the warm-up
            synchronize(device)
            t0 = time.perf_counter()
        with autocast(device, dtype):
            loss = m(x, t, cross, glob).float().pow(2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    synchronize(device)
    return 4 * steps / (time.perf_counter() - t0)


# --small: two short recordings, one window each in the diffusion set (encode-latents encodes whole
# 2,097,152-sample windows: ~5 s each on one CPU thread)
SMALL = ("ovos-dog", "fma-sakenointi")


def build_inputs(d: pathlib.Path, only: tuple[str, ...] | None) -> tuple[str, str]:
    """(shards build folder, tiny T5 folder) from the sample corpus, under ``d``."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from shards_bench import make_catalogue                  # the sample corpus catalogue, decoded

    from sao.catalog import Catalog
    from sao.models.t5_local import build_tiny_t5
    from sao.shards import PlanConfig, build_shards
    from sao.sources import sample_corpus
    t = time.perf_counter()
    store, seconds = make_catalogue(d / "c.duckdb", 1, only=only)
    with Catalog(d / "c.duckdb") as cat:
        out = build_shards(cat, shards_root=str(d / "shards"), audio_store=store, required_stages=["license_gate"],
                           plan_cfg=PlanConfig(seed=0, target_shard_bytes=8 * 1024 * 1024), config_hash="bench",
                           name="bench")
    assert out["status"] == "complete", out
    texts = [f"{e['title']} {e.get('description') or ''} {' '.join(e.get('tags') or [])}"
             for e in sample_corpus.load_metadata()] * 20
    t5 = build_tiny_t5(d / "t5", texts)
    print(f"built: shards of {seconds / 60:.1f} minutes of sample-corpus audio ({out['shards']} shards, "
          f"{out['samples']}) and a tiny random T5, in {time.perf_counter() - t:.1f} s (not timed below)")
    return str(d / "shards" / "bench"), str(t5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shards", nargs="?", help="a complete shards build (default: build one from the sample corpus)")
    ap.add_argument("--t5-path", help="a local T5 (default with no SHARDS_DIR: a tiny random one)")
    ap.add_argument("--steps", type=int, help="training steps per run (default 10; 2 with --small)")
    ap.add_argument("--batch-size", type=int, help="per run (default 4; 2 with --small)")
    ap.add_argument("--sample-length", type=int, help="autoencoder clip samples (default 16384; 8192 with --small)")
    ap.add_argument("--small", action="store_true",
                    help="2 steps at batch 2, 8,192-sample autoencoder clips, shards of 2 corpus files")
    add_device_args(ap, dtype_help=HOW)
    a = ap.parse_args()
    device, dtype = resolve(a)
    precision = PRECISION[dtype]
    a.steps = a.steps or (2 if a.small else 10)
    bs = a.batch_size or (2 if a.small else 4)
    length = a.sample_length or (8192 if a.small else 16384)
    print(device_line(device, dtype, HOW), flush=True)
    with tempfile.TemporaryDirectory(prefix="sao-train-bench-") as d, trainers_on(device):
        if a.shards is None:
            a.shards, t5 = build_inputs(pathlib.Path(d) / "inputs", SMALL if a.small else None)
            a.t5_path = a.t5_path or t5
        v = train_vae(TrainSettings(stage="vae", shards_dir=a.shards, out_dir=f"{d}/vae", steps=a.steps, batch_size=bs,
                                    sample_length=length, disc_channels=8, checkpoint_every=10_000,
                                    precision=precision))
        print(f"  tiny autoencoder ({length:,}-sample clips, batch {bs}): {v['samples_per_s']:.2f} samples/s")
        if a.t5_path:
            t = train_dit(TrainSettings(stage="dit", shards_dir=a.shards, out_dir=f"{d}/dit", steps=a.steps,
                                        batch_size=bs, t5_path=a.t5_path, checkpoint_every=10_000,
                                        precision=precision))
            print(f"  tiny DiT (65,536-sample windows, batch {bs}), encoding audio on the fly: "
                  f"{t['samples_per_s']:.2f} samples/s")
            vae_ckpt = f"{d}/vae/step-{a.steps:07d}-ema.safetensors"
            with autocast(device, dtype):
                enc = encode_latents(a.shards, vae_ckpt, out_dir=f"{d}/latents", device=device)
            print(f"  encode-latents (tiny autoencoder): {enc['audio_seconds_per_s']:.1f} audio-s/s")
            lt = train_dit(TrainSettings(stage="dit", shards_dir=a.shards, out_dir=f"{d}/dit-lat", steps=a.steps,
                                         batch_size=bs, t5_path=a.t5_path, vae_checkpoint=vae_ckpt,
                                         latents=f"{d}/latents", checkpoint_every=10_000, precision=precision))
            print(f"  tiny DiT on pre-encoded latent shards: {lt['samples_per_s']:.2f} samples/s "
                  f"({lt['samples_per_s'] / t['samples_per_s']:.2f}x on the fly)")
    if device.type == "cuda":
        how = "float32" if dtype == torch.float32 else f"{dtype_name(dtype)} autocast"
        print(f"  official DiT shape, 1024 latents, batch 4, {how}: "
              f"{official_dit_step_rate(device, dtype, 1 if a.small else 5):.2f} samples/s")
    else:
        print(f"  official shapes: CUDA only (a 1.06 B-parameter DiT step at batch 4 takes minutes on {device.type})")


if __name__ == "__main__":
    main()
