"""Pre-encoded latent shards for DiT training (paper 4.2 trains on latents of the frozen autoencoder).

``encode_latents`` runs the trained autoencoder's encoder once over every audio shard of a set
and writes a mirror shard of the same name. Each sample's audio (stored unpadded) is padded to
its plan window, as the trainer pads it, and encoded; the sample then holds

* ``<key>.npy``: one posterior sample [latent_dim, frames], float32, drawn from (seed, key): the
  layout of stable-audio-tools' pre-encoded WebDataset loader (``"pre_encoded": true``), whose
  JSON ``padding_mask`` (one 0/1 per latent frame) it reads too;
* ``<key>.posterior.npy``: the pre-bottleneck output (posterior mean and scale, float16), which
  ``sao train dit`` reads so that it draws a fresh posterior sample every step;
* ``<key>.json``: the audio sample's metadata plus ``padding_mask``, ``latent_valid_frames``,
  ``downsampling_ratio`` and the autoencoder's sha256.
 ``latents.json`` records the autoencoder's
sha256, the source build and, per latent shard, its sha256 and its source shard's sha256, so
the DiT's attribution manifest names both. Shards already written are skipped (resumable);
each is written under a temporary name and renamed.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import pathlib
import tarfile
import time
from typing import Any

import numpy as np
import soundfile as sf
import torch

from ..fsutil import atomic_path, atomic_write_text, sha256_file
from ..log import progress
from .data import list_shards, read_tar, shard_name

FORMAT = "sao-latent-shards/2"


class LatentShardsError(ValueError):
    pass


def read_latents_info(latents_dir: str | pathlib.Path) -> dict[str, Any]:
    p = pathlib.Path(latents_dir) / "latents.json"
    if not p.is_file():
        raise LatentShardsError(f"{latents_dir}: no latents.json; run `sao train encode-latents` first")
    info = json.loads(p.read_text())
    if info.get("format") != FORMAT or info.get("status") != "complete":
        raise LatentShardsError(f"{p}: not a complete {FORMAT} folder")
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = len(data), 0, 0o644        # reproducible bytes
    tar.addfile(ti, io.BytesIO(data))


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def encode_sample(ae, key: str, audio: np.ndarray, meta: dict, vae_sha: str, device) -> list[tuple[str, bytes]]:
    """One audio sample [N, C] -> its latent sample's members (see the module doc)."""
    ratio = ae.downsampling_ratio
    valid = min(int(meta.get("n_valid_samples", audio.shape[0])), audio.shape[0])
    window = max(int(meta.get("window_samples", audio.shape[0])), valid)
    length = math.ceil(window / ratio) * ratio                 # the encoder needs whole latent frames
    x = np.zeros((audio.shape[1], length), np.float32)
    x[:, :valid] = audio[:valid].T
    with torch.inference_mode():
        h = ae.encoder(torch.from_numpy(x).to(device)[None])[0]
        g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
        noise = torch.randn(h.shape[0] // 2, h.shape[1], generator=g).to(h.device)
        z = ae.bottleneck.encode(h[None], noise=noise[None])[0]
    frames = h.shape[1]
    valid_frames = math.ceil(valid / ratio)
    meta = dict(meta, latent_valid_frames=valid_frames, downsampling_ratio=ratio, autoencoder_sha256=vae_sha,
                padding_mask=[1] * valid_frames + [0] * (frames - valid_frames))
    return [(f"{key}.npy", _npy(z.float().cpu().numpy())),
            (f"{key}.posterior.npy", _npy(h.to(torch.float16).cpu().numpy())),
            (f"{key}.json", json.dumps(meta, sort_keys=True).encode())]


def encode_latents(shards_dir: str, vae_checkpoint: str | pathlib.Path, *, model_config: str = "tiny",
                   out_dir: str | pathlib.Path | None = None, set_: str = "diffusion",
                   device: str | torch.device | None = None) -> dict[str, Any]:
    from ..models.checkpoint import CheckpointError, load_checkpoint
    from ..models.factory import create_autoencoder, load_config
    from .manifest import shard_build_info
    cfg = load_config(model_config)
    vae_sha = sha256_file(pathlib.Path(vae_checkpoint))
    if out_dir is None:
        if "://" in shards_dir:
            raise LatentShardsError("give an output folder for latents of a remote shards build")
        out_dir = pathlib.Path(shards_dir) / "latents" / vae_sha[:12]
    out = pathlib.Path(out_dir)
    if "://" not in shards_dir and (out.resolve() / set_) == (pathlib.Path(shards_dir).resolve() / set_):
        raise LatentShardsError(f"{out}: latent shards would overwrite the audio shards; choose another folder")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ae = create_autoencoder(cfg["model"]["pretransform"]["config"], cfg["sample_rate"])
    try:
        load_checkpoint(ae, vae_checkpoint, what=f"the {model_config} autoencoder")
    except CheckpointError as exc:
        raise LatentShardsError(str(exc)) from None
    ae = ae.to(device).eval().requires_grad_(False)
    plan, rows = shard_build_info(shards_dir)
    shard_sha = {r["shard"]: r["shard_sha256"] for r in rows}
    urls = list_shards(shards_dir, set_)
    entries, t0, audio_s, skipped = [], time.perf_counter(), 0.0, 0
    for url in progress(urls, desc="encode latents", unit="shard"):
        name = shard_name(shards_dir, url)
        dest = out / name
        if not dest.is_file():
            with atomic_path(dest) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for key, _ext, body, meta in read_tar(url, payload=("flac",)):
                    audio, sr = sf.read(io.BytesIO(body), dtype="float32", always_2d=True)
                    audio_s += audio.shape[0] / sr
                    for name_, data in encode_sample(ae, key, audio, meta, vae_sha, device):
                        _add(tar, name_, data)
        else:
            skipped += 1
        entries.append({"name": name, "sha256": sha256_file(dest), "source_sha256": shard_sha.get(name)})
    secs = time.perf_counter() - t0
    info = {"format": FORMAT, "status": "complete", "set": set_, "vae_checkpoint": str(vae_checkpoint),
            "vae_sha256": vae_sha, "model_config": model_config, "source": shards_dir,
            "source_plan_hash": plan.get("plan_hash"), "shards": entries}
    atomic_write_text(out / "latents.json", json.dumps(info, indent=1))
    return {"out_dir": str(out), "shards": len(entries), "skipped": skipped, "audio_seconds": round(audio_s, 1),
            "audio_seconds_per_s": round(audio_s / secs, 1) if secs else 0.0}
