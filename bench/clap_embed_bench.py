"""LAION-CLAP audio embedding throughput on the sample corpus: sao's batched pipeline
(soundfile + soxr decoding, 10 s windows batched across files, several windows for long
files) vs laion-clap's own CLAP_Module.get_audio_embedding_from_filelist, same run, same
weights (random: no real checkpoint can be downloaded here). Prints audio-seconds embedded
per wall second (file durations; note that laion-clap looks at one 10 s window per file while
sao looks at up to 4, so sao does more model work per long file).

    python bench/clap_embed_bench.py
    python bench/clap_embed_bench.py --small     # 2 corpus files (6 s and 34 s of audio)
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("SAO_NO_PROGRESS", "1")

from sao.analysis.clap import embed_files, load_clap  # noqa: E402
from sao.sources import sample_corpus  # noqa: E402

# --small: one file shorter than a 10 s window and one long enough for 4 (laion-clap reads only its first)
SMALL = ("minetest-water-1", "fma-entropy")


def main(only: tuple[str, ...] | None = None, warmup: int = 2) -> None:
    entries = [e for e in sample_corpus.load_metadata() if only is None or e["id"] in only]
    paths = [e["path"] for e in entries]
    total = sum(e["duration"] for e in entries)
    cm = load_clap(None, uncalibrated=True, device="cpu")
    cm.module.get_audio_embedding_from_filelist(x=paths[:warmup])     # warm-up, both paths share the model
    t = time.perf_counter()
    cm.module.get_audio_embedding_from_filelist(x=paths)
    base_s = time.perf_counter() - t
    runs = {}
    for label, mw in (("sao pipeline (up to 4 windows per file)", 4), ("sao pipeline, 1 window per file", 1)):
        t = time.perf_counter()
        embed_files(cm, paths, batch_size=8, max_windows=mw)
        runs[label] = time.perf_counter() - t
    base = total / base_s
    print(f"CLAP audio embeddings, {len(paths)} files, {total:.0f} s of audio, random weights")
    print(f"  {'laion-clap get_audio_embedding_from_filelist':48s} {base:7.1f} audio-s/s  1.00x")
    for label, secs in runs.items():
        print(f"  {label:48s} {total / secs:7.1f} audio-s/s  {total / secs / base:.2f}x")
    ratio = total / runs["sao pipeline (up to 4 windows per file)"] / base
    print(f"  target: >= 2x laion-clap -> {'met' if ratio >= 2 else 'NOT met'} ({ratio:.2f}x)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="2 corpus files (6 s and 34 s), a 1-file warm-up")
    small = ap.parse_args().small
    main(only=SMALL if small else None, warmup=1 if small else 2)
