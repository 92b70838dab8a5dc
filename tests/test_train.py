"""Training on the shards (work in progress: see the issue notes): the shard stream's order and
resume, the DiT loop, the autoencoder loop, checkpoints with manifests and their verification."""
import json
import shutil

import pytest
import torch

from sao import cli
from sao.shards import PlanConfig, build_shards
from sao.train.data import ShardStream, StreamConfig, list_shards
from sao.train.manifest import ManifestError, verify
from sao.train.trainer import TrainSettings, train_dit, train_vae

from .test_shards import world  # noqa: F401  (the crawled, gated catalogue with audio)


@pytest.fixture(scope="module")
def shards(world, tmp_path_factory):  # noqa: F811
    from sao.catalog import Catalog
    out = tmp_path_factory.mktemp("train_shards")
    shutil.copy(world / "c.duckdb", out / "c.duckdb")
    with Catalog(out / "c.duckdb") as cat:
        build_shards(cat, shards_root=str(out), audio_store=world / "audio", required_stages=["license_gate"],
                     plan_cfg=PlanConfig(seed=1, target_shard_bytes=6 * 1024 * 1024), config_hash="t", name="s")
    return out


def test_stream_is_deterministic_split_and_resumable(shards):
    urls = list_shards(str(shards / "s"), "diffusion")
    assert len(urls) >= 3
    mk = lambda rank=0, world=1: ShardStream(StreamConfig(urls, 65536, seed=2, rank=rank, world_size=world))  # noqa: E731
    a = [s["key"] for s in mk().epoch(0)]
    assert a == [s["key"] for s in mk().epoch(0)] and a != [s["key"] for s in mk().epoch(1)]
    r0, r1 = [s["key"] for s in mk(0, 2).epoch(0)], [s["key"] for s in mk(1, 2).epoch(0)]
    assert not set(r0) & set(r1) and set(r0) | set(r1) == set(a)
    from itertools import islice
    full = [b["meta"][0]["key"] for _, _, b in islice(mk().batches(2), 6)]
    resumed = [b["meta"][0]["key"] for _, _, b in islice(mk().batches(2, start_epoch=0, skip=3), 3)]
    assert resumed == full[3:6]
    one = next(iter(mk().epoch(0)))
    assert one["audio"].shape == (2, 65536) and isinstance(one["prompt"], str) and one["seconds_total"] >= 1


def test_dit_trains_checkpoints_resumes_and_manifest_verifies(shards, world, tmp_path):  # noqa: F811
    from sao.models.t5_local import build_tiny_t5
    t5 = build_tiny_t5(tmp_path / "t5", ["water stream rain dog bird piano music"] * 100)
    s = TrainSettings(stage="dit", shards_dir=str(shards / "s"), out_dir=str(tmp_path / "dit"), steps=24,
                      batch_size=4, checkpoint_every=8, lr=2e-3, t5_path=str(t5), catalog=str(shards / "c.duckdb"))
    out = train_dit(s)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "dit" / "losses.jsonl").read_text().splitlines()]
    assert out["step"] == 24 and len(losses) == 24
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8          # it learns
    ckpt = tmp_path / "dit" / "step-0000024-ema.safetensors"
    man = json.loads(ckpt.with_suffix(".manifest.json").read_text())
    assert man["counts"]["recordings"] == len(man["recordings"]) > 0
    assert all(r["license"] in ("cc0-1.0", "cc-by-3.0", "cc-by-4.0", "cc-sampling+-1.0") for r in man["recordings"])
    assert all(r["title"] and r["author"] and r["attribution_line"] for r in man["recordings"])
    assert {sh["name"].split("/")[0] for sh in man["shards"]} == {"diffusion"}
    assert verify(ckpt)["recordings"] == man["counts"]["recordings"]
    assert cli.main(["manifest", "verify", str(ckpt)]) == 0
    # resuming continues from the saved step and data position
    s2 = TrainSettings(**{**s.__dict__, "steps": 28})
    assert train_dit(s2)["step"] == 28
    # an altered manifest or shard is caught
    bad = ckpt.with_suffix(".manifest.json")
    bad.write_text(bad.read_text().replace('"cc0-1.0"', '"cc-by-3.0"', 1))
    with pytest.raises(ManifestError, match="altered"):
        verify(ckpt)
    assert cli.main(["manifest", "verify", str(ckpt)]) == 1
    ck2 = tmp_path / "dit" / "step-0000016-raw.safetensors"
    first = json.loads(ck2.with_suffix(".manifest.json").read_text())["shards"][0]["name"]
    with open(shards / "s" / first, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="sha256 differs"):
        verify(ck2)


def test_vae_loop_runs_and_writes_safetensors_with_manifest(shards, tmp_path):
    out = train_vae(TrainSettings(stage="vae", shards_dir=str(shards / "s"), out_dir=str(tmp_path / "vae"), steps=3,
                                  batch_size=2, checkpoint_every=3, disc_channels=8, sample_length=8192))
    assert out["step"] == 3
    from safetensors.torch import load_file
    sd = load_file(str(tmp_path / "vae" / "step-0000003-ema.safetensors"))
    assert any(k.startswith("encoder.layers.0.") for k in sd) and all(torch.isfinite(v).all() for v in sd.values())
    assert (tmp_path / "vae" / "loss.png").is_file()
    assert verify(tmp_path / "vae" / "step-0000003-raw.safetensors", check_shards=False)["recordings"] > 0


def test_tiny_vae_loss_falls_on_real_audio(world, tmp_path):  # noqa: F811
    """One real recording (the others taken down), a few dozen steps: the reconstruction loss falls."""
    from sao.catalog import Catalog
    shutil.copy(world / "c.duckdb", tmp_path / "c.duckdb")
    with Catalog(tmp_path / "c.duckdb") as cat:
        keep = "freesound:100013"                           # "Time not Lost", 37 s of real music
        assert cat.get_recording(keep)["audio_path"]
        for r in cat.query("SELECT recording_id FROM recordings WHERE recording_id <> ?", [keep]):
            cat.add_takedown(r["recording_id"], "test: train on one recording")
        build_shards(cat, shards_root=str(tmp_path), audio_store=world / "audio", required_stages=["license_gate"],
                     plan_cfg=PlanConfig(seed=1), config_hash="t", name="one")
    train_vae(TrainSettings(stage="vae", shards_dir=str(tmp_path / "one"), out_dir=str(tmp_path / "vae"), steps=30,
                            batch_size=3, sample_length=8192, disc_channels=8, lr=1e-3, adv_weight=0.0,
                            checkpoint_every=30, shuffle_buffer=4))
    rec = [json.loads(x)["recon"] for x in (tmp_path / "vae" / "losses.jsonl").read_text().splitlines()]
    assert sum(rec[-6:]) / 6 < 0.9 * (sum(rec[:6]) / 6), rec


def test_resume_after_kill_continues_step_and_data_order(shards, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from sao.models.t5_local import build_tiny_t5
    t5 = build_tiny_t5(tmp_path / "t5", ["water stream rain dog bird piano music"] * 100)
    args = ["train", "dit", "--shards", str(shards / "s"), "--steps", "8", "--batch-size", "2",
            "--checkpoint-every", "2", "--t5-path", str(t5)]
    env = dict(os.environ, SAO_NO_PROGRESS="1")
    # uninterrupted reference
    subprocess.run([sys.executable, "-m", "sao.cli", *args, "--out", str(tmp_path / "a")], env=env, check=True,
                   capture_output=True)
    # killed after its step-4 checkpoint, then resumed
    p = subprocess.Popen([sys.executable, "-m", "sao.cli", *args, "--out", str(tmp_path / "b")], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "b" / "latest.json"
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["step"] >= 4:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert 4 <= killed_at < 8, "the run should have been killed midway"
    from sao import cli
    assert cli.main([*args, "--out", str(tmp_path / "b")]) == 0
    a = [json.loads(x) for x in (tmp_path / "a" / "losses.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "losses.jsonl").read_text().splitlines()]
    batches_a = {r["step"]: r["batch"] for r in a}
    batches_b = {}
    for r in b:                        # steps after the checkpoint ran twice: the resumed run's entries win
        batches_b[r["step"]] = r["batch"]
    assert batches_b == batches_a and max(batches_b) == 8
    assert not list((tmp_path / "b").glob(".*.part"))
