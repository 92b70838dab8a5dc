"""The demo's shards as the ecosystem reads them, unchanged: stable-audio-tools' WebDataset loader
conventions (its audio/json keys, pad/crop timing and padding mask, custom metadata module) and
Hugging Face ``datasets``' webdataset builder with every metadata field inferred."""
import io
import json
import math
import random

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds

from tests.test_shards import build, cat_copy, world  # noqa: F401  (fixtures)

SR = 44100
AUDIO_KEYS = ("flac", "wav", "mp3", "m4a", "ogg", "opus")     # SAT's data/dataset.py AUDIO_KEYS


def sat_pad_crop(audio: torch.Tensor, n: int, rng: random.Random):
    """stable-audio-tools' PadCrop_Normalized_T (data/utils.py), as its WebDataset loader applies it:
    a random crop of a longer clip, zero padding of a shorter one, seconds_start = floor(offset/sr),
    seconds_total = ceil(clip samples/sr), padding_mask = ones on the real samples."""
    channels, total = audio.shape
    upper = max(0, total - n)
    offset = rng.randint(0, upper) if total > n else 0
    chunk = audio.new_zeros([channels, n])
    chunk[:, :min(total, n)] = audio[:, offset:offset + n]
    mask = torch.zeros([n])
    mask[:min(total, n)] = 1
    return chunk, math.floor(offset / SR), math.ceil(total / SR), mask


def sat_pipeline(urls, sample_size, custom_metadata_fn=None, pre_encoded=False):
    """SAT's WebDatasetDataLoader pipeline (SimpleShardList -> tarfile_to_samples -> decode -> wds_preprocess
    -> to_tuple("audio", "json")), with soundfile in place of torchaudio.load for the FLAC bytes."""
    rng = random.Random(0)

    def audio_decoder(key, value):
        if key.split(".")[-1] in AUDIO_KEYS:
            x, sr = sf.read(io.BytesIO(value), dtype="float32", always_2d=True)
            return torch.from_numpy(x.T.copy()), sr
        return None

    def npy_decoder(key, value):
        return np.lib.format.read_array(io.BytesIO(value)) if key.split(".")[-1] == "npy" else None

    def preprocess(sample):
        if pre_encoded:
            audio = torch.from_numpy(sample.pop("npy"))
            sample["json"]["padding_mask"] = torch.tensor(sample["json"]["padding_mask"])
        else:
            found = next(k for k in sample if any(k.endswith(a) for a in AUDIO_KEYS))
            audio, in_sr = sample[found]
            assert in_sr == SR
            audio, start, total, mask = sat_pad_crop(audio, sample_size, rng)
            sample["json"].update(seconds_start=start, seconds_total=total, padding_mask=mask)
        if "text" in sample["json"]:
            sample["json"]["prompt"] = sample["json"]["text"]
        if custom_metadata_fn is not None:
            sample["json"].update(custom_metadata_fn(sample["json"], audio))
        sample["audio"] = audio
        return sample

    return wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(),
                            wds.decode(npy_decoder if pre_encoded else audio_decoder), wds.map(preprocess),
                            wds.to_tuple("audio", "json"))


@pytest.fixture(scope="module")
def demo_build(world, tmp_path_factory):  # noqa: F811
    import shutil
    from sao.catalog import Catalog
    d = tmp_path_factory.mktemp("eco")
    shutil.copy(world / "c.duckdb", d / "c.duckdb")
    with Catalog(d / "c.duckdb") as cat:
        summary = build(cat, world, d / "shards", name="eco", workers=2)
    assert summary["status"] == "complete"
    return d / "shards" / "eco"


def test_stable_audio_tools_loader_reads_the_diffusion_set_with_right_timing_and_padding(demo_build):
    from sao.shards.plan import DIFFUSION_WINDOW
    from sao.shards import sat_metadata
    cfg = json.loads((demo_build / "sat" / "diffusion.json").read_text())
    entry = cfg["datasets"][0]
    assert cfg["dataset_type"] == "wds" and entry["path"] == str((demo_build / "diffusion").resolve())
    assert entry["custom_metadata_module"] == str(__import__("pathlib").Path(sat_metadata.__file__).resolve())
    urls = sorted(str(p) for p in (demo_build / "diffusion").glob("*.tar"))
    samples = list(sat_pipeline(urls, DIFFUSION_WINDOW))
    assert samples
    multi = 0
    for audio, j in samples:
        n = j["n_samples"]
        assert audio.shape == (2, DIFFUSION_WINDOW)
        # the mask covers the real audio only: a 0.06 s clip is 0.06 s of valid samples, not 47.5 s
        assert int(j["padding_mask"].sum()) == n and not audio[:, n:].any()
        assert j["prompt"] == j["text"] and j["prompt"]
        assert j["seconds_total"] == math.ceil(n / SR)                 # SAT's own, from the clip it was given
        if j["recording_n_samples"] == n:
            assert j["seconds_total"] == math.ceil(j["recording_n_samples"] / SR)
        else:
            multi += 1
    assert multi                                                       # the corpus has a 61.5 s recording
    # with sao's custom metadata module, timing is the recording's, as the paper conditions on
    fn = sat_metadata.get_custom_metadata
    for _audio, j in sat_pipeline(urls, DIFFUSION_WINDOW, fn):
        assert j["seconds_start"] == j["offset_samples"] // SR
        assert j["seconds_total"] == math.ceil(j["recording_n_samples"] / SR)
        assert int(j["padding_mask"].sum()) == j["n_samples"]
    # ... and prompts are redrawn every time a sample comes round again (an epoch of resampled shards)
    a = [j["prompt"] for _, j in sat_pipeline(urls, DIFFUSION_WINDOW, fn)]
    b = [j["prompt"] for _, j in sat_pipeline(urls, DIFFUSION_WINDOW, fn)]
    assert len(a) == len(b) and a != b


def test_stable_audio_tools_reads_the_autoencoder_set(demo_build):
    from sao.shards.plan import AE_CHUNK
    cfg = json.loads((demo_build / "sat" / "autoencoder.json").read_text())
    assert cfg["datasets"][0]["path"].endswith("/autoencoder")
    urls = sorted(str(p) for p in (demo_build / "autoencoder").glob("*.tar"))
    samples = list(sat_pipeline(urls, 65536))
    assert samples and all(a.shape == (2, 65536) for a, _ in samples)
    assert all(j["n_samples"] <= AE_CHUNK and int(j["padding_mask"].sum()) == min(j["n_samples"], 65536)
               for _, j in samples)


def test_pre_encoded_latents_in_sat_layout(demo_build, tmp_path, monkeypatch):
    """`sao train encode-latents` output read by SAT's pre-encoded WebDataset path (``npy`` + JSON padding_mask)."""
    from sao.models.factory import create_autoencoder, load_config
    from sao.models.checkpoint import save_weights
    from sao.train import latents
    from sao.train.latents import encode_latents
    # one shard is enough for the layout (every window is encoded at its full 47.5 s: the whole set takes minutes)
    every = latents.list_shards
    monkeypatch.setattr(latents, "list_shards", lambda d, set_: every(d, set_)[:1])
    cfg = load_config("tiny")
    torch.manual_seed(0)
    ae = create_autoencoder(cfg["model"]["pretransform"]["config"], cfg["sample_rate"])
    vae = tmp_path / "vae.safetensors"
    save_weights(vae, ae.state_dict())
    out = encode_latents(str(demo_build), vae, out_dir=tmp_path / "lat")
    urls = sorted(str(p) for p in (tmp_path / "lat" / "diffusion").glob("*.tar"))
    assert out["shards"] == len(urls) > 0
    lat_dim, ratio = cfg["model"]["pretransform"]["config"]["latent_dim"], ae.downsampling_ratio
    for z, j in sat_pipeline(urls, None, pre_encoded=True):
        frames = math.ceil(j["window_samples"] / ratio)
        assert z.shape == (lat_dim, frames) and j["padding_mask"].shape == (frames,)
        assert int(j["padding_mask"].sum()) == math.ceil(j["n_samples"] / ratio) == j["latent_valid_frames"]


def test_hugging_face_datasets_reads_every_field(demo_build, tmp_path):
    """load_dataset("webdataset") infers the schema from the first samples: every field must keep one
    type in every sample (no nulls, no empty lists), so the whole set loads."""
    datasets = pytest.importorskip("datasets")
    for set_ in ("diffusion", "autoencoder"):
        urls = sorted(str(p) for p in (demo_build / set_).glob("*.tar"))
        files = {"train": urls}
        # the builder's own inference from the first samples, as load_dataset runs it; only the audio
        # column is then given, as bytes: datasets encodes an Audio column through torchcodec, which
        # does not load beside CPU torch (with it, load_dataset(...) alone gives Audio())
        builder = datasets.load_dataset_builder("webdataset", data_files=files, cache_dir=str(tmp_path / "hf"))
        builder._split_generators(datasets.DownloadManager())
        feats = builder.info.features
        assert isinstance(feats["flac"], datasets.Audio)
        feats["flac"] = datasets.Value("binary")
        ds = datasets.load_dataset("webdataset", data_files=files, split="train", features=feats,
                                   cache_dir=str(tmp_path / "hf2"))
        raw = [s for u in urls for s in wds.WebDataset(u, shardshuffle=False).decode()]
        assert len(ds) == len(raw)
        by_key = {s["__key__"]: s for s in raw}
        for row in ds:
            want = by_key[row["__key__"]]
            assert row["json"] == want["json"]                          # every field, with its value
            audio, sr = sf.read(io.BytesIO(row["flac"]))
            assert sr == SR and audio.shape[0] == row["json"]["n_samples"]
        feats = ds.features["json"]
        assert feats["seconds_total"].dtype == "int64" and feats["hifi"].dtype == "bool"
        assert feats["license"].dtype == "string" and feats["prompt_inputs"].dtype == "string"
