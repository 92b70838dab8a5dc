"""DiT forward time, diffusion-sampling steps per second and peak memory during diffusion and
during (chunked) decoding, on any torch device, for the OFFICIAL Stable Audio Open 1.0
configuration (sao/models/configs/stable_audio_open_1_0.json, the same as the released
model_config.json; random weights, since no real ones exist here) and for the tiny config.

Official rows: batch 1, the config's sample_size (2,097,152 samples = 47.55 s at 44.1 kHz = 1024
latents), DPM-Solver++ (3M SDE, the default of sao.models.sampling.generate) with classifier-free
guidance (scale 7: the DiT sees batch 2 per step), timed on the sampler itself; the text/timing
conditioning is random tensors of the right shapes (T5 runs once per generation, not per step, and
its weights are not loaded, so they are not in the memory figures). Peak memory: on CUDA
torch.cuda.max_memory_allocated (weights included), reset between diffusion and decoding; on CPU
the process's peak RSS increase over the resident weights, labelled "RSS". Paper anchors (H100,
section 5.4 and appendix B): 20 steps/s, 5.9 GB VRAM during diffusion, 14.5 GB during decoding
(unchunked; the paper's chunked figures are not in its text).

On a CPU the official DiT takes ~50 s per CFG step at float32 (2 cores), so the default times a few
steps (1 warm-up + 2) and decodes 224 of the 1024 latents, chunked (2 chunks: a chunked decode's peak
is one chunk's, whatever the length; the full-length time is extrapolated and marked so) and
unchunked; about 5 minutes in all. On CUDA it runs 5 warm-up + 50 timed steps and decodes all 1024
latents, chunked and unchunked.

    python bench/dit_bench.py [--device cuda] [--dtype bfloat16] [--steps N] [--warmup N]
                              [--decode-latents N] [--skip-official] [--no-compile]
    python bench/dit_bench.py --small     # tiny config only (well under a minute): forward rows with
                                          # torch.compile's "eager" backend (Dynamo traces, no Inductor
                                          # codegen, which alone takes about a minute on 2 cores), and the
                                          # sampler/memory rows at the tiny config's size
"""
from __future__ import annotations

import argparse
import time

import torch

from _device import (PeakMemory, add_device_args, device_line, dtype_name, fmt_bytes, module_bytes, resolve, synchronize,
                     timed)
from sao.models import create_model
from sao.models.sampling import CFGDenoiser, sample_dpmpp_3m_sde, sigmas_loglinear

OFFICIAL = "stable_audio_open_1_0"
CFG_SCALE = 7.0
SIGMA_MAX = 500.0
CHUNK, OVERLAP = 128, 32                      # AudioAutoencoder.decode_chunked's defaults
PAPER = ("paper (H100): 20 steps/s; 5.9 GB VRAM during diffusion; 14.5 GB during decoding "
         "(H100 80GB, sec. 5.4; app. B, unchunked decode)")
HOW = "weights and inputs cast; the sampler's own arithmetic stays float32, as in sao.models.sampling"


def cond_shapes(model) -> tuple[int, int, int]:
    """(cross-attention tokens, their width, global width) the config's conditioners produce."""
    m = model.config["model"]
    tokens = 0
    for c in m["conditioning"]["configs"]:
        if c["id"] in m["diffusion"]["cross_attention_cond_ids"]:
            tokens += c.get("config", {}).get("max_length", 128) if c["type"] == "t5" else 1
    return tokens, m["conditioning"]["cond_dim"], m["diffusion"]["config"]["global_cond_dim"]


def per_step(s: float) -> str:
    return f"{s:.2f} s/step" if s >= 1 else f"{s * 1000:.1f} ms/step"


def n_chunks(latents: int) -> int:
    return 1 if latents <= CHUNK else len(range(0, latents - CHUNK, CHUNK - OVERLAP)) + 1


def dit_numbers(config: str, latents: int, device, dtype, compile_: bool, n: int, backend: str = "inductor") -> dict:
    """One CFG step's DiT forward (batch 2), eager and torch.compile'd."""
    model = create_model(config, device=device)
    dit = model.dit.to(device, dtype).eval()
    tokens, cond_dim, gdim = cond_shapes(model)
    del model
    x = torch.randn(2, 64, latents, device=device, dtype=dtype)            # batch 2 = one CFG step
    t = torch.rand(2, device=device, dtype=dtype)
    cross = torch.randn(2, tokens, cond_dim, device=device, dtype=dtype)
    glob = torch.randn(2, gdim, device=device, dtype=dtype)
    out = {}
    labels = ["eager"] + (["compiled" if backend == "inductor" else f"compiled ({backend} backend)"] if compile_ else [])
    for label in labels:
        # compiled only after the eager timing: Inductor's compile workers would share the cores with it
        fn_model = dit if label == "eager" else torch.compile(dit, backend=backend)
        with torch.inference_mode(), PeakMemory(device) as peak:
            fn_model(x, t, cross, glob)                                      # warm-up (and compilation)
            s = timed(lambda m=fn_model: m(x, t, cross, glob), device, n)
        out[label] = {"step_s": s, "steps_per_s": 1 / s, "peak": peak if device.type == "cuda" else None}
    return out


def decode_row(config: str, latents: int, device, dtype) -> str:
    """Peak memory of a full and of a chunked decode of ``latents`` latents."""
    ae = create_model(config, device=device).pretransform.model.to(device, dtype).eval()
    z = torch.randn(1, ae.latent_dim, latents, device=device, dtype=dtype)
    peaks = {}
    with torch.inference_mode():
        ae.decode(z[..., :8])                                                # warm-up: lazy initialisation
    for label, fn in (("full", ae.decode), ("chunked", ae.decode_chunked)):
        with torch.inference_mode(), PeakMemory(device) as peak:
            fn(z)
            synchronize(device)
        peaks[label] = peak
    return (f"  decode {config:22s} {latents} latents ({n_chunks(latents)} chunks): {fmt_bytes(peaks['full'].bytes)} full, "
            f"{fmt_bytes(peaks['chunked'].bytes)} chunked ({CHUNK}/{OVERLAP}), {peaks['full'].label}")


def sampler_rows(config: str, device, dtype, *, steps: int, warmup: int, decode_latents: int | None,
                 full_decode: bool) -> list[str]:
    """Diffusion sampling rate and peak memory, then chunked (and optionally full) decoding, of
    ``config`` at batch 1 and its own sample_size, everything resident on ``device``."""
    t0 = time.perf_counter()
    model = create_model(config, device=device)
    dit = model.dit.to(device, dtype).eval()
    ae = model.pretransform.model.to(device, dtype).eval()
    tokens, cond_dim, gdim = cond_shapes(model)
    sr, size = model.sample_rate, model.sample_size
    n_lat = size // ae.downsampling_ratio
    del model                                          # conditioners: not used (random conditioning below)
    build_s = time.perf_counter() - t0
    g = torch.Generator(device=device).manual_seed(0)
    cross = torch.randn(1, tokens, cond_dim, generator=g, device=device).to(dtype)
    glob = torch.randn(1, gdim, generator=g, device=device).to(dtype)
    den = CFGDenoiser(dit, cross, glob, CFG_SCALE)
    what = "official Stable Audio Open 1.0" if config == OFFICIAL else f"{config} config"
    rows = [f"{what} ({config}, random weights): batch 1, {n_lat} latents = {size:,} samples = {size / sr:.2f} s "
            f"at {sr:,} Hz, dtype {dtype_name(dtype)}, on {device}",
            f"  weights resident: DiT {fmt_bytes(module_bytes(dit))} + autoencoder {fmt_bytes(module_bytes(ae))} "
            f"(built in {build_s:.0f} s); "
            + ("the CUDA peaks below include them" if device.type == "cuda" else "the RSS increases below are over them")]

    def sample(n: int) -> torch.Tensor:
        x = torch.randn(1, ae.latent_dim, n_lat, generator=g, device=device) * SIGMA_MAX
        return sample_dpmpp_3m_sde(den, x, sigmas_loglinear(n, sigma_max=SIGMA_MAX, device=device), generator=g)

    with torch.inference_mode(), PeakMemory(device) as peak:
        if warmup:
            sample(warmup)
        synchronize(device)
        t = time.perf_counter()
        lat = sample(steps)
        synchronize(device)
        secs = time.perf_counter() - t
    rows.append(f"  diffusion, dpmpp-3m-sde + CFG {CFG_SCALE:g} (DiT batch 2), {steps} steps timed after {warmup} "
                f"warm-up: {steps / secs:.3g} steps/s ({per_step(secs / steps)}); {peak.describe()}")

    lat = lat.to(dtype)
    dec = decode_latents or n_lat
    if dec > n_lat:                                    # longer than the config's window: random latents
        lat = torch.randn(1, ae.latent_dim, dec, generator=g, device=device).to(dtype)
        part, n_lat = f"{dec} random latents ({n_chunks(dec)} chunks)", dec
    elif dec == n_lat:
        part = f"all {n_lat} latents ({n_chunks(n_lat)} chunks)"
    with torch.inference_mode(), PeakMemory(device) as peak:
        t = time.perf_counter()
        ae.decode_chunked(lat[..., :dec], CHUNK, OVERLAP)
        synchronize(device)
        secs = time.perf_counter() - t
    if dec < n_lat:
        part = (f"{dec} of {n_lat} latents ({n_chunks(dec)} chunks; all {n_lat}, {n_chunks(n_lat)} chunks, "
                f"~{secs / n_chunks(dec) * n_chunks(n_lat):.0f} s extrapolated)")
    rows.append(f"  decoding, chunked ({CHUNK}-latent chunks, overlap {OVERLAP}), {part}: {secs:.2f} s; "
                f"{peak.describe()}")
    if full_decode:
        with torch.inference_mode(), PeakMemory(device) as peak:
            t = time.perf_counter()
            ae.decode(lat[..., :dec])
            synchronize(device)
            secs = time.perf_counter() - t
        rows.append(f"  decoding, full (unchunked), the same {dec} latents: {secs:.2f} s; {peak.describe()}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(ap, dtype_help=HOW)
    ap.add_argument("--skip-official", action="store_true", help="tiny config only (as --small, at full counts)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--steps", type=int, help="diffusion steps timed (default: 50 on CUDA, 2 elsewhere; 10 --small)")
    ap.add_argument("--warmup", type=int, help="warm-up steps, untimed (default: 5 on CUDA, 1 elsewhere; 2 --small)")
    ap.add_argument("--decode-latents", type=int, default=None,
                    help="latents of the tiny full/chunked decode row (default 192; 1024 on CUDA without --small); of the "
                         "official chunked decode: default all 1024 on CUDA, 224 (2 chunks) elsewhere")
    ap.add_argument("--small", action="store_true",
                    help="tiny config only, torch.compile with the eager backend; well under a minute")
    a = ap.parse_args()
    device, dtype = resolve(a)
    cuda = device.type == "cuda"
    print(device_line(device, dtype, HOW))
    if a.small:
        a.skip_official = True
    backend = "eager" if a.small else "inductor"
    runs = [("tiny", 32, 5)] + ([] if a.skip_official or not cuda else [(OFFICIAL, 1024, 3)])
    for config, latents, n in runs:
        res = dit_numbers(config, latents, device, dtype, not a.no_compile, n, backend)
        for label, r in res.items():
            mem = f", {r['peak'].describe()}" if r["peak"] is not None else ""
            print(f"  DiT {config:22s} {latents:5d} latents, CFG batch 2, {label:8s}: {r['step_s'] * 1000:9.1f} ms/step "
                  f"= {r['steps_per_s']:7.2f} steps/s{mem}")
    print(decode_row("tiny", a.decode_latents or (1024 if cuda and not a.small else 192), device, dtype))
    steps = a.steps or (10 if a.small else 50 if cuda else 2)
    warmup = a.warmup if a.warmup is not None else (2 if a.small else 5 if cuda else 1)
    if a.skip_official:
        # the same rows at the tiny config's size; 256 latents decoded, so that chunking happens (3 chunks)
        print("\n".join(sampler_rows("tiny", device, dtype, steps=steps, warmup=warmup, decode_latents=256,
                                     full_decode=True)))
        print("  official configuration: run without --small / --skip-official")
    else:
        dec = a.decode_latents if a.decode_latents else (None if cuda else 224)
        print("\n".join(sampler_rows(OFFICIAL, device, dtype, steps=steps, warmup=warmup, decode_latents=dec,
                                     full_decode=True)))
    print(f"  {PAPER}")


if __name__ == "__main__":
    main()
