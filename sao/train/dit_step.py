"""The DiT's training step as stable-audio-tools' DiffusionCondTrainingWrapper takes it (paper 4.2): the
v objective on the cosine schedule, the conditioning-plus-DiT module DDP wraps, a fixed-draw validation
loss, and DiTTraining, which holds what a DiT run updates. sao.train.trainer's train_dit feeds it."""
from __future__ import annotations

import contextlib
import copy
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .config import build_optimizer
from .loop import TrainSettings, _autocast, _optimizer_step, _scaler, _wrap
from .schedules import EMA


class _DiffusionStep(nn.Module):
    """Conditioning plus the DiT as one module: the timing conditioners are trained too, and DDP
    must all-reduce their gradients along with the DiT's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, noised: torch.Tensor, t: torch.Tensor, meta: list[dict], keep: torch.Tensor):
        cross, glob = self.model.conditioning(meta, noised.device)
        cross = cross * keep[:, None, None].to(cross.dtype)   # dropped samples see no text/timing tokens
        return self.model.model.model(noised, t, cross, glob)


def diffusion_targets(lat: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v-objective on the cosine schedule: (noised latents, v target)."""
    alpha, sigma = torch.cos(t * torch.pi / 2)[:, None, None], torch.sin(t * torch.pi / 2)[:, None, None]
    return lat * alpha + noise * sigma, noise * alpha - lat * sigma


@torch.no_grad()
def diffusion_validation_loss(model: nn.Module, batch: dict, *, seed: int = 0, points: int = 8) -> float:
    """The v-objective on a fixed batch at fixed draws: every sample at ``points`` evenly spaced
    times with seeded noise and the posterior mean, all conditions kept. Unlike the training loss
    (one random t per sample), it moves only when the model does, so runs can be compared."""
    ae = model.pretransform.model
    device = next(model.model.parameters()).device
    h = batch["latents"].to(device) if "latents" in batch else ae.encoder(batch["audio"].to(device))
    lat = ae.bottleneck.encode(h, sample=False)
    cross, glob = model.conditioning(batch["meta"], device)
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for t_val in torch.linspace(0.05, 0.95, points):
        t = torch.full((lat.shape[0],), float(t_val), device=device)
        noise = torch.randn(lat.shape, generator=g).to(device)
        noised, target = diffusion_targets(lat, t, noise)
        total += float(F.mse_loss(model.model.model(noised, t, cross, glob), target))
    return total / points



class DiffusionBatch(NamedTuple):
    """One micro-batch of the DiT's step with every random draw made: the (posterior-sampled) latents,
    their metadata, the diffusion times, the noise and the condition keep mask (1 keeps, 0 drops)."""
    latents: torch.Tensor
    meta: list[dict]
    t: torch.Tensor
    noise: torch.Tensor
    keep: torch.Tensor


class DiTTraining:
    """Everything one DiT run updates (the DiT and its trainable conditioners, the optimizer, scheduler and
    EMA) and SAT's ``DiffusionCondTrainingWrapper.training_step`` on one batch: the v objective on the
    cosine schedule, MSE against the v target, condition dropout on the cross-attention tokens, the EMA
    updated before the optimizer's step (SAT: ``on_before_zero_grad``, which Lightning runs inside the
    optimizer's closure), the scheduler stepped per update. ``step`` takes ``grad_accum`` DiffusionBatches."""

    def __init__(self, tc: dict, model: nn.Module, s: TrainSettings, device, world: int = 1):
        self.tc, self.model, self.s, self.device, self.world = tc, model, s, device, world
        # SAT optimizes self.diffusion.parameters(): the DiT, the conditioners' trainable weights (the number
        # embedders; T5 is not a registered module) and the pretransform, which gets no gradients
        trainable = nn.ModuleDict({"dit": model.model, "conditioner": model.conditioner})
        self.params = [p for p in trainable.parameters() if p.requires_grad]
        self.opt, self.sch = build_optimizer(tc["optimizer_configs"]["diffusion"], self.params)
        self.ema_model, self.ema = None, None
        if tc["use_ema"]:                  # SAT's EMA shadows the DiT (self.diffusion.model), not the conditioners
            self.ema_model = copy.deepcopy(model.model).requires_grad_(False)
            self.ema = EMA(model.model, self.ema_model, **tc["ema"])
        self.scaler = _scaler(s, device)
        self.resumable = {k: v for k, v in dict(model=model, ema=self.ema_model, ema_state=self.ema, opt=self.opt,
                                                sch=self.sch, scaler=self.scaler).items() if v is not None}
        self.step_module = _DiffusionStep(model)
        self.step_model = None

    def wrap(self) -> None:
        """DDP-wrap the trained modules (after a resume has loaded them)."""
        self.step_model = _wrap(self.step_module, self.world, self.device)

    def weights(self) -> dict:
        raw = self.model.state_dict()
        ema_full = dict(raw)
        ema_full.update({f"model.{k}": v for k, v in (self.ema_model or self.model.model).state_dict().items()})
        return {"raw": raw, "ema": ema_full}

    def step(self, micro_batches, sync=None) -> dict[str, float]:
        """One batch; returns what it logs (the loss, the learning rate of this update)."""
        if self.step_model is None:
            self.wrap()
        sync = sync or (lambda module, micro: contextlib.nullcontext())
        logged = 0.0
        for micro, mb in enumerate(micro_batches):
            noised, target = diffusion_targets(mb.latents, mb.t, mb.noise)
            with sync(self.step_model, micro):
                with _autocast(self.s, self.device):
                    v = self.step_model(noised, mb.t, mb.meta, mb.keep)
                    loss = F.mse_loss(v.float(), target)
                self.scaler.scale(loss / self.s.grad_accum).backward()
            logged += float(loss.detach()) / self.s.grad_accum
        if self.ema is not None:
            self.ema.update()
        lr = _optimizer_step(self.scaler, self.opt, self.sch, self.params, self.tc["clip_grad_norm"])
        return {"loss": logged, "lr": lr}
