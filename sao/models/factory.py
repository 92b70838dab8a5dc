"""One JSON model config builds the whole model through small factory functions (the
stable-audio-tools layout): a frozen pretransform (the Oobleck VAE), conditioners and the DiT
are separate parts of ``ConditionedDiffusionModel`` with the released checkpoint's key names:
``model.model.*`` (DiT), ``conditioner.conditioners.<id>.*``, ``pretransform.model.*``."""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import torch
from torch import nn

from .autoencoder import AudioAutoencoder, OobleckDecoder, OobleckEncoder
from .checkpoint import CheckpointMismatch, load_checkpoint
from .conditioners import MultiConditioner, NumberConditioner, T5Conditioner
from .dit import DiffusionTransformer

# CheckpointMismatch and load_checkpoint live in .checkpoint; re-exported, callers import them from here too
__all__ = ["CONFIG_DIR", "CheckpointMismatch", "ConditionedDiffusionModel", "DiTWrapper", "ModelConfigError",
           "Pretransform", "create_autoencoder", "create_conditioner", "create_model", "load_checkpoint", "load_config",
           "parameter_counts"]

CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"


class ModelConfigError(ValueError):
    pass


def load_config(name_or_path: str | os.PathLike) -> dict[str, Any]:
    p = pathlib.Path(name_or_path)
    if not p.is_file():
        p = CONFIG_DIR / f"{name_or_path}.json"
    if not p.is_file():
        raise ModelConfigError(f"model config {name_or_path!r} not found (shipped: "
                               f"{', '.join(sorted(x.stem for x in CONFIG_DIR.glob('*.json')))})")
    return json.loads(p.read_text())


def create_autoencoder(cfg: dict[str, Any], sample_rate: int = 44100) -> AudioAutoencoder:
    enc, dec = cfg["encoder"], cfg["decoder"]
    if enc["type"] != "oobleck" or dec["type"] != "oobleck" or cfg.get("bottleneck", {}).get("type") != "vae":
        raise ModelConfigError("only the Oobleck encoder/decoder with a VAE bottleneck are supported")
    return AudioAutoencoder(OobleckEncoder(**enc["config"]), OobleckDecoder(**dec["config"]),
                            latent_dim=cfg["latent_dim"], downsampling_ratio=cfg["downsampling_ratio"],
                            io_channels=cfg["io_channels"], sample_rate=sample_rate)


def create_conditioner(cfg: dict[str, Any], t5_path: str | None = None) -> MultiConditioner:
    conds = {}
    for c in cfg["configs"]:
        kind, conf = c["type"], dict(c.get("config", {}))
        if kind == "t5":
            conds[c["id"]] = T5Conditioner(cfg["cond_dim"], local_path=t5_path, **conf)
        elif kind == "number":
            conds[c["id"]] = NumberConditioner(cfg["cond_dim"], **conf)
        else:
            raise ModelConfigError(f"conditioner type {kind!r} is not supported")
    return MultiConditioner(conds)


class Pretransform(nn.Module):
    """The frozen autoencoder between audio and latents."""

    def __init__(self, model: AudioAutoencoder):
        super().__init__()
        self.model = model
        self.model.requires_grad_(False).eval()

    def train(self, mode: bool = True):          # stays frozen in eval mode
        return super().train(False)


class DiTWrapper(nn.Module):
    def __init__(self, dit: DiffusionTransformer):
        super().__init__()
        self.model = dit


class ConditionedDiffusionModel(nn.Module):
    def __init__(self, config: dict[str, Any], *, t5_path: str | None = None, checkpointing: bool = False):
        super().__init__()
        m = config["model"]
        self.config = config
        self.sample_rate, self.sample_size = config["sample_rate"], config["sample_size"]
        self.model = DiTWrapper(DiffusionTransformer(**m["diffusion"]["config"], checkpointing=checkpointing))
        self.conditioner = create_conditioner(m["conditioning"], t5_path)
        self.pretransform = Pretransform(create_autoencoder(m["pretransform"]["config"], self.sample_rate))
        self.cross_ids = m["diffusion"]["cross_attention_cond_ids"]
        self.global_ids = m["diffusion"]["global_cond_ids"]

    @property
    def dit(self) -> DiffusionTransformer:
        return self.model.model

    def conditioning(self, batch: list[dict], device) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.conditioner(batch, device)
        cross = torch.cat([c[k][0] for k in self.cross_ids], dim=1)
        glob = torch.cat([c[k][0][:, 0] for k in self.global_ids], dim=-1)
        return cross, glob


def create_model(config: dict[str, Any] | str, *, t5_path: str | None = None, device=None,
                 checkpointing: bool = False) -> ConditionedDiffusionModel:
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    if cfg.get("model_type") != "diffusion_cond":
        raise ModelConfigError(f"model_type {cfg.get('model_type')!r}: only diffusion_cond is supported")
    if device is None:
        return ConditionedDiffusionModel(cfg, t5_path=t5_path, checkpointing=checkpointing)
    with torch.device(device):
        return ConditionedDiffusionModel(cfg, t5_path=t5_path, checkpointing=checkpointing)


def parameter_counts(model: ConditionedDiffusionModel) -> dict[str, int]:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"autoencoder": count(model.pretransform), "dit": count(model.model),
            "timing_conditioners": sum(count(model.conditioner.conditioners[k])
                                       for k in model.conditioner.conditioners if k.startswith("seconds"))}
