"""Clips per second of every evaluation metric on CPU, with auraloss beside our STFT, MEL and
SI-SDR implementations (same 10 s stereo 44.1 kHz clips, one run). Models carry random weights:
the speed is what is measured.

    python bench/eval_bench.py [--clips 8] [--seconds 10]
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


def timed(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, help="clips per metric (default 8; 1 with --small)")
    ap.add_argument("--seconds", type=float, help="clip length (default 10; 3 with --small)")
    ap.add_argument("--small", action="store_true", help="1 clip of 3 s, FD on 500 x 128-d sets, KL on 500 pairs")
    a = ap.parse_args()
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

    def add(metric, ours, baseline=None, unit="clips/s"):
        rows.append((metric, ours, baseline, unit))

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
    ae, _ = autoencoder.load_autoencoder(None, "tiny", uncalibrated=True, device="cpu")
    add("autoencoder encode+decode (tiny)", timed(lambda: [autoencoder.reconstruct(ae, r, 47 * sr) for r in refs], n))
    audio, text = load_clap_scorer(None, uncalibrated=True, device="cpu")
    clips = [(r, sr) for r in refs]
    add("CLAP audio embedding (FD, CLAP score)", timed(lambda: audio.embed(clips), n))
    add("CLAP text embedding (CLAP score)", timed(lambda: text.embed([f"caption {i}" for i in range(n)]), n), unit="captions/s")
    tagger = PannsTagger(load_model(None, uncalibrated=True, device="cpu"))
    add("PANNs logits (KL tagger)", timed(lambda: tagger.logits(clips), n))
    emb = rng.standard_normal((sets, dim))
    add(f"Frechet distance, {sets} x {dim}-d sets", timed(lambda: metrics.fd(emb, emb + 0.1), 1), unit="sets/s")
    add(f"KL, {sets} caption pairs of 527 logits", timed(lambda: metrics.kl_generated_vs_reference(
        rng.standard_normal((sets, 527)), rng.standard_normal((sets, 527))), sets), unit="pairs/s")
    print(f"\nevaluation metrics on CPU ({torch.get_num_threads()} threads), {n} clips of {a.seconds:g} s "
          "stereo 44.1 kHz")
    print(f"{'metric':42s} {'sao':>12s} {'auraloss':>12s}  unit")
    for metric, ours, b, unit in rows:
        print(f"{metric:42s} {ours:12.2f} {(f'{b:.2f}' if b else '-'):>12s}  {unit}")


if __name__ == "__main__":
    main()
