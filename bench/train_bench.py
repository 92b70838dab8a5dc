"""Training throughput: samples per second of the tiny autoencoder and DiT configs on a shards
build (and, where a GPU is present, of the official shapes on synthetic batches).

Without SHARDS_DIR it builds what it needs in a temporary folder, as the tests do: a catalogue of
the shipped sample corpus (license gate passed, then the decode stage), its shards, and, without
--t5-path, a tiny random T5 trained on the corpus's texts; so the DiT rows run too.

    python bench/train_bench.py [SHARDS_DIR] [--t5-path DIR] [--steps 10]
    python bench/train_bench.py --small     # 2 steps at batch 2, 8,192-sample autoencoder clips, on shards
                                            # of 2 corpus files (1 official DiT step on a GPU)
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("SAO_NO_PROGRESS", "1")

import torch

from sao.train.latents import encode_latents
from sao.train.trainer import TrainSettings, train_dit, train_vae


def official_dit_step_rate(steps: int = 5) -> float:
    from sao.models import create_model
    m = create_model("stable_audio_open_1_0").model.model.cuda().train()
    opt = torch.optim.AdamW(m.parameters(), lr=5e-5)
    x = torch.randn(4, 64, 1024, device="cuda")
    t = torch.rand(4, device="cuda")
    cross, glob = torch.randn(4, 130, 768, device="cuda"), torch.randn(4, 1536, device="cuda")
    for i in range(steps + 1):
        if i == 1:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(x, t, cross, glob).float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    torch.cuda.synchronize()
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
    a = ap.parse_args()
    a.steps = a.steps or (2 if a.small else 10)
    bs = a.batch_size or (2 if a.small else 4)
    length = a.sample_length or (8192 if a.small else 16384)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device}")
    with tempfile.TemporaryDirectory(prefix="sao-train-bench-") as d:
        if a.shards is None:
            a.shards, t5 = build_inputs(pathlib.Path(d) / "inputs", SMALL if a.small else None)
            a.t5_path = a.t5_path or t5
        v = train_vae(TrainSettings(stage="vae", shards_dir=a.shards, out_dir=f"{d}/vae", steps=a.steps, batch_size=bs,
                                    sample_length=length, disc_channels=8, checkpoint_every=10_000))
        print(f"  tiny autoencoder ({length:,}-sample clips, batch {bs}): {v['samples_per_s']:.2f} samples/s")
        if a.t5_path:
            t = train_dit(TrainSettings(stage="dit", shards_dir=a.shards, out_dir=f"{d}/dit", steps=a.steps,
                                        batch_size=bs, t5_path=a.t5_path, checkpoint_every=10_000))
            print(f"  tiny DiT (65,536-sample windows, batch {bs}), encoding audio on the fly: "
                  f"{t['samples_per_s']:.2f} samples/s")
            vae_ckpt = f"{d}/vae/step-{a.steps:07d}-ema.safetensors"
            enc = encode_latents(a.shards, vae_ckpt, out_dir=f"{d}/latents")
            print(f"  encode-latents (tiny autoencoder): {enc['audio_seconds_per_s']:.1f} audio-s/s")
            lt = train_dit(TrainSettings(stage="dit", shards_dir=a.shards, out_dir=f"{d}/dit-lat", steps=a.steps,
                                         batch_size=bs, t5_path=a.t5_path, vae_checkpoint=vae_ckpt,
                                         latents=f"{d}/latents", checkpoint_every=10_000))
            print(f"  tiny DiT on pre-encoded latent shards: {lt['samples_per_s']:.2f} samples/s "
                  f"({lt['samples_per_s'] / t['samples_per_s']:.2f}x on the fly)")
    if torch.cuda.is_available():
        print(f"  official DiT shape, 1024 latents, batch 4, bf16: "
              f"{official_dit_step_rate(1 if a.small else 5):.2f} samples/s")
    else:
        print("  official shapes: no GPU here")


if __name__ == "__main__":
    main()
