"""LAION-CLAP audio embedding throughput on the sample corpus: sao's batched pipeline
(soundfile + soxr decoding, 10 s windows batched across files, several windows for long
files) vs laion-clap's own CLAP_Module.get_audio_embedding_from_filelist, same run, same
weights (random: no real checkpoint can be downloaded here). Prints audio-seconds embedded
per wall second (file durations; note that laion-clap looks at one 10 s window per file while
sao looks at up to 4, so sao does more model work per long file).

    python bench/clap_embed_bench.py
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("SAO_NO_PROGRESS", "1")

from sao.analysis.clap import embed_files, load_clap  # noqa: E402
from sao.sources import sample_corpus  # noqa: E402


def main() -> None:
    entries = sample_corpus.load_metadata()
    paths = [e["path"] for e in entries]
    total = sum(e["duration"] for e in entries)
    cm = load_clap(None, uncalibrated=True, device="cpu")
    cm.module.get_audio_embedding_from_filelist(x=paths[:2])          # warm-up, both paths share the model
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
    main()
