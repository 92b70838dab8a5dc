"""Training on the shards (work in progress: see the issue notes): the shard stream's order and
resume, the DiT loop, the autoencoder loop, checkpoints with manifests and their verification."""
import collections
import json
import shutil

import pytest
import torch
import yaml

from sao import cli
from sao.shards import PlanConfig, build_shards
from sao.train.data import ShardStream, StreamConfig, list_shards
from sao.train.manifest import ManifestError, verify
from sao.train.trainer import TrainSettings, diffusion_validation_loss, train_dit, train_vae

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
    mk = lambda rank=0, n_ranks=1, streams=0: ShardStream(  # noqa: E731
        StreamConfig(urls, 65536, seed=2, rank=rank, world_size=n_ranks, streams=streams))
    a = [s["key"] for s in mk().epoch(0)]
    assert a == [s["key"] for s in mk().epoch(0)] and a != [s["key"] for s in mk().epoch(1)]
    r0, r1 = [s["key"] for s in mk(0, 2).epoch(0)], [s["key"] for s in mk(1, 2).epoch(0)]
    assert not set(r0) & set(r1) and set(r0) | set(r1) == set(a)
    from itertools import islice
    keys = lambda b: [m["key"] for m in b["meta"]]  # noqa: E731
    full = list(islice(mk().batches(2), 6))
    resumed = [keys(b) for _, b in islice(mk().batches(2, position=full[2][0]), 3)]
    assert resumed == [keys(b) for _, b in full[3:6]]
    # the global batch does not depend on the number of processes: 2 ranks x 2 == 1 rank x 4
    one = [keys(b) for _, b in islice(mk(0, 1, 2).batches(4), 5)]
    two = zip(islice(mk(0, 2, 2).batches(2), 5), islice(mk(1, 2, 2).batches(2), 5))
    assert one == [keys(b0) + keys(b1) for (_, b0), (_, b1) in two]
    sample = next(iter(mk().epoch(0)))
    assert sample["audio"].shape == (2, 65536) and isinstance(sample["prompt"], str) and sample["seconds_total"] >= 1
    with pytest.raises(ValueError, match="split evenly"):
        mk(0, 2, 3)


def test_fewer_shards_than_streams_deal_the_samples(shards):
    """Fewer shards than streams (the demo's single shard under torchrun): the streams split the
    samples, never overlap, cover them all, resume exactly, and 2 ranks still equal 1 rank."""
    from itertools import islice
    urls = list_shards(str(shards / "s"), "autoencoder")[:2]  # two shards of ~11 samples
    n = 6                                                    # more streams than shards
    mk = lambda rank=0, n_ranks=1, streams=n: ShardStream(  # noqa: E731
        StreamConfig(urls, 4096, seed=2, rank=rank, world_size=n_ranks, streams=streams, shuffle_buffer=4))
    assert mk().cfg.by_sample and not mk(streams=1).cfg.by_sample
    everything = [s["key"] for s in mk(streams=1).epoch(0)]
    per = [[s["key"] for s in mk().epoch(0, stream=k)] for k in range(n)]
    assert all(per) and sum(map(len, per)) == len(everything) and set().union(*map(set, per)) == set(everything)
    keys = lambda b: [m["key"] for m in b["meta"]]  # noqa: E731
    full = list(islice(mk().batches(n), 4))
    assert [keys(b) for _, b in islice(mk().batches(n, position=full[1][0]), 2)] == [keys(b) for _, b in full[2:4]]
    two = zip(islice(mk(0, 2).batches(n // 2), 4), islice(mk(1, 2).batches(n // 2), 4))
    assert [keys(b) for _, b in full] == [keys(b0) + keys(b1) for (_, b0), (_, b1) in two]


def test_dit_trains_checkpoints_resumes_and_manifest_verifies(shards, world, tmp_path):  # noqa: F811
    from sao.models.t5_local import build_tiny_t5
    t5 = build_tiny_t5(tmp_path / "t5", ["water stream rain dog bird piano music"] * 100)
    s = TrainSettings(stage="dit", shards_dir=str(shards / "s"), out_dir=str(tmp_path / "dit"), steps=24,
                      batch_size=4, checkpoint_every=8, lr=2e-3, warmup=0.5, t5_path=str(t5),
                      catalog=str(shards / "c.duckdb"))
    out = train_dit(s)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "dit" / "losses.jsonl").read_text().splitlines()]
    assert out["step"] == 24 and len(losses) == 24
    # it learns: the loss at fixed draws on a fixed batch falls from the initial weights to the trained ones
    from itertools import islice

    from safetensors.torch import load_file

    from sao.models.factory import create_model
    torch.manual_seed(s.seed)                                 # the trainer's initial weights
    model = create_model("tiny", t5_path=str(t5))
    stream = ShardStream(StreamConfig(list_shards(str(shards / "s"), "diffusion"), model.sample_size, seed=9))
    fixed = [b for _, b in islice(stream.batches(4), 2)]
    before = sum(diffusion_validation_loss(model, b) for b in fixed)
    model.load_state_dict(load_file(str(tmp_path / "dit" / "step-0000024-raw.safetensors")))
    after = sum(diffusion_validation_loss(model, b) for b in fixed)
    assert after < 0.9 * before, (before, after)
    ckpt = tmp_path / "dit" / "step-0000024-ema.safetensors"
    man = json.loads(ckpt.with_suffix(".manifest.json").read_text())
    assert man["counts"]["recordings"] == len(man["recordings"]) > 0
    assert all(r["license"] in ("CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "LicenseRef-CC-Sampling-Plus-1.0") for r in man["recordings"])
    assert all(r["title"] and r["author"] and r["attribution_line"] for r in man["recordings"])
    assert {sh["name"].split("/")[0] for sh in man["shards"]} == {"diffusion"}
    # the model card beside it: Hub YAML (licenses, task, dataset) and the license mix of the manifest
    card = ckpt.with_suffix(".card.md").read_text(encoding="utf-8")
    head = yaml.safe_load(card.split("---")[1])
    assert head["pipeline_tag"] == "text-to-audio" and set(head["license"]) <= {"cc0-1.0", "cc-by-3.0", "cc-by-4.0", "other"}
    mix = collections.Counter(r["license"] for r in man["recordings"])
    assert all(f"| {lic} | {n} |" in card for lic, n in mix.items()) and man["weights"]["sha256"] in card
    assert "step-0000024-ema.manifest.json" in card
    assert verify(ckpt)["recordings"] == man["counts"]["recordings"]
    assert cli.main(["manifest", "verify", str(ckpt)]) == 0
    # resuming continues from the saved step and data position
    s2 = TrainSettings(**{**s.__dict__, "steps": 28})
    assert train_dit(s2)["step"] == 28
    # an altered manifest or shard is caught
    bad = ckpt.with_suffix(".manifest.json")
    bad.write_text(bad.read_text().replace('"CC0-1.0"', '"CC-BY-3.0"', 1))
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
                                  batch_size=2, checkpoint_every=3, disc_channels=8, sample_length=8192,
                                  logger="tensorboard"))
    assert out["step"] == 3
    # the losses reached TensorBoard too: every losses.jsonl value, step by step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = EventAccumulator(str(tmp_path / "vae" / "tensorboard"))
    ev.Reload()
    rows = [json.loads(x) for x in (tmp_path / "vae" / "losses.jsonl").read_text().splitlines()]
    # SAT's alternation: steps 1 and 3 (global steps 0, 2) train the autoencoder and log its terms, step 2
    # the discriminator and its loss
    keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("step", "batch")))
    assert {"loss", "mrstft_loss", "stft_loss_left", "stft_loss_right", "kl_loss", "loss_adv",
            "feature_matching_loss", "discriminator_loss"} <= set(keys)
    assert "loss" in rows[0] and "discriminator_loss" in rows[1] and "loss" not in rows[1] and "loss" in rows[2]
    assert sorted(ev.Tags()["scalars"]) == sorted(f"train/{k}" for k in keys)
    for k in keys:
        got = [(e.step, e.value) for e in ev.Scalars(f"train/{k}")]
        assert got == [(r["step"], pytest.approx(r[k], rel=1e-6)) for r in rows if k in r]
    with pytest.raises(ValueError, match="logger 'mlflow'"):
        train_vae(TrainSettings(stage="vae", shards_dir=str(shards / "s"), out_dir=str(tmp_path / "x"), logger="mlflow"))
    from safetensors.torch import load_file
    sd = load_file(str(tmp_path / "vae" / "step-0000003-ema.safetensors"))
    assert any(k.startswith("encoder.layers.0.") for k in sd) and all(torch.isfinite(v).all() for v in sd.values())
    assert (tmp_path / "vae" / "loss.png").is_file()
    assert verify(tmp_path / "vae" / "step-0000003-raw.safetensors", check_shards=False)["recordings"] > 0


def test_vae_steps_alternate_with_sats_schedules_and_ema(shards, tmp_path):
    """SAT's AutoencoderTrainingWrapper step semantics with the tiny config's (stable_audio_2_0_vae.json's)
    training section: even global steps update the autoencoder, odd ones the discriminator; each
    scheduler steps with its own updates (LRs as SAT's InverseLR, tests/test_train_golden.py); the EMA
    (ema-pytorch 0.2.3 as SAT sets it) updates before each autoencoder step, so it copies the weights
    before updates 1 and 2 and then averages."""
    from .test_train_golden import LR
    out = tmp_path / "vae"
    train_vae(TrainSettings(stage="vae", shards_dir=str(shards / "s"), out_dir=str(out), steps=4, batch_size=2,
                            checkpoint_every=1, sample_length=8192))
    rows = _losses(out)
    assert [("loss" in r, "discriminator_loss" in r) for r in rows] == [(True, False), (False, True)] * 2
    assert [r.get("lr_autoencoder") for r in rows[::2]] == pytest.approx([LR["autoencoder"]["0"], LR["autoencoder"]["1"]])
    assert [r.get("lr_discriminator") for r in rows[1::2]] == pytest.approx([LR["discriminator"]["0"],
                                                                             LR["discriminator"]["1"]])
    raw = {k: _load(out / f"step-{k:07d}-raw.safetensors") for k in range(1, 5)}
    ema = {k: _load(out / f"step-{k:07d}-ema.safetensors") for k in range(1, 5)}
    disc = {k: torch.load(out / f"step-{k:07d}-state.pt", weights_only=True)["disc"] for k in range(1, 5)}
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    init = _init_weights("vae")
    assert not same(raw[1], init) and same(raw[2], raw[1]) and not same(raw[3], raw[2]) and same(raw[4], raw[3])
    assert not same(disc[2], disc[1]) and same(disc[3], disc[2]) and not same(disc[4], disc[3])
    assert same(ema[1], init) and same(ema[2], init) and same(ema[3], raw[2]) and same(ema[4], raw[2])
    state = torch.load(out / "step-0000004-state.pt", weights_only=True)
    assert state["ema_state"] == {"step": 2, "initted": False}
    assert state["sch_g"]["last_epoch"] == 2 and state["sch_d"]["last_epoch"] == 2
    man = json.loads((out / "step-0000004-raw.manifest.json").read_text())
    assert man["training"]["config"]["optimizer_configs"]["discriminator"]["optimizer"]["config"]["lr"] == 3e-4


@pytest.fixture(scope="module")
def one_recording(world, tmp_path_factory):  # noqa: F811
    """A shards build of one real recording (the others taken down): "Time not Lost", 37 s of music."""
    from sao.catalog import Catalog
    out = tmp_path_factory.mktemp("one")
    shutil.copy(world / "c.duckdb", out / "c.duckdb")
    with Catalog(out / "c.duckdb") as cat:
        keep = "freesound:100013"
        assert cat.get_recording(keep)["audio_path"]
        for r in cat.query("SELECT recording_id FROM recordings WHERE recording_id <> ?", [keep]):
            cat.add_takedown(r["recording_id"], "test: train on one recording")
        build_shards(cat, shards_root=str(out), audio_store=world / "audio", required_stages=["license_gate"],
                     plan_cfg=PlanConfig(seed=1), config_hash="t", name="one")
    return out


def test_tiny_vae_loss_falls_on_real_audio(one_recording, tmp_path):
    """One real recording, a few dozen steps: the reconstruction loss falls."""
    train_vae(TrainSettings(stage="vae", shards_dir=str(one_recording / "one"), out_dir=str(tmp_path / "vae"),
                            steps=30, batch_size=3, sample_length=8192, disc_channels=8, lr=1e-3, adv_weight=0.0,
                            checkpoint_every=30, shuffle_buffer=4,
                            warmup=0.5))    # SAT's InverseLR warmup (0.999) ramps over ~1000 updates; this run has 15
    # the reconstruction terms, logged on the autoencoder's (even global) steps
    rows = [json.loads(x) for x in (tmp_path / "vae" / "losses.jsonl").read_text().splitlines()]
    rec = [r["mrstft_loss"] + r["stft_loss_left"] + r["stft_loss_right"] for r in rows if "loss" in r]
    assert len(rec) == 30 // 2 and sum(rec[-4:]) / 4 < 0.9 * (sum(rec[:4]) / 4), rec


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


# --- data parallel, accumulation, precision, stage 2, checkpointing, latent shards -------------------------------

def _load(path):
    from safetensors.torch import load_file
    return load_file(str(path))


def _init_weights(stage):
    """The trainer's initial weights (every rank seeds with the run's seed, 0 here)."""
    from sao.models.factory import create_autoencoder, create_model, load_config
    cfg = load_config("tiny")
    torch.manual_seed(0)
    if stage == "vae":
        return create_autoencoder(cfg["model"]["pretransform"]["config"], cfg["sample_rate"]).state_dict()
    return create_model(cfg).state_dict()


def _gap(a, b, init):
    """How far two runs ended apart, relative to how far training moved the weights."""
    moved = sum(float(((a[k] - init[k]) ** 2).sum()) for k in a) ** 0.5
    gap = sum(float(((a[k] - b[k]) ** 2).sum()) for k in a) ** 0.5
    assert moved > 0
    return gap / moved


def _same_updates(a, b, init) -> tuple[float, float]:
    """(largest weight difference in Adam steps, share of weights that differ by more than 1e-7).
    Adam's first step moves every weight by about lr whatever its gradient's size, so a weight whose
    gradient is float noise (|g| near 0, which of them depends on the CPU's kernels) can step either
    way in two runs that compute the same thing: such runs end at most two steps apart on a few
    weights and equal on the rest, while runs that differ move most weights differently."""
    step = max(float((a[k] - init[k]).abs().max()) for k in a)
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    return float(diffs.max()) / step, float((diffs > 1e-7).float().mean())


def _losses(folder):
    return [json.loads(x) for x in (folder / "losses.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    from sao.models.t5_local import build_tiny_t5
    return build_tiny_t5(tmp_path_factory.mktemp("t5") / "t5", ["water stream rain dog bird piano music"] * 100)


@pytest.mark.parametrize("stage", ["vae", "dit"])
def test_two_process_gloo_ddp_equals_one_process_with_the_doubled_batch(stage, shards, t5, tmp_path):
    import os
    import subprocess
    import sys
    args = ["train", stage, "--shards", str(shards / "s"), "--steps", "3", "--checkpoint-every", "1", "--lr", "1e-3",
            "--data-streams", "2", "--t5-path", str(t5), "--disc-channels", "8", "--sample-length", "8192"]
    # torchrun runs each process with one OpenMP thread; the reference must too, since the thread
    # count changes float summation order, which Adam's sign-like first steps amplify
    env = dict(os.environ, SAO_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "sao.cli", *args, "--batch-size", "4", "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "sao.cli", *args, "--batch-size", "2", "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    # the weights after a step (generator, EMA and, for the VAE, the discriminator) ...
    a, b = _load(tmp_path / "one" / "step-0000001-raw.safetensors"), _load(tmp_path / "two" / "step-0000001-raw.safetensors")
    assert a.keys() == b.keys()
    assert _gap(a, b, _init_weights(stage)) < 1e-3
    ea, eb = _load(tmp_path / "one" / "step-0000001-ema.safetensors"), _load(tmp_path / "two" / "step-0000001-ema.safetensors")
    assert all(torch.allclose(ea[k], eb[k], atol=1e-6) for k in ea)
    sa, sb = (torch.load(tmp_path / x / "step-0000001-state.pt", weights_only=True) for x in ("one", "two"))
    if stage == "vae":
        assert all(torch.allclose(sa["disc"][k], sb["disc"][k], atol=1e-4) for k in sa["disc"])
    assert sa["data_position"] == sb["data_position"]
    # ... and the global batch's loss at every step. (Later weights drift apart where a gradient is
    # ~0: Adam moves such weights by +-lr whatever the gradient's size, so float noise picks the sign.)
    la, lb = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [r["step"] for r in la] == [r["step"] for r in lb] == [1, 2, 3]
    for x, y in zip(la, lb):
        assert all(abs(x[k] - y[k]) <= 1e-4 * abs(x[k]) for k in x if k not in ("step", "batch")), (la, lb)
    # both read the same recordings
    ma = json.loads((tmp_path / "one" / "step-0000003-raw.manifest.json").read_text())
    mb = json.loads((tmp_path / "two" / "step-0000003-raw.manifest.json").read_text())
    assert ma["counts"]["recordings"] > 0
    assert [r["recording_id"] for r in ma["recordings"]] == [r["recording_id"] for r in mb["recordings"]]
    assert ma["shards"] == mb["shards"]


@pytest.mark.parametrize("stage", ["vae", "dit"])
def test_gradient_accumulation_equals_the_bigger_batch(stage, shards, t5, tmp_path):
    common = dict(stage=stage, shards_dir=str(shards / "s"), steps=2, checkpoint_every=1, lr=1e-3, t5_path=str(t5),
                  disc_channels=8, sample_length=8192)
    run = (train_vae if stage == "vae" else train_dit)
    run(TrainSettings(out_dir=str(tmp_path / "big"), batch_size=4, **common))
    run(TrainSettings(out_dir=str(tmp_path / "acc"), batch_size=2, grad_accum=2, **common))
    a, b = _load(tmp_path / "big" / "step-0000001-raw.safetensors"), _load(tmp_path / "acc" / "step-0000001-raw.safetensors")
    steps_apart, share = _same_updates(a, b, _init_weights(stage))
    assert steps_apart <= 2.05 and share < 0.05, (steps_apart, share)
    la, lb = _losses(tmp_path / "big"), _losses(tmp_path / "acc")
    assert len(la) == len(lb) == 2
    for x, y in zip(la, lb):
        assert all(abs(x[k] - y[k]) <= 1e-4 * abs(x[k]) for k in x if k not in ("step", "batch")), (la, lb)
    with pytest.raises(ValueError, match="does not split"):
        run(TrainSettings(out_dir=str(tmp_path / "bad"), global_batch_size=5, grad_accum=2, **common))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_close_to_fp32(precision, shards, t5, tmp_path):
    """Autocast really runs (the first loss is not bit-equal to fp32's) and stays close to it."""
    common = dict(shards_dir=str(shards / "s"), steps=2, checkpoint_every=2, batch_size=2, lr=1e-3, t5_path=str(t5),
                  disc_channels=8, sample_length=8192)
    for stage, run in (("vae", train_vae), ("dit", train_dit)):
        run(TrainSettings(stage=stage, out_dir=str(tmp_path / stage / "fp32"), **common))
        run(TrainSettings(stage=stage, out_dir=str(tmp_path / stage / precision), precision=precision, **common))
        ref, low = _losses(tmp_path / stage / "fp32")[0]["loss"], _losses(tmp_path / stage / precision)[0]["loss"]
        assert low != ref and abs(low - ref) < 0.05 * abs(ref), (stage, ref, low)
        sd = _load(tmp_path / stage / precision / "step-0000002-raw.safetensors")
        assert all(torch.isfinite(v).all() and v.dtype == torch.float32 for v in sd.values())
        state = torch.load(tmp_path / stage / precision / "step-0000002-state.pt", weights_only=True)
        scaler = state["scaler_g" if stage == "vae" else "scaler"]
        assert (scaler != {}) == (precision == "fp16")        # fp16 keeps a loss scale, bf16 needs none


def test_stage_two_freezes_the_encoder_and_trains_the_decoder(shards, tmp_path):
    common = dict(stage="vae", shards_dir=str(shards / "s"), batch_size=2, lr=1e-3, disc_channels=8, sample_length=8192)
    train_vae(TrainSettings(out_dir=str(tmp_path / "s1"), steps=2, checkpoint_every=2, **common))
    stage1 = tmp_path / "s1" / "step-0000002-ema.safetensors"
    train_vae(TrainSettings(out_dir=str(tmp_path / "s2"), steps=2, checkpoint_every=2, freeze_encoder=True,
                            vae_checkpoint=str(stage1), **common))
    a, b = _load(stage1), _load(tmp_path / "s2" / "step-0000002-raw.safetensors")
    enc = [k for k in a if k.startswith("encoder.")]
    dec = [k for k in a if k.startswith("decoder.")]
    assert enc and dec
    assert all(torch.equal(a[k], b[k]) for k in enc)
    assert sum(float((a[k] - b[k]).abs().sum()) for k in dec) > 0


def test_dit_steps_use_the_configs_schedule_and_sats_ema(shards, t5, tmp_path):
    """The DiT's training section (the SAO release's: AdamW lr 5e-5, InverseLR inv_gamma 1e6, power 0.5,
    warmup 0.99; SAT's EMA, no clipping): the LR per step is InverseLR's closed form, and the EMA copies
    the DiT before the first two optimizer steps (ema-pytorch 0.2.3 with update_after_step 1), then averages."""
    out = tmp_path / "dit"
    train_dit(TrainSettings(stage="dit", shards_dir=str(shards / "s"), out_dir=str(out), steps=4, batch_size=2,
                            checkpoint_every=1, t5_path=str(t5)))
    lrs = [r["lr"] for r in _losses(out)]
    assert lrs == pytest.approx([5e-5 * (1 - 0.99 ** (k + 1)) * (1 + k / 1e6) ** -0.5 for k in range(4)], rel=1e-9)
    dit = lambda sd: {k: v for k, v in sd.items() if k.startswith("model.model.")}  # noqa: E731
    raw = {k: dit(_load(out / f"step-{k:07d}-raw.safetensors")) for k in range(1, 5)}
    ema = {k: dit(_load(out / f"step-{k:07d}-ema.safetensors")) for k in range(1, 5)}
    init = dit(_init_weights("dit"))
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(ema[1], init) and same(ema[2], raw[1]) and same(ema[3], raw[2]) and not same(ema[4], raw[3])
    # step 4's decay is 1 - 3^-0.75 (update call 3): the EMA lies between the weights it averages
    k = next(iter(ema[4]))
    d = 1 - 3 ** -0.75
    assert torch.allclose(ema[4][k], d * ema[3][k] + (1 - d) * raw[3][k], atol=1e-7)
    assert json.loads((out / "step-0000004-raw.manifest.json").read_text())["training"]["config"]["clip_grad_norm"] == 0


def test_gradient_checkpointing_gives_the_same_step(shards, t5, tmp_path):
    common = dict(stage="dit", shards_dir=str(shards / "s"), steps=1, checkpoint_every=1, batch_size=2, lr=1e-3,
                  t5_path=str(t5))
    train_dit(TrainSettings(out_dir=str(tmp_path / "plain"), **common))
    train_dit(TrainSettings(out_dir=str(tmp_path / "ckpt"), gradient_checkpointing=True, **common))
    a, b = _load(tmp_path / "plain" / "step-0000001-raw.safetensors"), _load(tmp_path / "ckpt" / "step-0000001-raw.safetensors")
    assert _gap(a, b, _init_weights("dit")) < 1e-3


def test_dit_trains_on_pre_encoded_latent_shards(one_recording, t5, tmp_path):
    from sao.train.latents import LatentShardsError, encode_latents, read_latents_info
    s = one_recording / "one"
    train_vae(TrainSettings(stage="vae", shards_dir=str(s), out_dir=str(tmp_path / "vae"), steps=1, checkpoint_every=1,
                            batch_size=2, disc_channels=8, sample_length=8192))
    vae = tmp_path / "vae" / "step-0000001-ema.safetensors"
    out = encode_latents(str(s), vae, out_dir=tmp_path / "lat")
    assert out["shards"] == len(list_shards(str(s), "diffusion")) and out["audio_seconds"] > 0
    again = encode_latents(str(s), vae, out_dir=tmp_path / "lat")           # resumable: nothing re-encoded
    assert again["skipped"] == out["shards"]
    assert cli.main(["train", "encode-latents", "--shards", str(s), "--vae-checkpoint", str(vae),
                     "--out", str(tmp_path / "lat")]) == 0
    with pytest.raises(LatentShardsError, match="overwrite the audio shards"):
        encode_latents(str(s), vae, out_dir=s)
    info = read_latents_info(tmp_path / "lat")
    assert info["vae_sha256"] and all(e["source_sha256"] for e in info["shards"])
    # same keys as the audio shards, latents at the autoencoder's frame rate
    from sao.models.factory import load_config
    cfg = load_config("tiny")
    ratio = cfg["model"]["pretransform"]["config"]["downsampling_ratio"]
    frames = cfg["sample_size"] // ratio
    lat_stream = ShardStream(StreamConfig(list_shards(str(tmp_path / "lat"), "diffusion"), frames, seed=3))
    aud_stream = ShardStream(StreamConfig(list_shards(str(s), "diffusion"), cfg["sample_size"], seed=3))
    la, au = next(iter(lat_stream.epoch(0))), next(iter(aud_stream.epoch(0)))
    assert la["key"] == au["key"] and la["latents"].shape == (2 * cfg["model"]["pretransform"]["config"]["latent_dim"], frames)
    ckdir = tmp_path / "dit"
    res = train_dit(TrainSettings(stage="dit", shards_dir=str(s), out_dir=str(ckdir), steps=2, checkpoint_every=2,
                                  batch_size=2, t5_path=str(t5), vae_checkpoint=str(vae), latents=str(tmp_path / "lat"),
                                  catalog=str(one_recording / "c.duckdb")))
    assert res["step"] == 2
    ck = ckdir / "step-0000002-raw.safetensors"
    man = json.loads(ck.with_suffix(".manifest.json").read_text())
    assert man["latents"]["autoencoder_sha256"] == info["vae_sha256"] and man["latents"]["shards"]
    assert {x["name"] for x in man["latents"]["shards"]} == {x["name"] for x in man["shards"]}
    assert man["counts"]["recordings"] > 0
    assert verify(ck)["shards_checked"] == 2 * len(man["shards"])
    with open(tmp_path / "lat" / man["latents"]["shards"][0]["name"], "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="sha256 differs"):
        verify(ck)
    # latents made with another autoencoder are refused
    train_vae(TrainSettings(stage="vae", shards_dir=str(s), out_dir=str(tmp_path / "vae2"), steps=1, checkpoint_every=1,
                            batch_size=2, disc_channels=8, sample_length=8192, seed=1))
    with pytest.raises(ValueError, match="encoded with autoencoder"):
        train_dit(TrainSettings(stage="dit", shards_dir=str(s), out_dir=str(tmp_path / "dit2"), steps=1, batch_size=2,
                                t5_path=str(t5), vae_checkpoint=str(tmp_path / "vae2" / "step-0000001-ema.safetensors"),
                                latents=str(tmp_path / "lat")))
    with pytest.raises(LatentShardsError, match="no latents.json"):
        read_latents_info(tmp_path)


def test_shard_names_are_relative_to_the_build_however_it_is_spelled(shards, monkeypatch):
    from sao.train.data import shard_name
    monkeypatch.chdir(shards)
    for root in ("s", "./s/", str(shards / "s"), f"file://{shards / 's'}"):
        urls = list_shards(root, "autoencoder")
        assert [shard_name(root, u) for u in urls][0] == "autoencoder/shard-000000.tar", root
    with pytest.raises(ValueError, match="not under"):
        shard_name("elsewhere", urls[0])
