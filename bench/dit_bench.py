"""DiT forward time, sampler steps per second and decoder peak memory, on the device at hand
(CUDA when present, else CPU), for the official Stable Audio Open 1.0 shape at 1024 latents
(random weights) and for the tiny config; with and without torch.compile. Paper anchors (H100):
20 diffusion steps/s, 5.9 GB during diffusion, 14.5 GB during decoding.

    python bench/dit_bench.py [--skip-official] [--no-compile] [--decode-latents N]
    python bench/dit_bench.py --small     # 64 latents to decode, torch.compile with the "eager" backend
                                          # (Dynamo traces, no Inductor codegen, which alone takes about a
                                          # minute on 2 cores); the official shape only on a GPU, at 256
                                          # latents, one timed step
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from sao.models import create_model


def timed(fn, n: int, device) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def dit_numbers(config: str, latents: int, device, compile_: bool, n: int, backend: str = "inductor") -> dict:
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = create_model(config)
    dit = model.dit.to(device, dtype).eval()
    cond_dim = model.config["model"]["conditioning"]["cond_dim"]
    gdim = model.config["model"]["diffusion"]["config"]["global_cond_dim"]
    x = torch.randn(2, 64, latents, device=device, dtype=dtype)            # batch 2 = one CFG step
    t = torch.rand(2, device=device, dtype=dtype)
    cross = torch.randn(2, 130, cond_dim, device=device, dtype=dtype)
    glob = torch.randn(2, gdim, device=device, dtype=dtype)
    out = {}
    compiled = torch.compile(dit, backend=backend) if compile_ else None
    for label, fn_model in (("eager", dit), ("compiled" if backend == "inductor" else f"compiled ({backend} backend)",
                                             compiled)):
        if fn_model is None:
            continue
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            s = timed(lambda m=fn_model: m(x, t, cross, glob), n, device)
        out[label] = {"step_s": s, "steps_per_s": 1 / s,
                      "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None}
    return out


def decode_peak(config: str, latents: int, chunked: bool, device: str) -> float:
    """Peak memory of one decode, measured in a fresh process (GB)."""
    code = f"""
import torch, resource
from sao.models import create_model
m = create_model({config!r}).pretransform.model.to({device!r}).eval()
z = torch.randn(1, 64, {latents}, device={device!r})
def kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
if {device!r} == "cuda": torch.cuda.reset_peak_memory_stats()
else: open("/proc/self/clear_refs", "w").write("5")      # reset the peak RSS (VmHWM) to now
before = kb("VmRSS:")
with torch.inference_mode():
    (m.decode_chunked(z) if {chunked} else m.decode(z))
if {device!r} == "cuda": print(torch.cuda.max_memory_allocated() / 1e9)
else: print((kb("VmHWM:") - before) / 1e6)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-official", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--decode-latents", type=int, default=None)
    ap.add_argument("--small", action="store_true",
                    help="64 latents to decode, torch.compile with the eager backend; the official shape only "
                         "on a GPU (256 latents, 1 step)")
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    official = ("stable_audio_open_1_0", 1024, 3 if device.type == "cuda" else 1)
    if a.small:
        a.skip_official = a.skip_official or device.type != "cuda"
        a.decode_latents = a.decode_latents or 64
        official = ("stable_audio_open_1_0", 256, 1)
    backend = "eager" if a.small else "inductor"
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}")
    runs = [("tiny", 32, 5)] + ([] if a.skip_official else [official])
    for config, latents, n in runs:
        res = dit_numbers(config, latents, device, not a.no_compile, n, backend)
        for label, r in res.items():
            mem = f", peak {r['peak_gb']:.1f} GB" if r["peak_gb"] is not None else ""
            print(f"  DiT {config:22s} {latents:5d} latents, CFG batch 2, {label:8s}: {r['step_s'] * 1000:9.1f} ms/step "
                  f"= {r['steps_per_s']:7.2f} steps/s{mem}")
    lat = a.decode_latents or (1024 if device.type == "cuda" else 192)
    dev = device.type
    for config in (["tiny"] + ([] if a.skip_official else ["stable_audio_open_1_0"])):
        full = decode_peak(config, lat, False, dev)
        chunk = decode_peak(config, lat, True, dev)
        print(f"  decode {config:22s} {lat} latents: peak {full:.2f} GB full, {chunk:.2f} GB chunked (128/32)")
    print("  paper (H100): 20 steps/s, 5.9 GB during diffusion, 14.5 GB during decoding")


if __name__ == "__main__":
    main()
