"""Training throughput: samples per second of the tiny autoencoder and DiT configs on a shards
build (and, where a GPU is present, of the official shapes on synthetic batches).

    python bench/train_bench.py SHARDS_DIR [--t5-path DIR] [--steps 10]
"""
from __future__ import annotations

import argparse
import tempfile
import time

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shards")
    ap.add_argument("--t5-path")
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device}")
    with tempfile.TemporaryDirectory() as d:
        v = train_vae(TrainSettings(stage="vae", shards_dir=a.shards, out_dir=f"{d}/vae", steps=a.steps, batch_size=4,
                                    disc_channels=8, checkpoint_every=10_000))
        print(f"  tiny autoencoder (16,384-sample clips, batch 4): {v['samples_per_s']:.2f} samples/s")
        if a.t5_path:
            t = train_dit(TrainSettings(stage="dit", shards_dir=a.shards, out_dir=f"{d}/dit", steps=a.steps,
                                        batch_size=4, t5_path=a.t5_path, checkpoint_every=10_000))
            print(f"  tiny DiT (65,536-sample windows, batch 4), encoding audio on the fly: "
                  f"{t['samples_per_s']:.2f} samples/s")
            vae_ckpt = f"{d}/vae/step-{a.steps:07d}-ema.safetensors"
            enc = encode_latents(a.shards, vae_ckpt, out_dir=f"{d}/latents")
            print(f"  encode-latents (tiny autoencoder): {enc['audio_seconds_per_s']:.1f} audio-s/s")
            lt = train_dit(TrainSettings(stage="dit", shards_dir=a.shards, out_dir=f"{d}/dit-lat", steps=a.steps,
                                         batch_size=4, t5_path=a.t5_path, vae_checkpoint=vae_ckpt,
                                         latents=f"{d}/latents", checkpoint_every=10_000))
            print(f"  tiny DiT on pre-encoded latent shards: {lt['samples_per_s']:.2f} samples/s "
                  f"({lt['samples_per_s'] / t['samples_per_s']:.2f}x on the fly)")
    if torch.cuda.is_available():
        print(f"  official DiT shape, 1024 latents, batch 4, bf16: {official_dit_step_rate():.2f} samples/s")
    else:
        print("  official shapes: no GPU here")


if __name__ == "__main__":
    main()
