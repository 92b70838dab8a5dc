"""Clips per second of every evaluation metric, with auraloss beside our STFT, MEL and SI-SDR
implementations (same 10 s stereo 44.1 kHz clips, one run). Models carry random weights: the speed
is what is measured.

The models (autoencoder, CLAP, PANNs) run on --device (default CUDA when present, else CPU), each
once untimed on one clip first; --dtype runs them under torch.autocast (the eval code feeds them
float32, and casting the weights would break the PANNs log-mel front end's numerics in float16).
The signal metrics, FD and KL run as sao.eval runs them: on the CPU, in float32 / float64; the
"on" column says where each row ran.

    python bench/eval_bench.py [--clips 8] [--seconds 10] [--device cuda] [--dtype bfloat16]
    python bench/eval_bench.py --small      # 1 clip of 3 s, FD on 500 x 128-d sets, KL on 500 pairs
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _device import add_device_args, autocast, device_line, device_name, dtype_name, resolve  # noqa: E402

HOW = "the models under torch.autocast; signal metrics, FD and KL stay float32/float64 on the CPU"


def timed(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, help="clips per metric (default 8; 1 with --small)")
    ap.add_argument("--seconds", type=float, help="clip length (default 10; 3 with --small)")
    ap.add_argument("--small", action="store_true", help="1 clip of 3 s, FD on 500 x 128-d sets, KL on 500 pairs")
    add_device_args(ap, dtype_help=HOW)
    a = ap.parse_args()
    device, dtype = resolve(a)
    print(device_line(device, dtype, HOW), flush=True)
    a.clips = a.clips or (1 if a.small else 8)
    a.seconds = a.seconds or (3.0 if a.small else 10.0)
    sets, dim = (500, 128) if a.small else (2000, 512)
    from sao.eval import autoencoder, metrics
    from sao.eval.embedders import PannsTagger, load_clap_scorer
    from sao.analysis.panns import load_model
    rng = np.random.default_rng(0)
    sr, n = 44_100, a.clips
    refs = [rng.standard_normal((2, int(a.seconds * sr))).astype(np.float32) * 0.1 for _ in range(n)]
    ests = [(0.9 * r + 0.02 * rng.standard_normal(r.shape)).astype(np.float32) for r in refs]
    rows = []

    def add(metric, ours, baseline=None, unit="clips/s", on="cpu"):
        rows.append((metric, ours, baseline, unit, on))

    def on_device(fn, warm):
        """Time ``fn`` under the dtype's autocast, after one untimed call of ``warm``."""
        with autocast(device, dtype):
            warm()
            return timed(fn, n)

    try:
        import auraloss
        mr, mel, sis = auraloss.freq.MultiResolutionSTFTLoss(), auraloss.freq.MelSTFTLoss(sample_rate=sr), auraloss.time.SISDRLoss()
        pairs = [(torch.from_numpy(e)[None], torch.from_numpy(r)[None]) for e, r in zip(ests, refs)]
        base = {"stft": timed(lambda: [mr(x, y) for x, y in pairs], n), "mel": timed(lambda: [mel(x, y) for x, y in pairs], n),
                "sisdr": timed(lambda: [sis(x, y) for x, y in pairs], n)}
    except ImportError:
        base = {}
    add("STFT distance", timed(lambda: [metrics.stft_distance(e, r) for e, r in zip(ests, refs)], n), base.get("stft"))
    add("MEL distance", timed(lambda: [metrics.mel_distance(e, r, sr) for e, r in zip(ests, refs)], n), base.get("mel"))
    add("SI-SDR", timed(lambda: [metrics.si_sdr(e, r) for e, r in zip(ests, refs)], n), base.get("sisdr"))
    dev = str(device)
    ae, _ = autoencoder.load_autoencoder(None, "tiny", uncalibrated=True, device=dev)
    add("autoencoder encode+decode (tiny)", on_device(lambda: [autoencoder.reconstruct(ae, r, 47 * sr) for r in refs],
                                                      lambda: autoencoder.reconstruct(ae, refs[0], 47 * sr)), on=dev)
    audio, text = load_clap_scorer(None, uncalibrated=True, device=dev)
    if dtype != torch.float32:
        # laion-clap's get_audio_embedding_from_data (ClapAudio.embed) calls .numpy() on the autocast
        # output, which numpy cannot hold in bfloat16: hand it the embedding as float32
        clap = audio.cm.module.model
        clap.get_audio_embedding = lambda d, f=clap.get_audio_embedding: f(d).float()
    clips = [(r, sr) for r in refs]
    add("CLAP audio embedding (FD, CLAP score)", on_device(lambda: audio.embed(clips), lambda: audio.embed(clips[:1])),
        on=dev)
    captions = [f"caption {i}" for i in range(n)]
    add("CLAP text embedding (CLAP score)", on_device(lambda: text.embed(captions), lambda: text.embed(captions[:1])),
        unit="captions/s", on=dev)
    tagger = PannsTagger(load_model(None, uncalibrated=True, device=dev))
    add("PANNs logits (KL tagger)", on_device(lambda: tagger.logits(clips), lambda: tagger.logits(clips[:1])), on=dev)
    emb = rng.standard_normal((sets, dim))
    add(f"Frechet distance, {sets} x {dim}-d sets", timed(lambda: metrics.fd(emb, emb + 0.1), 1), unit="sets/s")
    add(f"KL, {sets} caption pairs of 527 logits", timed(lambda: metrics.kl_generated_vs_reference(
        rng.standard_normal((sets, 527)), rng.standard_normal((sets, 527))), sets), unit="pairs/s")
    cast = "" if dtype == torch.float32 else f", {dtype_name(dtype)} autocast"
    rest = "" if device.type == "cpu" else f"; the rest on the CPU ({device_name(torch.device('cpu'))})"
    print(f"\nevaluation metrics, {n} clips of {a.seconds:g} s stereo 44.1 kHz: models on {device} "
          f"({device_name(device)}){cast}{rest}")
    print(f"{'metric':42s} {'sao':>12s} {'auraloss':>12s}  {'unit':11s} on")
    for metric, ours, b, unit, on in rows:
        print(f"{metric:42s} {ours:12.2f} {(f'{b:.2f}' if b else '-'):>12s}  {unit:11s} {on}")


if __name__ == "__main__":
    main()
