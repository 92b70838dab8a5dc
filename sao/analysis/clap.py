"""LAION-CLAP audio embeddings (HTSAT audio encoder at 48 kHz), offline.

laion-clap is imported with the model hub switched off (HF_HUB_OFFLINE=1: otherwise its
import spends minutes retrying the hub), the transformers classes it needs imported first,
and the torchvision compatibility folder (clap_compat/) on sys.path only when the real
torchvision cannot load. The text tower is built from laion-clap's bundled "transformer"
(no download) and never used: only ``audio_branch.*`` and ``audio_projection.*`` weights
are loaded from a local checkpoint (630k-audioset-best.pt, music_audioset_epoch_15_esc_90.14.pt,
...), whose sha256 is recorded; random weights only when explicitly uncalibrated.

Files are decoded at 48 kHz mono, cut into 10 s windows (a short file is repeated then
zero-padded, as laion-clap's "repeatpad"; a long file gives up to ``max_windows`` evenly spaced
windows), embedded in batches across files, and each file's window embeddings are averaged
and L2-normalised.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pathlib
import sys
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)
SAMPLE_RATE = 48_000
WINDOW = 480_000
MODEL_NAME = "LAION-CLAP HTSAT audio encoder"


def import_laion_clap():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    compat = str(pathlib.Path(__file__).resolve().parent / "clap_compat")
    # transformers' model classes must load while the compat torchvision is invisible (they fail
    # on it). A process can inherit the folder on sys.path from its parent (spawned Dask and
    # multiprocessing workers copy sys.path), so take it off first.
    while compat in sys.path:
        sys.path.remove(compat)
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(compat):
            del sys.modules[name]
    import transformers
    transformers.BertModel, transformers.RobertaModel, transformers.BartModel  # noqa: B018 (loaded before torchvision is visible)
    try:
        importlib.import_module("torchvision")
    except Exception:  # missing, or PyPI's build that cannot load beside CPU torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        if compat not in sys.path:
            sys.path.insert(0, compat)
    import laion_clap
    return laion_clap


@dataclass
class ClapModel:
    module: object                       # laion_clap.CLAP_Module
    device: torch.device
    checkpoint_sha256: str | None
    amodel: str

    @property
    def uncalibrated(self) -> bool:
        return self.checkpoint_sha256 is None

    @property
    def signature(self) -> str:
        return clap_signature(self.amodel, self.checkpoint_sha256)


def clap_signature(amodel: str, checkpoint_sha256: str | None) -> str:
    """Names the embedding space: stored embeddings are only compared within one signature."""
    return hashlib.sha256(f"{amodel}:{checkpoint_sha256 or 'uncalibrated'}".encode()).hexdigest()[:16]


def load_clap(checkpoint: str | os.PathLike | None, *, amodel: str = "HTSAT-tiny", uncalibrated: bool = False,
              device: str | None = None, seed: int = 0) -> ClapModel:
    from ..models.checkpoint import CheckpointError, load_weights, read_state_dict, sha256_file, strip_prefix
    if not checkpoint and not uncalibrated:
        raise CheckpointError("no LAION-CLAP checkpoint configured ([dedup].clap_checkpoint); pass --uncalibrated "
                              "to run with random weights, marked as such")
    laion_clap = import_laion_clap()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    module = laion_clap.CLAP_Module(enable_fusion=False, amodel=amodel, tmodel="transformer", device=str(dev))
    sha = None
    if checkpoint:
        tower = ("audio_branch.", "audio_projection.")
        state = strip_prefix(read_state_dict(checkpoint, unwrap=("model", "state_dict")), "module.")
        audio = {k: v for k, v in state.items() if k.startswith(tower)}
        if not audio:
            raise CheckpointError(f"checkpoint {checkpoint} holds no audio_branch/audio_projection weights")
        # the audio tower only: the text tower stays as built
        load_weights(module.model, audio, source=checkpoint, what=amodel, strict=False,
                     required=lambda k: k.startswith(tower))
        sha = sha256_file(checkpoint)
    else:
        log.warning("%s with RANDOM weights (--uncalibrated): embeddings and duplicate groups mean nothing",
                    MODEL_NAME)
    module.model.eval()
    return ClapModel(module, dev, sha, amodel)


def window_starts(n: int, max_windows: int) -> list[int]:
    """Where the windows of an n-sample (48 kHz) file longer than one window start: up to
    ``max_windows`` evenly spaced from its start to its end."""
    k = min(max_windows, int(np.ceil(n / WINDOW)))
    return [int(s) for s in np.linspace(0, n - WINDOW, k).astype(np.int64)]


def _repeat_pad(x: np.ndarray) -> np.ndarray:
    """A file no longer than one window: repeated whole, then zero-padded (laion-clap's "repeatpad")."""
    if x.size == 0:
        return np.zeros(WINDOW, np.float32)
    reps = WINDOW // x.size
    return np.pad(np.tile(x, reps), (0, WINDOW - x.size * reps)).astype(np.float32)


def file_windows_whole(path: str, max_windows: int = 4) -> list[np.ndarray]:
    """10 s windows of 48 kHz mono audio, the whole file decoded and resampled first."""
    import math

    import soxr

    from ..audio import load
    x, sr = load(path, mono=True)
    x = x[0]
    if sr != SAMPLE_RATE and x.size:
        # librosa's length (laion-clap decodes with librosa.load): ceil(n * ratio), zero-padded, so a
        # short file repeats exactly as it does in laion-clap's own file-list path
        n = int(math.ceil(x.size * SAMPLE_RATE / sr))
        x = soxr.resample(x, sr, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
        x = np.pad(x, (0, n - x.size)) if x.size < n else x[:n]
    if x.size <= WINDOW:
        return [_repeat_pad(x)]
    return [np.ascontiguousarray(x[s:s + WINDOW], dtype=np.float32) for s in window_starts(x.size, max_windows)]


MARGIN = 4_800          # 0.1 s of context either side of a window, so the resampler's edges fall outside it


def file_windows(path: str, max_windows: int = 4) -> list[np.ndarray]:
    """10 s windows of 48 kHz mono audio (see the module docstring). Only the windows are decoded and
    resampled (each with a margin, from an input sample on the resampling ratio's grid, so it lands on
    the samples a whole-file resampling gives): one window of a 47-minute file costs one window. Short
    files, and a file whose decoded length disagrees with its header, take the whole-file path."""
    import math

    import soundfile as sf
    import soxr

    from ..audio import AudioDecodeError, verify
    info = verify(path)              # its last second decodes: a cut-short file is refused, as a whole decode does
    sr = info.sample_rate
    n = int(math.ceil(info.frames * SAMPLE_RATE / sr))          # the length file_windows_whole gives
    if n <= WINDOW + 2 * MARGIN or max_windows < 1:
        return file_windows_whole(path, max_windows)
    g = math.gcd(sr, SAMPLE_RATE)
    step_in, step_out = sr // g, SAMPLE_RATE // g
    out = []
    try:
        with sf.SoundFile(str(path)) as f:
            for s in window_starts(n, max_windows):
                k = max(0, s - MARGIN) // step_out                     # grid point at or before the margin
                a_in, a_out = k * step_in, k * step_out
                frames = int(math.ceil((s + WINDOW + MARGIN - a_out) * sr / SAMPLE_RATE))
                f.seek(a_in)
                x = f.read(frames, dtype="float32", always_2d=True)
                if not np.isfinite(x).all():
                    raise AudioDecodeError(f"{path}: contains NaN or infinite samples")
                x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
                if sr != SAMPLE_RATE:
                    x = soxr.resample(x, sr, SAMPLE_RATE, quality="HQ")
                w = x[s - a_out:s - a_out + WINDOW]
                if w.size < WINDOW:
                    # at the file's end the resampler's rounding can leave a sample or two short of
                    # ceil(frames * ratio), which the whole-file path pads with zeros: so do we.
                    # More missing means the header promised more than decodes: decode it all.
                    if WINDOW - w.size > 8:
                        return file_windows_whole(path, max_windows)
                    w = np.pad(w, (0, WINDOW - w.size))
                out.append(np.ascontiguousarray(w, dtype=np.float32))
    except AudioDecodeError:
        raise
    except Exception as exc:  # libsndfile's own error types
        raise AudioDecodeError(f"{path}: cannot decode: {exc}") from exc
    return out


def embed_files(cm: ClapModel, paths: list[str], *, batch_size: int = 8, max_windows: int = 4,
                on_error=None) -> dict[str, np.ndarray]:
    """{path: L2-normalised 512-d embedding}; files that fail to decode are reported to on_error."""
    from ..audio import AudioDecodeError
    from ..log import progress
    pending: list[tuple[str, np.ndarray]] = []
    sums: dict[str, np.ndarray] = {}

    def flush():
        if not pending:
            return
        with torch.inference_mode():
            emb = cm.module.get_audio_embedding_from_data(x=np.stack([w for _, w in pending]), use_tensor=False)
        for (p, _), e in zip(pending, emb):
            sums[p] = sums.get(p, 0) + e
        pending.clear()

    for p in progress(paths, desc="clap", unit="file"):
        try:
            wins = file_windows(p, max_windows)
        except AudioDecodeError as exc:
            if on_error:
                on_error(p, str(exc))
            continue
        for w in wins:
            pending.append((p, w))
            if len(pending) >= batch_size:
                flush()
    flush()
    return {p: (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32) for p, v in sums.items()}
