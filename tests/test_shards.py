import collections
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import webdataset as wds

from sao.audio.stage import run_decode
from sao.catalog import Catalog, Decision
from sao.licensing import LicensePolicy
from sao.licensing.stage import run_license_gate
from sao.shards import (AE_CHUNK, DIFFUSION_WINDOW, PlanConfig, ShardBuildError, build_shards, eligible_recordings,
                        high_frequency_energy_share, is_hifi, plan_samples)
from sao.sources.fma import ingest_fma
from sao.sources.freesound import FreesoundClient
from sao.sources.freesound_crawl import crawl_freesound
from sao.sources.audio_download import download_audio
from sao.sources.replica import ReplicaServer, ReplicaSettings

SMALL = dict(target_shard_bytes=8 * 1024 * 1024)


@pytest.fixture(scope="module")
def world(freesound_sounds, fma_dir, tmp_path_factory):
    """A catalogue crawled from the replica, gated, with audio downloaded; returns its folder."""
    d = tmp_path_factory.mktemp("world")
    with ReplicaServer(freesound_sounds, ReplicaSettings(rate_limit_per_minute=0)) as srv, \
            Catalog(d / "c.duckdb") as cat:
        c = FreesoundClient(srv.api_url, "sao-demo-token", rate_limit_per_minute=10_000)
        crawl_freesound(cat, c)
        ingest_fma(cat, fma_dir, audio_store=d / "audio", config_hash="t")
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        download_audio(cat, c, d / "audio")
        run_decode(cat, audio_store=d / "audio", config_hash="t", show_progress=False)
    return d


@pytest.fixture
def cat_copy(world, tmp_path):
    shutil.copy(world / "c.duckdb", tmp_path / "c.duckdb")
    with Catalog(tmp_path / "c.duckdb") as cat:
        yield cat


def build(cat, world, out, **kw):
    plan_cfg = kw.pop("plan_cfg", PlanConfig(seed=3, **SMALL))
    return build_shards(cat, shards_root=str(out), audio_store=world / "audio", required_stages=["license_gate"],
                        plan_cfg=plan_cfg, config_hash="t", **kw)


def read_set(root, set_):
    urls = sorted(str(p) for p in root.glob(f"{set_}/*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False).decode())


def test_shards_read_back_with_webdataset(cat_copy, world, tmp_path):
    summary = build(cat_copy, world, tmp_path / "shards", name="t1", workers=2)
    root = tmp_path / "shards" / "t1"
    assert summary["status"] == "complete" and summary["shards"] >= 3
    eligible = {r["recording_id"]: r for r in eligible_recordings(cat_copy, ["license_gate"], world / "audio")}
    ae, dit = read_set(root, "autoencoder"), read_set(root, "diffusion")
    assert len(ae) == summary["samples"]["autoencoder"] and len(dit) == summary["samples"]["diffusion"]
    for s, length in [(x, AE_CHUNK) for x in ae] + [(x, DIFFUSION_WINDOW) for x in dit]:
        assert "." not in s["__key__"]
        audio, sr = sf.read(io.BytesIO(s["flac"]))
        j = s["json"]
        # only the real audio is stored: the loader pads to its window and masks the padding
        assert sr == 44100 and audio.shape == (j["n_samples"], 2) and 0 < j["n_samples"] <= length
        assert j["window_samples"] == length and j["n_valid_samples"] == j["n_samples"]
        for k in ("text", "prompt", "seconds_start", "seconds_total", "license", "attribution", "recording_id",
                  "prompt_inputs", "admitted_by"):
            assert k in j, k
        assert all(v is not None for v in j.values())                 # no nulls: one JSON type per field
        assert j["text"] == j["prompt"] and j["recording_id"] in eligible
        assert j["license"] in ("CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "LicenseRef-CC-Sampling-Plus-1.0")
        assert j["license"] == j["attribution"]["license"]            # one license vocabulary (SPDX)
        assert j["seconds_start"] == j["offset_samples"] // 44100
        assert j["seconds_total"] == -(-j["recording_n_samples"] // 44100) and j["attribution"]["author"]
        assert j["offset_samples"] + j["n_samples"] <= j["recording_n_samples"]
        assert set(json.loads(j["admitted_by"])) == {"decode", "license_gate"}
        assert json.loads(j["prompt_inputs"])["kind"] in ("freesound", "fma")
        assert isinstance(j["hifi"], bool) and isinstance(j["hf_share"], float)
    # chunk counts per recording: up to 3 for Freesound, extra hi-fi chunks for every FMA track
    per = collections.Counter(s["json"]["recording_id"] for s in ae)
    for rid, n in per.items():
        rec = eligible[rid]
        if rec["source"] == "freesound":
            expected = min(3, max(1, int(rec["duration"] * 44100) // AE_CHUNK))
            assert n >= expected and n <= expected + 3
        else:
            assert n == 3 and all(s["json"]["hifi"] for s in ae if s["json"]["recording_id"] == rid)
    # every admitted recording has at least one diffusion window; long ones several
    wins = collections.Counter(s["json"]["recording_id"] for s in dit)
    assert set(wins) == set(eligible)
    assert wins["fma:2"] == 2  # Vibe Ace, 61.5 s
    index = pd.read_parquet(root / "index.parquet")
    assert len(index) == len(ae) + len(dit)
    assert {"shard", "shard_sha256", "recording_id", "license", "key"} <= set(index.columns)
    import hashlib
    for shard, sha in index.groupby("shard")["shard_sha256"].first().items():
        assert hashlib.sha256((root / shard).read_bytes()).hexdigest() == sha


def test_rejected_and_taken_down_items_are_absent(cat_copy, world, tmp_path):
    cat_copy.add_takedown("freesound:100001", "author request")
    cat_copy.add_decisions([Decision("freesound:100004", "license_gate", "reject", "license-not-allowed: x",
                                     config_hash="t")])
    build(cat_copy, world, tmp_path / "s", name="t2")
    ids = {s["json"]["recording_id"] for st in ("autoencoder", "diffusion") for s in read_set(tmp_path / "s" / "t2", st)}
    assert "freesound:100001" not in ids and "freesound:100004" not in ids
    rejected = {rid for rid, d in cat_copy.latest_decision_map("license_gate").items() if d["verdict"] == "reject"}
    assert len(rejected) >= 5 and not rejected & ids           # BY-SA, public domain, unlicensed FMA tracks
    # a required stage nobody ran admits nothing
    with pytest.raises(ValueError):
        eligible_recordings(cat_copy, [], world / "audio")
    assert eligible_recordings(cat_copy, ["license_gate", "music_screen"], world / "audio") == []


def test_rerun_skips_and_reproduces_identical_bytes(cat_copy, world, tmp_path):
    a = build(cat_copy, world, tmp_path / "a", name="x", workers=1)
    b = build(cat_copy, world, tmp_path / "b", name="x", workers=2)
    assert a["shard_sha256"] == b["shard_sha256"]
    again = build(cat_copy, world, tmp_path / "a", name="x")
    assert again["shards_skipped"] == again["shards"] and again["shard_sha256"] == a["shard_sha256"]
    other_seed = build(cat_copy, world, tmp_path / "c", name="x", plan_cfg=PlanConfig(seed=4, **SMALL))
    assert other_seed["shard_sha256"] != a["shard_sha256"]
    with pytest.raises(ShardBuildError, match="different plan"):
        build(cat_copy, world, tmp_path / "a", name="x", plan_cfg=PlanConfig(seed=4, **SMALL))


def test_corrupt_audio_is_recorded_and_skipped(cat_copy, world, tmp_path):
    store = tmp_path / "audio"
    shutil.copytree(world / "audio", store)
    victim = cat_copy.get_recording("freesound:100002")
    (store / victim["audio_path"]).write_bytes(b"ID3\x03\x00 definitely not audio" * 10)
    out = build_shards(cat_copy, shards_root=str(tmp_path / "s"), audio_store=store, required_stages=["license_gate"],
                       plan_cfg=PlanConfig(seed=3, **SMALL), config_hash="t", name="c")
    # found while writing, recorded as a decode reject, and the build made again without it
    assert "freesound:100002" in out["rebuilt_without"] and out["status"] == "complete"
    d = cat_copy.latest_decision_map("decode")["freesound:100002"]
    assert d["reason"].startswith("audio-corrupt")
    ids = {s["json"]["recording_id"] for s in read_set(tmp_path / "s" / "c", "diffusion")}
    assert "freesound:100002" not in ids and len(ids) > 10


def test_non_finite_samples_are_found_while_writing_and_skipped(cat_copy, world, tmp_path):
    import numpy as np
    import soundfile as sf
    store = tmp_path / "audio"
    shutil.copytree(world / "audio", store)
    victim = cat_copy.get_recording("freesound:100002")
    x = np.full((44100 * 3, 2), 0.1, np.float32)
    x[50000, 1] = np.nan
    buf = io.BytesIO()
    sf.write(buf, x, 44100, format="WAV", subtype="FLOAT")
    (store / victim["audio_path"]).write_bytes(buf.getvalue())
    out = build_shards(cat_copy, shards_root=str(tmp_path / "s"), audio_store=store, required_stages=["license_gate"],
                       plan_cfg=PlanConfig(seed=3, **SMALL), config_hash="t", name="c")
    assert "freesound:100002" in out["rebuilt_without"] and out["status"] == "complete"
    reason = cat_copy.latest_decision_map("decode")["freesound:100002"]["reason"]
    assert reason.startswith("audio-corrupt: ") and victim["audio_path"] in reason and "NaN or infinite" in reason
    ids = {s["json"]["recording_id"] for s in read_set(tmp_path / "s" / "c", "diffusion")}
    assert "freesound:100002" not in ids and len(ids) > 10


def test_kill_mid_shard_leaves_no_partial_tar_and_resumes(world, tmp_path):
    shutil.copy(world / "c.duckdb", tmp_path / "c.duckdb")
    cfg = tmp_path / "sao.toml"
    cfg.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\naudio_store = "{world / "audio"}"\n'
                   f'[shards]\nroot = "{tmp_path / "shards"}"\ntarget_shard_mb = 4\nworkers = 1\n'
                   'required_stages = ["license_gate"]\n')
    env = dict(os.environ, SAO_NO_PROGRESS="1")
    p = subprocess.Popen([sys.executable, "-m", "sao.cli", "--config", str(cfg), "shards", "build", "--name", "k"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = tmp_path / "shards" / "k"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if len(list(root.glob("*/*.tar"))) >= 1 and list((root / ".tmp").glob("*.part")):
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    finished = {t.name for t in root.glob("*/*.tar")}
    assert json.loads((root / "plan.json").read_text())["status"] == "building", "killed after it finished"
    assert finished
    for t in root.glob("*/*.tar"):   # every visible tar is whole
        with open(t, "rb"):
            assert len(list(wds.WebDataset(str(t), shardshuffle=False))) > 0
    from sao import cli
    assert cli.main(["--config", str(cfg), "shards", "build", "--name", "k"]) == 0
    plan = json.loads((root / "plan.json").read_text())
    assert plan["status"] == "complete" and plan["shards_skipped"] >= len(finished)
    assert not list((root / ".tmp").glob("*.part"))
    index = pd.read_parquet(root / "index.parquet")
    assert index["key"].is_unique and len(index) == sum(plan["samples"].values())


def test_fsspec_output_works_for_non_local_storage(cat_copy, world):
    import fsspec
    out = build(cat_copy, world, "memory://sao-test-shards", name="m")
    fs = fsspec.filesystem("memory")
    tars = fs.glob("/sao-test-shards/m/*/*.tar")
    assert len(tars) == out["shards"] and fs.exists("/sao-test-shards/m/index.parquet")
    import tarfile
    with fs.open(tars[0], "rb") as f:
        names = tarfile.open(fileobj=io.BytesIO(f.read())).getnames()
    assert names and all(n.endswith((".flac", ".json")) for n in names)
    again = build(cat_copy, world, "memory://sao-test-shards", name="m")
    assert again["shards_skipped"] == again["shards"] and again["shard_sha256"] == out["shard_sha256"]


def test_high_frequency_check():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((2, 48000 * 3)).astype(np.float32) * 0.1
    share = high_frequency_energy_share(noise, 48000)
    assert 0.25 < share < 0.4                         # white noise: (24-16)/24 of the band
    import soxr
    band_limited = soxr.resample(soxr.resample(noise.T, 48000, 32000), 32000, 48000).T
    assert high_frequency_energy_share(band_limited, 48000) < 1e-5
    assert is_hifi(2, 48000, share) and not is_hifi(1, 48000, share) and not is_hifi(2, 44100, share)
    assert not is_hifi(2, 96000, high_frequency_energy_share(band_limited, 48000))
    assert high_frequency_energy_share(np.zeros((2, 1000)), 48000) == 0.0
    assert high_frequency_energy_share(noise, 32000) == 0.0     # 16 kHz is the Nyquist limit


def test_plan_is_pure_and_deterministic():
    recs = [{"recording_id": f"freesound:{i}", "source": "freesound", "duration": d, "channels": 2,
             "sample_rate": 48000, "path": f"/x/{i}.mp3", "license_canonical": "cc0-1.0", "title": "t",
             "tags": ["a"], "extra": {}} for i, d in enumerate([1.0, 12.0, 100.0])]
    a, b = plan_samples(recs, PlanConfig(seed=1)), plan_samples(list(reversed(recs)), PlanConfig(seed=1))
    assert [(s.key, s.offset, s.meta["prompt"]) for s in a] == [(s.key, s.offset, s.meta["prompt"]) for s in b]
    ae = collections.Counter(s.recording_id for s in a if s.set == "autoencoder" and not s.hifi_extra)
    assert ae == {"freesound:0": 1, "freesound:1": 2, "freesound:2": 3}
    dit = collections.Counter(s.recording_id for s in a if s.set == "diffusion")
    assert dit == {"freesound:0": 1, "freesound:1": 1, "freesound:2": 3}    # 100 s -> 3 windows of 47.55 s
    assert all(s.needs_hf_check for s in a if s.hifi_extra)


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("amp", [0.5, 1.3])                 # 1.3: resampling overshot full scale, a gain applies
@pytest.mark.parametrize("n,length", [(1000, 5000), (5000, 5000), (7000, 5000), (0, 300)])
def test_int16_path_writes_the_same_flac_bytes_as_libsndfile_from_padded_float(channels, amp, n, length):
    """The writer converts only the real samples to int16 (the padding is zeros already); the FLAC
    must be byte for byte what libsndfile writes from the padded, clip-safe float clip."""
    import io
    import soundfile as sf
    from sao.shards.writer import clip_safe, read_frames_to_stereo, stereo_pcm16
    rng = np.random.default_rng(channels * 100 + n)
    frames = (rng.standard_normal((n, channels)) * amp / 3).astype(np.float32)
    frames[:3] = amp
    ref, ref_gain = clip_safe(read_frames_to_stereo(frames, 44100, length))
    pcm, gain = stereo_pcm16(frames, length)
    a, b = io.BytesIO(), io.BytesIO()
    sf.write(a, ref, 44100, format="FLAC", subtype="PCM_16")          # libsndfile's own float conversion
    sf.write(b, pcm, 44100, format="FLAC", subtype="PCM_16")
    assert pcm.shape == (length, 2) and gain == ref_gain and (gain < 1.0) == (amp > 1 and n > 0)
    assert a.getvalue() == b.getvalue()
