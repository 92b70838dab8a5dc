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


def file_windows(path: str, max_windows: int = 4) -> list[np.ndarray]:
    """10 s windows of 48 kHz mono audio (see the module docstring)."""
    from ..audio import load
    x, _ = load(path, sample_rate=SAMPLE_RATE, mono=True)
    x = x[0]
    if x.size == 0:
        return [np.zeros(WINDOW, np.float32)]
    if x.size <= WINDOW:
        reps = WINDOW // x.size
        return [np.pad(np.tile(x, reps), (0, WINDOW - x.size * reps)).astype(np.float32)]
    k = min(max_windows, int(np.ceil(x.size / WINDOW)))
    starts = np.linspace(0, x.size - WINDOW, k).astype(np.int64)
    return [np.ascontiguousarray(x[s:s + WINDOW], dtype=np.float32) for s in starts]


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
