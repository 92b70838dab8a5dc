"""The benchmarks cannot rot: every script in bench/ runs at its small size (``--small``) as a
subprocess, exits 0 and prints its table. Timings are printed, never checked. `make bench` runs
them all at full size."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"

# script -> text its table always prints (headers and row labels, no numbers)
TABLES = {
    "attribution_bench": ["release:", "create_release", "build_report", "baseline, one query per recording",
                          "report page: index.html", "works sidecar", "open + search", "target:"],
    "bench_catalog": ["catalogue upsert,", "batched (sao)", "one item per transaction", "speed-up"],
    "bench_replica": ["replica search crawl,", "keep-alive session (sao)", "new connection each (baseline)"],
    "clap_embed_bench": ["CLAP audio embeddings,", "laion-clap get_audio_embedding_from_filelist",
                         "sao, 1 window per file (equal work)", "sao default, up to 4 windows per file",
                         "on the same windows: max |diff|", "target: 1 window per file >= 2x laion-clap"],
    "crawl_bench": ["crawl + license gate,", "crawl (parse, upsert, cursor)", "license gate (+ decisions)",
                    "naive row-by-row INSERT", "costs, per API level"],
    "dedup_bench": ["sao grouping (faiss k-means cells + ivf self-join", "planted replicas recovered", "brute force, blocked matrix products",
                    "sao faiss IVF self-join", "train", "search"],
    "dit_bench": ["device:", "DiT tiny", "eager", "compiled", "decode tiny", "paper (H100)",
                  "tiny config (tiny, random weights): batch 1", "diffusion, dpmpp-3m-sde + CFG 7", "steps/s",
                  "decoding, chunked", "decoding, full", "weights resident"],
    "eval_bench": ["device:", "evaluation metrics,", "STFT distance", "autoencoder encode+decode (tiny)",
                   "CLAP audio embedding", "PANNs logits (KL tagger)", "Frechet distance", "KL,"],
    "music_screen_bench": ["device:", "music screen on", "baseline: panns-inference SoundEventDetection",
                           "sao pipeline (batched, streaming, rule-aware)", "sao, batching + streaming only"],
    "refresh_bench": ["refresh flow on the sample corpus", "first run s", "rerun new", "cache hits", "thread:"],
    "shards_bench": ["decode stage:", "shard build,", "baseline: plain decode/resample/FLAC loop",
                     "sao shard build, 2 worker(s), end to end"],
    "train_bench": ["device:", "tiny autoencoder", "tiny DiT", "encode-latents (tiny autoencoder)",
                    "tiny DiT on pre-encoded latent shards", "official"],
}


def test_every_benchmark_is_tested_and_in_make_bench():
    scripts = {p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(TABLES), "a benchmark without a small-size test (or a test without its benchmark)"
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^bench:.*\n((?:\t.*\n?)+)", makefile, re.M).group(1)
    assert {m for m in re.findall(r"bench/(\w+)\.py", recipe)} == scripts, "make bench must run every benchmark"
    assert not re.search(r"--small", recipe), "make bench runs the full sizes"
    for script in scripts:       # one common small-size option, from argparse (so --help lists it)
        assert 'add_argument("--small"' in (BENCH / f"{script}.py").read_text(), script


@pytest.mark.parametrize("script", sorted(TABLES))
def test_benchmark_runs_at_small_size_and_prints_its_table(script, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", SAO_NO_PROGRESS="1",
               PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               # one thread each: on a loaded machine a 2-thread OpenMP pool can stall torch many-fold
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=str(tmp_path))
    env.pop("PREFECT_API_URL", None)
    r = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--small"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, f"{script} --small exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    missing = [t for t in TABLES[script] if t not in r.stdout]
    assert not missing, f"{script} --small did not print {missing}:\n{r.stdout[-3000:]}"
