"""Music screen throughput on any torch device (--device, default CUDA when present, else CPU):
sao's batched, streaming pipeline vs panns-inference's own SoundEventDetection used file by file
as its README shows (librosa.load at 32 kHz mono, then sed.inference(audio[None, :])). Same machine, same Cnn14_DecisionLevelMax, same weights (a
random checkpoint written to a temporary file, since real weights cannot be downloaded here).

Prints audio-seconds screened per wall second for:
  * baseline: SoundEventDetection, file by file;
  * sao, the full pipeline (batched windows, skips audio the rule cannot use, stops reading a
    file once its verdict is fixed);
  * sao with those shortcuts off (batching and streaming only), for transparency.
Target: the pipeline at least 2x the baseline.

    python bench/music_screen_bench.py [REPEATS]     # the sample corpus, default 1 (~11.6 min)
    python bench/music_screen_bench.py --small       # 3 corpus files (2 short, 1 long: ~40 s of audio)
    python bench/music_screen_bench.py --device cuda --dtype bfloat16

--dtype runs both models under torch.autocast: casting the weights would break the baseline (it feeds
float32 input) and the numerics of the log-mel front end (its 1e-10 power floor underflows in float16).
Decoding and resampling run on the CPU either way. On CUDA, panns-inference wraps its model in
DataParallel over every visible GPU from cuda:0 (as it does for its users): pick one GPU with
CUDA_VISIBLE_DEVICES=N and --device cuda.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("SAO_NO_PROGRESS", "1")

import torch  # noqa: E402
from _device import add_device_args, autocast, device_line, device_name, resolve  # noqa: E402

from sao.analysis.music_rule import default_music_classes  # noqa: E402
from sao.analysis.music_screen import ScreenConfig, screen_audio  # noqa: E402
from sao.analysis.panns import _ensure_labels, load_model  # noqa: E402
from sao.models.checkpoint import save_torch_file  # noqa: E402
from sao.sources import sample_corpus  # noqa: E402

# --small: two files shorter than the rule needs (skipped) and one long enough to stop early
SMALL = ("minetest-water-1", "lomiri-camera-click", "fma-entropy")


HOW = "torch.autocast for both models: the baseline feeds float32 input and its log-mel floor underflows in float16"


def main(repeats: int = 1, only: tuple[str, ...] | None = None, device: torch.device | None = None,
         dtype: torch.dtype = torch.float32) -> None:
    device = device or torch.device("cpu")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 2)   # the env var wins
    entries = [e for e in sample_corpus.load_metadata() if only is None or e["id"] in only] * repeats
    total = sum(e["duration"] for e in entries)
    with tempfile.TemporaryDirectory(prefix="sao-screen-bench-") as d:
        ckpt = os.path.join(d, "Cnn14_DecisionLevelMax_random.pth")
        seed_model = load_model(None, uncalibrated=True, device="cpu")
        save_torch_file(ckpt, {"model": seed_model.model.state_dict()})      # ~330 MB, as the wrapper expects
        del seed_model

        _ensure_labels()
        import librosa
        from panns_inference import SoundEventDetection
        sed = SoundEventDetection(checkpoint_path=ckpt, device=device.type)      # "cuda" or "cpu"
        if dtype != torch.float32:
            # sed.inference calls .numpy() on the autocast output, which numpy cannot hold in bfloat16:
            # hand it float32, as screen_audio casts its own (.float()) before .numpy()
            sed.model.register_forward_hook(lambda _m, _i, out: {k: v.float() for k, v in out.items()})
        t = time.perf_counter()
        failed = 0
        with autocast(device, dtype):
            for e in entries:
                audio, _ = librosa.core.load(e["path"], sr=32000, mono=True)
                try:
                    sed.inference(audio[None, :])        # returns numpy: the device is synchronised
                except Exception:            # the README loop has no guard; very short clips can fail
                    failed += 1
        base_s = time.perf_counter() - t

        lm = load_model(ckpt, device=str(device))
        items = [dict(recording_id=f"{i}", path=e["path"], duration=e["duration"]) for i, e in enumerate(entries)]
        classes = tuple(default_music_classes())
        runs = {}
        for label, cfg in (("sao pipeline (batched, streaming, rule-aware)", ScreenConfig(classes=classes)),
                           ("sao, batching + streaming only", ScreenConfig(classes=classes, skip_short=False,
                                                                           early_stop=False))):
            t = time.perf_counter()
            with autocast(device, dtype):
                _, stats = screen_audio(items, lm, cfg)      # copies each batch's output to the CPU
            runs[label] = (time.perf_counter() - t, stats)

    base = total / base_s
    print(f"music screen on {device} ({device_name(device)}), {len(entries)} files, {total:.0f} s of audio")
    print(f"  {'baseline: panns-inference SoundEventDetection, file by file':60s} {base:7.1f} audio-s/s  1.00x"
          f"  ({failed} files failed)")
    for label, (secs, stats) in runs.items():
        print(f"  {label:60s} {total / secs:7.1f} audio-s/s  {total / secs / base:.2f}x"
              f"  (model ran on {stats['model_seconds']:.0f} s, skipped {stats['skipped_short']} short files, "
              f"{stats['early_stops']} early stops)")
    ratio = total / runs["sao pipeline (batched, streaming, rule-aware)"][0] / base
    print(f"  target: pipeline >= 2x baseline -> {'met' if ratio >= 2 else 'NOT met'} ({ratio:.2f}x)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repeats", nargs="?", type=int, default=1, help="copies of the sample corpus (default 1)")
    ap.add_argument("--small", action="store_true", help="3 corpus files, 2 short and 1 long: ~40 s of audio")
    add_device_args(ap, dtype_help=HOW)
    a = ap.parse_args()
    dev, dt = resolve(a)
    if dev.type == "cuda" and (dev.index or 0) != 0:
        raise SystemExit(f"error: --device {dev}: the panns-inference baseline runs from cuda:0 (DataParallel); "
                         "pick the GPU with CUDA_VISIBLE_DEVICES and --device cuda")
    print(device_line(dev, dt, "autocast"), flush=True)
    main(a.repeats, only=SMALL if a.small else None, device=dev, dtype=dt)
