"""Training loops for the autoencoder (paper 4.1) and the DiT (paper 4.2).

Both read the shards through ShardStream, run under torchrun / torch.distributed when
WORLD_SIZE > 1 (DDP; NCCL on GPUs, gloo on CPU), keep EMA weights, and save resumable
checkpoints (safetensors weights + manifest beside + a weights_only-loadable state file)
every ``checkpoint_every`` steps. Resuming restores optimizers, schedulers, the step and the
data position, and the set of shards read so far (for the manifest).

Data parallel runs equal single-process ones: the global batch is dealt from a fixed number
of data streams (see sao.train.data), every random draw of a step (posterior sample, diffusion
time, noise, condition dropout) is made per sample from (seed, step, micro-batch, global
index), every loss is a mean of per-item losses, and one DDP module runs everything that has
trainable parameters (the conditioners along with the DiT), so gradients are averaged exactly
as one process with the whole batch would compute them.

This module holds the stages: their step modules, objectives and loops. What they share (settings,
distributed set-up, per-sample draws, EMA, the optimizer step, ``_Run``) is in sao.train.loop.
"""
from __future__ import annotations

import collections
import copy
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..models.checkpoint import load_checkpoint, sha256_file
from ..models.factory import create_autoencoder, create_model, load_config
from .checkpoint import autoencoder_part, autoencoder_reference
from .loop import (TrainSettings, _autocast, _ema_update, _optimizer_step, _restore, _Run, _scaler, _snapshot, _wrap,
                   init_distributed, sample_normal, sample_uniform)
from .losses import (MultiResolutionSTFTLoss, MultiScaleSTFTDiscriminator, discriminator_loss, feature_matching_loss,
                     generator_adv_loss, inverse_lr, stereo_stft_loss)

# the shared machinery lives in .loop; these names are imported from here too (cli, flows, bench, tests)
__all__ = ["TrainSettings", "_Run", "diffusion_targets", "diffusion_validation_loss", "init_distributed",
           "sample_normal", "sample_uniform", "train_dit", "train_vae"]


class _AutoencoderStep(nn.Module):
    """The generator's forward as one module, so DDP sees (and all-reduces) every trained weight."""

    def __init__(self, ae: nn.Module, freeze_encoder: bool):
        super().__init__()
        self.ae, self.freeze_encoder = ae, freeze_encoder

    def forward(self, x: torch.Tensor, noise: torch.Tensor):
        h = self.ae.encoder(x)
        if self.freeze_encoder:
            h = h.detach()
        z, kl = self.ae.bottleneck.encode(h, return_kl=True, noise=noise)
        return self.ae.decoder(z), kl


def _split_outputs(out: list, n: int) -> tuple[list, list]:
    """Discriminator outputs of cat([real, fake]) -> (real outputs, fake outputs)."""
    return ([(lo[:n], [f[:n] for f in fs]) for lo, fs in out], [(lo[n:], [f[n:] for f in fs]) for lo, fs in out])


def train_vae(s: TrainSettings) -> dict[str, Any]:
    cfg = load_config(s.model_config)
    run = _Run(s, "autoencoder", s.sample_length)
    ae = create_autoencoder(cfg["model"]["pretransform"]["config"], cfg["sample_rate"]).to(run.device)
    if s.vae_checkpoint and run.state is None:      # stage 2 starts from stage 1's weights
        load_checkpoint(ae, s.vae_checkpoint, what="the autoencoder")
    if s.freeze_encoder:
        ae.encoder.requires_grad_(False)
    disc = MultiScaleSTFTDiscriminator(channels=s.disc_channels).to(run.device)
    # a fresh copy (weight-normalised modules cannot be deep-copied)
    ema = create_autoencoder(cfg["model"]["pretransform"]["config"], cfg["sample_rate"]).to(run.device)
    ema.load_state_dict(ae.state_dict())
    ema.requires_grad_(False)
    g_params = [p for p in ae.parameters() if p.requires_grad]
    opt_g = torch.optim.AdamW(g_params, lr=s.lr or 1.5e-4, weight_decay=s.weight_decay, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=(s.lr or 1.5e-4) * 2, weight_decay=s.weight_decay,
                              betas=(0.8, 0.99))
    sch_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda st: inverse_lr(st, warmup=s.warmup))
    sch_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lambda st: inverse_lr(st, warmup=s.warmup))
    scaler_g, scaler_d = _scaler(s, run.device), _scaler(s, run.device)
    resumable = dict(model=ae, ema=ema, disc=disc, opt_g=opt_g, opt_d=opt_d, sch_g=sch_g, sch_d=sch_d,
                     scaler_g=scaler_g, scaler_d=scaler_d)
    _restore(run.state, resumable, run.state_file)
    g_model = _wrap(_AutoencoderStep(ae, s.freeze_encoder), run.world, run.device)
    d_model = _wrap(disc, run.world, run.device)
    stft = MultiResolutionSTFTLoss(sample_rate=cfg["sample_rate"])
    latent_frames = s.sample_length // ae.downsampling_ratio
    t0, done = time.perf_counter(), 0
    batches = run.batches()
    while run.step < s.steps:
        pairs, logged = [], collections.Counter()
        disc.requires_grad_(False)           # the generator step does not train the discriminator
        for micro in range(s.grad_accum):
            x = next(batches)["audio"].to(run.device)
            noise = sample_normal(s.seed, run.step, run.first_index(micro), x.shape[0],
                                  (ae.latent_dim, latent_frames), "posterior", run.device)
            with run.sync(g_model, micro):
                with _autocast(s, run.device):
                    recon, kl = g_model(x, noise)
                    recon = recon.float()
                    rec = stereo_stft_loss(stft, recon, x)
                    with torch.no_grad():
                        real = disc(x)
                    fake = disc(recon)
                    loss_g = rec + s.kl_weight * kl + s.adv_weight * generator_adv_loss(fake) + \
                        s.fm_weight * s.adv_weight * feature_matching_loss(real, fake)
                scaler_g.scale(loss_g / s.grad_accum).backward()
            logged.update({k: float(v.detach()) / s.grad_accum for k, v in (("loss", loss_g), ("recon", rec), ("kl", kl))})
            pairs.append((x, recon.detach()))
            done += x.shape[0]
        _optimizer_step(scaler_g, opt_g, sch_g, g_params, 10.0)
        disc.requires_grad_(True)
        for micro, (x, fake_audio) in enumerate(pairs):
            with run.sync(d_model, micro):
                with _autocast(s, run.device):
                    real, fake = _split_outputs(d_model(torch.cat([x, fake_audio])), x.shape[0])
                    loss_d = discriminator_loss(real, fake)
                scaler_d.scale(loss_d / s.grad_accum).backward()
            logged["disc"] += float(loss_d.detach()) / s.grad_accum
        _optimizer_step(scaler_d, opt_d, sch_d, list(disc.parameters()), 1e9)
        _ema_update(ema, ae, s.ema_decay)
        run.step += 1
        run.log(**logged)
        if run.step % s.checkpoint_every == 0 or run.step == s.steps:
            run.save({"raw": ae.state_dict(), "ema": ema.state_dict()}, _snapshot(resumable))
    run.finish()
    secs = time.perf_counter() - t0
    return {"stage": "vae", "step": run.step, "samples_per_s": round(done * run.world / secs, 2) if secs else 0.0,
            "final_loss": run.losses[-1]["loss"] if run.losses else None, "out_dir": str(run.out)}


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


def train_dit(s: TrainSettings) -> dict[str, Any]:
    cfg = load_config(s.model_config)
    ratio = cfg["model"]["pretransform"]["config"]["downsampling_ratio"]
    run = _Run(s, "diffusion", cfg["sample_size"] // ratio if s.latents else cfg["sample_size"])
    model = create_model(cfg, t5_path=s.t5_path, checkpointing=s.gradient_checkpointing).to(run.device)
    ae = model.pretransform.model
    if s.vae_checkpoint:
        load_checkpoint(ae, s.vae_checkpoint, what="the autoencoder")
    if run.latent_info is not None and not s.vae_checkpoint:
        # the latents' autoencoder must be the one these weights hold and attribute
        raise ValueError(f"{s.latents}: training on pre-encoded latents needs vae_checkpoint (the autoencoder "
                         "they were encoded with)")
    if run.latent_info is not None:
        got = sha256_file(s.vae_checkpoint)
        if got != run.latent_info["vae_sha256"]:
            raise ValueError(f"{s.latents} was encoded with autoencoder {run.latent_info['vae_sha256'][:16]}, "
                             f"but --vae-checkpoint is {got[:16]}")
    trainable = nn.ModuleDict({"dit": model.model, "conditioner": model.conditioner})
    params = [p for p in trainable.parameters() if p.requires_grad]
    ema = copy.deepcopy(model.model).requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=s.lr or 5e-5, weight_decay=s.weight_decay, betas=(0.9, 0.999))
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda st: inverse_lr(st, warmup=s.warmup))
    scaler = _scaler(s, run.device)
    resumable = dict(model=model, ema=ema, opt=opt, sch=sch, scaler=scaler)
    _restore(run.state, resumable, run.state_file)
    # the autoencoder in the weights (resumed ones included), bound to its checkpoint; on every rank, so that
    # a checkpoint that does not verify stops them all
    run.autoencoder = autoencoder_reference(s.vae_checkpoint, autoencoder_part(model.state_dict()))
    step_model = _wrap(_DiffusionStep(model), run.world, run.device)
    t0, done = time.perf_counter(), 0
    batches = run.batches()
    while run.step < s.steps:
        logged = 0.0
        for micro in range(s.grad_accum):
            batch = next(batches)
            with torch.no_grad():
                h = batch["latents"].to(run.device) if "latents" in batch else ae.encoder(batch["audio"].to(run.device))
                b, first = h.shape[0], run.first_index(micro)
                post = sample_normal(s.seed, run.step, first, b, (h.shape[1] // 2, h.shape[2]), "posterior", run.device)
                lat = ae.bottleneck.encode(h, noise=post)
            t = sample_uniform(s.seed, run.step, first, b, "t", run.device)
            noise = sample_normal(s.seed, run.step, first, b, tuple(lat.shape[1:]), "noise", run.device)
            keep = (sample_uniform(s.seed, run.step, first, b, "cfg", run.device) >= s.cfg_dropout).float()
            noised, target = diffusion_targets(lat, t, noise)
            with run.sync(step_model, micro):
                with _autocast(s, run.device):
                    v = step_model(noised, t, batch["meta"], keep)
                    loss = F.mse_loss(v.float(), target)
                scaler.scale(loss / s.grad_accum).backward()
            logged += float(loss.detach()) / s.grad_accum
            done += b
        _optimizer_step(scaler, opt, sch, params, 1.0)
        _ema_update(ema, model.model, s.ema_decay)
        run.step += 1
        run.log(loss=logged)
        if run.step % s.checkpoint_every == 0 or run.step == s.steps:
            raw = model.state_dict()
            ema_full = dict(raw)
            ema_full.update({f"model.{k}": v for k, v in ema.state_dict().items()})
            run.save({"raw": raw, "ema": ema_full}, _snapshot(resumable))
    run.finish()
    secs = time.perf_counter() - t0
    return {"stage": "dit", "step": run.step, "samples_per_s": round(done * run.world / secs, 2) if secs else 0.0,
            "final_loss": run.losses[-1]["loss"] if run.losses else None, "out_dir": str(run.out)}
