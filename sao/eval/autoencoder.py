"""`sao eval autoencoder`: encode and decode each recording at 44.1 kHz stereo and score the
reconstruction with the paper's metrics (tables 3 and 4).

- Stereo as the paper evaluates it: mono recordings are duplicated to two channels (the model's
  input), stereo is kept, other layouts are skipped with their reason. Audio is resampled to the
  model's rate (44.1 kHz).
- The encoder sees the posterior mean (no sampling noise): a reconstruction metric should not vary
  from run to run.
- Long recordings go through in chunks of ``chunk_seconds`` (a multiple of the downsampling ratio,
  47.55 s by default: the training window), each chunk encoded and decoded on its own; the metrics
  are computed over the whole recording.
"""
from __future__ import annotations

import pathlib
import time
from typing import Any, Iterable

import numpy as np
import torch

from . import metrics

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


class EvalError(ValueError):
    pass


def load_autoencoder(checkpoint: str | pathlib.Path | None, model_config: str = "tiny", *,
                     uncalibrated: bool = False, device: str | None = None):
    """The configured autoencoder with weights from a `sao train vae` checkpoint or a whole-model
    checkpoint (its ``pretransform.model.`` part), read safely by the model factory. Returns
    (autoencoder, checkpoint sha256 or None)."""
    from ..models.checkpoint import CheckpointMismatch, load_checkpoint, sha256_file
    from ..models.factory import create_autoencoder, load_config
    cfg = load_config(model_config)
    ae = create_autoencoder(cfg["model"]["pretransform"]["config"], cfg["sample_rate"])
    sha = None
    if checkpoint:
        try:
            load_checkpoint(ae, checkpoint, prefix="pretransform.model.")
        except CheckpointMismatch as exc:
            raise EvalError(f"{checkpoint}: does not fit the {model_config} autoencoder: {str(exc)[:300]}") from None
        sha = sha256_file(checkpoint)
    elif not uncalibrated:
        raise EvalError("no autoencoder checkpoint: pass one, or --uncalibrated to score random weights (marked so)")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return ae.to(dev).eval().requires_grad_(False), sha


def as_stereo(x: np.ndarray) -> np.ndarray:
    if x.shape[0] == 1:
        return np.concatenate([x, x])
    if x.shape[0] == 2:
        return x
    raise EvalError(f"{x.shape[0]} channels: only mono and stereo recordings are evaluated")


@torch.inference_mode()
def reconstruct(ae, audio: np.ndarray, chunk_samples: int) -> np.ndarray:
    """Encode (posterior mean) and decode (channels, samples) audio, chunk by chunk."""
    r = ae.downsampling_ratio
    chunk = max(r, chunk_samples // r * r)
    dev = next(ae.parameters()).device
    out = np.zeros_like(audio)
    for s in range(0, audio.shape[-1], chunk):
        piece = audio[:, s:s + chunk]
        n = piece.shape[-1]
        padded = np.pad(piece, ((0, 0), (0, -n % r)))
        z = ae.encode(torch.from_numpy(padded)[None].to(dev), sample=False)
        out[:, s:s + n] = ae.decode(z)[0, :, :n].float().cpu().numpy()
    return out


def evaluate_items(ae, items: Iterable[tuple[str, str]], *, chunk_seconds: float = 47.55, on_item=None
                   ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per recording: STFT distance, MEL distance, SI-SDR (or the reason it was skipped)."""
    from ..audio import AudioDecodeError, load
    sr = ae.sample_rate
    chunk = int(chunk_seconds * sr)
    rows, audio_s, wall = [], 0.0, 0.0
    for name, path in items:
        t = time.perf_counter()
        try:
            x, _ = load(path, sample_rate=sr)
            x = as_stereo(x)
            if x.shape[-1] < 4096:
                raise EvalError(f"{x.shape[-1] / sr:.3f} s: too short to score")
        except (AudioDecodeError, EvalError) as exc:
            rows.append({"item": name, "skipped": str(exc)})
            continue
        y = reconstruct(ae, x, chunk)
        row = {"item": name, "seconds": round(x.shape[-1] / sr, 3), "stft_distance": metrics.stft_distance(y, x),
               "mel_distance": metrics.mel_distance(y, x, sr), "si_sdr": metrics.si_sdr(y, x)}
        rows.append(row)
        audio_s += x.shape[-1] / sr
        wall += time.perf_counter() - t
        if on_item:
            on_item(row)
    return rows, {"audio_seconds": audio_s, "wall_seconds": wall,
                  "audio_s_per_s": audio_s / wall if wall else 0.0}


def summary(rows: list[dict[str, Any]], ae, *, checkpoint_sha256: str | None, model_config: str,
            data: str, stats: dict[str, float]) -> dict[str, Any]:
    scored = [r for r in rows if "skipped" not in r]
    return {
        "kind": "autoencoder", "data": data, "model_config": model_config,
        "checkpoint_sha256": checkpoint_sha256, "uncalibrated": checkpoint_sha256 is None,
        "sampling_rate_hz": ae.sample_rate, "latent_rate_hz": round(ae.sample_rate / ae.downsampling_ratio, 2),
        "latent_channels": ae.latent_dim, "recordings": len(scored), "skipped": len(rows) - len(scored),
        "stft_distance": metrics.mean(r["stft_distance"] for r in scored),
        "mel_distance": metrics.mean(r["mel_distance"] for r in scored),
        "si_sdr": metrics.mean(r["si_sdr"] for r in scored),
        "audio_s_per_s": round(stats["audio_s_per_s"], 2),
    }


def audio_items(data: str, cfg=None) -> list[tuple[str, str]]:
    """(name, path) of a folder's audio files, or of a release's recordings (through the catalogue)."""
    p = pathlib.Path(data)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
        if not files:
            raise EvalError(f"{p}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
        return [(str(f.relative_to(p)), str(f)) for f in files]
    if cfg is None:
        raise EvalError(f"{data}: not a folder (and no config to look a release up in)")
    from ..catalog import Catalog
    from ..fsutil import safe_join
    store = cfg.path(cfg.paths.audio_store)
    with Catalog(cfg.catalog_path, read_only=True) as cat:
        rows = cat.query("SELECT i.recording_id, r.audio_path FROM release_items i JOIN recordings r USING "
                         "(recording_id) WHERE i.release_name = ? ORDER BY i.recording_id", [data])
    if not rows:
        raise EvalError(f"{data}: neither a folder nor a release with recordings")
    return [(r["recording_id"], str(safe_join(store, r["audio_path"]))) for r in rows if r["audio_path"]]


def run(checkpoint: str | None, data: str, *, model_config: str = "tiny", chunk_seconds: float = 47.55,
        limit: int | None = None, uncalibrated: bool = False, device: str | None = None, cfg=None
        ) -> dict[str, Any]:
    from ..log import progress
    ae, sha = load_autoencoder(checkpoint, model_config, uncalibrated=uncalibrated, device=device)
    items = audio_items(data, cfg)[:limit]
    bar = progress(total=len(items), desc="autoencoder eval", unit="file")
    rows, stats = evaluate_items(ae, items, chunk_seconds=chunk_seconds, on_item=lambda _: bar.update(1))
    bar.close()
    return {"summary": summary(rows, ae, checkpoint_sha256=sha, model_config=model_config, data=data, stats=stats),
            "items": rows}
