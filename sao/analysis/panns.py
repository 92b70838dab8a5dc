"""PANNs Cnn14_DecisionLevelMax: the real architecture from panns-inference, loaded from a
local checkpoint (never downloaded), with its sha256 recorded.

panns-inference downloads its label CSV with wget when it is first imported, and keeps a
0-byte file when that fails; we place the AudioSet label file shipped in this package at
the path it reads before importing it, so nothing is fetched.
"""
from __future__ import annotations

import logging
import os
import pathlib
import shutil
from dataclasses import dataclass

import torch

from ..models.checkpoint import CheckpointError, load_weights, read_state_dict, sha256_file  # noqa: F401
# (CheckpointError and sha256_file are re-exported: refresh, the cli and tests use them from here)

log = logging.getLogger(__name__)

MODEL_NAME = "PANNs Cnn14_DecisionLevelMax"
SAMPLE_RATE = 32_000
MODEL_KW = dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000, classes_num=527)


def _ensure_labels() -> None:
    target = pathlib.Path.home() / "panns_data" / "class_labels_indices.csv"
    if not target.is_file() or target.stat().st_size == 0:
        from .music_rule import _data
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_data("class_labels_indices.csv"), target)
        log.info("placed the AudioSet label file at %s (panns-inference reads it from there)", target)


def model_class():
    _ensure_labels()
    from panns_inference.models import Cnn14_DecisionLevelMax
    return Cnn14_DecisionLevelMax


@dataclass
class LoadedModel:
    model: torch.nn.Module
    device: torch.device
    checkpoint_sha256: str | None       # None: random weights (uncalibrated)

    @property
    def uncalibrated(self) -> bool:
        return self.checkpoint_sha256 is None


def load_state_dict(path: str | os.PathLike) -> dict:
    """A state dict from a .pth/.pt (weights_only: no code runs) or a .safetensors file; the official
    files hold {"model": state_dict, ...}."""
    return read_state_dict(path, unwrap=("model",))


def load_model(checkpoint: str | os.PathLike | None, *, uncalibrated: bool = False, device: str | None = None,
               seed: int = 0) -> LoadedModel:
    """Build Cnn14_DecisionLevelMax; with no checkpoint, refuse unless ``uncalibrated``."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cls = model_class()
    if checkpoint:
        model = cls(**MODEL_KW)
        load_weights(model, load_state_dict(checkpoint), source=checkpoint, what=MODEL_NAME)
        sha = sha256_file(checkpoint)
    elif uncalibrated:
        torch.manual_seed(seed)
        model = cls(**MODEL_KW)
        sha = None
        log.warning("%s with RANDOM weights (--uncalibrated): its decisions say so and mean nothing", MODEL_NAME)
    else:
        raise CheckpointError(f"no {MODEL_NAME} checkpoint configured ([music_screen].checkpoint); "
                              "pass --uncalibrated to run with random weights, marked as such")
    # channels-last lets oneDNN pick faster convolution kernels (~10% on CPU); same fp32 math
    model = model.to(dev).eval().to(memory_format=torch.channels_last)
    return LoadedModel(model, dev, sha)
