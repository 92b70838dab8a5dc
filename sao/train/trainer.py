"""Training loops for the autoencoder (paper 4.1) and the DiT (paper 4.2), as stable-audio-tools (SAT)
trains them: every hyperparameter (optimizers, InverseLR schedules, loss types and weights, the
discriminator, EMA, clipping, discriminator warm-up) comes from the model config's ``training``
section (sao.train.config: SAT's keys and defaults, checked against a schema), with TrainSettings
fields and CLI flags overriding only what they name.

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

This module holds the autoencoder's step modules and objective and both loops (the DiT's step is in
sao.train.dit_step). What they share (settings,
distributed set-up, per-sample draws, EMA, the optimizer step, ``_Run``) is in sao.train.loop.
"""
from __future__ import annotations

import collections
import contextlib
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..models.checkpoint import load_checkpoint, sha256_file
from ..models.factory import create_autoencoder, create_model, load_config
from .checkpoint import autoencoder_part, autoencoder_reference
from .config import build_optimizer, resolve_dit, resolve_vae, vae_section
from .loop import (TrainSettings, _autocast, _optimizer_step, _restore, _Run, _scaler, _snapshot, _wrap, init_distributed,
                   sample_normal, sample_uniform)
from .losses import EncodecDiscriminator, ReconstructionLoss, vae_sample
from .dit_step import DiffusionBatch, DiTTraining, diffusion_targets, diffusion_validation_loss
from .schedules import EMA

# the shared machinery lives in .loop; these names are imported from here too (cli, flows, bench, tests)
__all__ = ["DiTTraining", "DiffusionBatch", "TrainSettings", "VAETraining", "_Run", "diffusion_targets", "diffusion_validation_loss", "init_distributed",
           "sample_normal", "sample_uniform", "train_dit", "train_vae"]


class _AutoencoderStep(nn.Module):
    """The generator's forward as one module, so DDP sees (and all-reduces) every trained weight."""

    def __init__(self, ae: nn.Module):
        super().__init__()
        self.ae = ae

    def forward(self, x: torch.Tensor, noise: torch.Tensor, freeze_encoder: bool = False):
        h = self.ae.encoder(x)
        if freeze_encoder:
            h = h.detach()
        z, kl = vae_sample(h, noise)
        return self.ae.decoder(z), kl


class _DiscriminatorStep(nn.Module):
    """The discriminator on the real then the reconstructed audio (SAT's EncodecDiscriminator.loss), in one
    forward so that DDP sees each weight's gradient once."""

    def __init__(self, disc: nn.Module):
        super().__init__()
        self.disc = disc

    def forward(self, real: torch.Tensor, fake: torch.Tensor):
        return self.disc(real)[0], self.disc(fake)[0]


class _VAEObjective:
    """The generator's loss terms as SAT's ``losses_gen`` names and weights them (each term weighted)."""

    def __init__(self, tc: dict, channels: int, sample_rate: int, disc: EncodecDiscriminator | None):
        lc = tc["loss_configs"]
        self.recon = ReconstructionLoss(weight=lc["spectral"]["weights"]["mrstft"], channels=channels,
                                        sample_rate=sample_rate, **lc["spectral"]["config"])
        self.time = lc["time"]["weights"] if lc["time"] else {}
        self.kl_weight = lc["bottleneck"]["weights"]["kl"]
        self.disc = disc
        self.adv = lc["discriminator"]["weights"] if disc is not None else None

    def __call__(self, recon: torch.Tensor, x: torch.Tensor, kl: torch.Tensor, adversarial: bool) -> dict:
        terms = {}
        left_right = self.recon.channels_of(recon) if self.recon.channels == 2 else None   # before the discriminator
        if adversarial and self.disc is not None:
            with torch.no_grad():
                _, feats_real = self.disc(x)
            logits_fake, feats_fake = self.disc(recon)
            terms["loss_adv"] = self.adv["adversarial"] * self.disc.generator_loss(logits_fake)
            terms["feature_matching_loss"] = self.adv["feature_matching"] * self.disc.feature_matching(feats_real, feats_fake)
        # in fp32 under mixed precision too: in bf16/fp16 the A-weighting FIR (a conv1d, which autocast
        # would cast) and the log of magnitudes near the 1e-4 floor lose most of their digits
        with torch.autocast(recon.device.type, enabled=False):
            recon, x = recon.float(), x.float()
            terms.update(self.recon(recon, x, left_right))
            if self.time.get("l1"):
                terms["l1_time_loss"] = self.time["l1"] * F.l1_loss(recon, x)
            if self.time.get("l2"):
                terms["l2_time_loss"] = self.time["l2"] * F.mse_loss(recon, x)
        terms["kl_loss"] = self.kl_weight * kl
        return terms


def _discriminator(section: dict | None, channels: int) -> EncodecDiscriminator | None:
    if section is None:
        return None
    kw = dict(section["config"])
    kw.pop("loss_type")                       # "hinge", the only one (checked by the schema)
    return EncodecDiscriminator(in_channels=channels, **kw)


class VAETraining:
    """Everything one autoencoder run updates (autoencoder, discriminator, optimizers, schedulers, EMA) and
    SAT's ``AutoencoderTrainingWrapper.training_step`` on one batch: ``step(global_step, micro_batches)``.
    With a discriminator, odd global steps update it and even steps the autoencoder (each batch feeds one
    update; SAT: ``global_step % 2``); the adversarial and feature-matching terms join after
    ``warmup_steps``; the EMA updates before each autoencoder step; each optimizer's scheduler steps with
    its own updates. ``micro_batches`` yields (audio, posterior noise) pairs, ``grad_accum`` of them."""

    def __init__(self, tc: dict, ae: nn.Module, ae_cfg: dict, sample_rate: int, s: TrainSettings, device,
                 world: int = 1):
        self.tc, self.ae, self.s = tc, ae, s
        if s.freeze_encoder:
            ae.encoder.requires_grad_(False)
        channels = ae_cfg["io_channels"]
        self.disc = _discriminator(tc["loss_configs"]["discriminator"], channels)
        self.objective = _VAEObjective(tc, channels, sample_rate, self.disc)
        self.ema_model, self.ema = None, None
        if tc["use_ema"]:
            # a fresh copy (weight-normalised modules cannot be deep-copied)
            self.ema_model = create_autoencoder(ae_cfg, sample_rate).to(device)
            self.ema_model.load_state_dict(ae.state_dict())
            self.ema_model.requires_grad_(False)
            self.ema = EMA(ae, self.ema_model, **tc["ema"])
        self.g_params = [p for p in ae.parameters() if p.requires_grad]
        self.opt_g, self.sch_g = build_optimizer(tc["optimizer_configs"]["autoencoder"], self.g_params)
        self.scaler_g = _scaler(s, device)
        resumable = dict(model=ae, opt_g=self.opt_g, sch_g=self.sch_g, scaler_g=self.scaler_g, ema=self.ema_model,
                         ema_state=self.ema)
        if self.disc is not None:
            self.disc.to(device)
            self.opt_d, self.sch_d = build_optimizer(tc["optimizer_configs"]["discriminator"], self.disc.parameters())
            self.scaler_d = _scaler(s, device)
            resumable.update(disc=self.disc, opt_d=self.opt_d, sch_d=self.sch_d, scaler_d=self.scaler_d)
        self.resumable = {k: v for k, v in resumable.items() if v is not None}
        self.step_module = _AutoencoderStep(ae)
        self.device, self.world = device, world
        self.g_model = self.d_model = None

    def wrap(self) -> None:
        """DDP-wrap the trained modules (after a resume has loaded them)."""
        # the encoder stops getting gradients mid-run with encoder_freeze_on_warmup: DDP must allow that
        self.g_model = _wrap(self.step_module, self.world, self.device, find_unused=self.tc["encoder_freeze_on_warmup"])
        self.d_model = _wrap(_DiscriminatorStep(self.disc), self.world, self.device) if self.disc is not None else None

    def weights(self) -> dict:
        return {"raw": self.ae.state_dict(), "ema": (self.ema_model or self.ae).state_dict()}

    def step(self, global_step: int, micro_batches, sync=None) -> dict[str, float]:
        """One batch; returns what it logs (the terms of the part it updated, that part's learning rate)."""
        if self.g_model is None:
            self.wrap()
        sync = sync or (lambda module, micro: contextlib.nullcontext())
        if self.disc is not None and global_step % 2 == 1:
            return self._discriminator_step(micro_batches, sync)
        return self._autoencoder_step(global_step >= self.tc["warmup_steps"], micro_batches, sync)

    def _discriminator_step(self, micro_batches, sync) -> dict[str, float]:
        s, logged = self.s, collections.Counter()
        self.disc.requires_grad_(True)
        for micro, (x, noise) in enumerate(micro_batches):
            with torch.no_grad(), _autocast(s, self.device):
                fake = self.step_module(x, noise)[0].float()
            with sync(self.d_model, micro):
                with _autocast(s, self.device):
                    real_logits, fake_logits = self.d_model(x, fake)
                    loss_d = self.disc.discriminator_loss(real_logits, fake_logits)
                self.scaler_d.scale(loss_d / s.grad_accum).backward()
            logged["discriminator_loss"] += float(loss_d.detach()) / s.grad_accum
        logged["lr_discriminator"] = _optimizer_step(self.scaler_d, self.opt_d, self.sch_d, list(self.disc.parameters()),
                                                     self.tc["clip_grad_norm"])
        return dict(logged)

    def _autoencoder_step(self, warmed_up: bool, micro_batches, sync) -> dict[str, float]:
        s, logged = self.s, collections.Counter()
        if self.disc is not None:
            self.disc.requires_grad_(False)       # the autoencoder's step does not train the discriminator
        frozen = s.freeze_encoder or (self.tc["encoder_freeze_on_warmup"] and warmed_up)
        for micro, (x, noise) in enumerate(micro_batches):
            with sync(self.g_model, micro):
                with _autocast(s, self.device):
                    recon, kl = self.g_model(x, noise, frozen)
                    terms = self.objective(recon.float(), x, kl, adversarial=warmed_up)
                    loss = sum(terms.values())
                self.scaler_g.scale(loss / s.grad_accum).backward()
            logged["loss"] += float(loss.detach()) / s.grad_accum
            for k, v in terms.items():
                logged[k] += float(v.detach()) / s.grad_accum
        if self.ema is not None:
            self.ema.update()                     # before the optimizer's step, as SAT's training_step
        logged["lr_autoencoder"] = _optimizer_step(self.scaler_g, self.opt_g, self.sch_g, self.g_params,
                                                   self.tc["clip_grad_norm"])
        return dict(logged)


def train_vae(s: TrainSettings) -> dict[str, Any]:
    """Train the autoencoder on the shards' autoencoder set: VAETraining's steps, checkpoints, the loss log."""
    cfg = load_config(s.model_config)
    ae_cfg, _, sample_rate, _ = vae_section(cfg)
    tc = resolve_vae(cfg, s)
    run = _Run(s, "autoencoder", s.sample_length)
    run.training_config = tc
    ae = create_autoencoder(ae_cfg, sample_rate).to(run.device)
    if s.vae_checkpoint and run.state is None:      # stage 2 starts from stage 1's weights
        load_checkpoint(ae, s.vae_checkpoint, what="the autoencoder")
    vt = VAETraining(tc, ae, ae_cfg, sample_rate, s, run.device, run.world)
    _restore(run.state, vt.resumable, run.state_file)
    vt.wrap()
    latent_frames = s.sample_length // ae.downsampling_ratio
    t0, done = time.perf_counter(), 0
    batches = run.batches()

    def micro_batches():
        nonlocal done
        for micro in range(s.grad_accum):
            x = next(batches)["audio"].to(run.device)
            done += x.shape[0]
            yield x, sample_normal(s.seed, run.step, run.first_index(micro), x.shape[0],
                                   (ae.latent_dim, latent_frames), "posterior", run.device)

    while run.step < s.steps:
        logged = vt.step(run.step, micro_batches(), run.sync)
        run.step += 1
        run.log(**logged)
        if run.step % s.checkpoint_every == 0 or run.step == s.steps:
            run.save(vt.weights(), _snapshot(vt.resumable))
    run.finish()
    secs = time.perf_counter() - t0
    gen = [r for r in run.losses if "loss" in r]
    return {"stage": "vae", "step": run.step, "samples_per_s": round(done * run.world / secs, 2) if secs else 0.0,
            "final_loss": gen[-1]["loss"] if gen else None, "out_dir": str(run.out)}


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
    tc = resolve_dit(cfg, s)
    run.training_config = tc
    dt = DiTTraining(tc, model, s, run.device, run.world)
    _restore(run.state, dt.resumable, run.state_file)
    # the autoencoder in the weights (resumed ones included), bound to its checkpoint; on every rank, so that
    # a checkpoint that does not verify stops them all
    run.autoencoder = autoencoder_reference(s.vae_checkpoint, autoencoder_part(model.state_dict()))
    dt.wrap()
    t0, done = time.perf_counter(), 0
    batches = run.batches()

    def micro_batches():
        nonlocal done
        for micro in range(s.grad_accum):
            batch = next(batches)
            with torch.no_grad():
                h = batch["latents"].to(run.device) if "latents" in batch else ae.encoder(batch["audio"].to(run.device))
                b, first = h.shape[0], run.first_index(micro)
                post = sample_normal(s.seed, run.step, first, b, (h.shape[1] // 2, h.shape[2]), "posterior", run.device)
                lat = ae.bottleneck.encode(h, noise=post)
            done += b
            yield DiffusionBatch(
                lat, batch["meta"], t=sample_uniform(s.seed, run.step, first, b, "t", run.device),
                noise=sample_normal(s.seed, run.step, first, b, tuple(lat.shape[1:]), "noise", run.device),
                keep=(sample_uniform(s.seed, run.step, first, b, "cfg", run.device) >= tc["cfg_dropout_prob"]).float())

    while run.step < s.steps:
        logged = dt.step(micro_batches(), run.sync)
        run.step += 1
        run.log(**logged)
        if run.step % s.checkpoint_every == 0 or run.step == s.steps:
            run.save(dt.weights(), _snapshot(dt.resumable))
    run.finish()
    secs = time.perf_counter() - t0
    return {"stage": "dit", "step": run.step, "samples_per_s": round(done * run.world / secs, 2) if secs else 0.0,
            "final_loss": run.losses[-1]["loss"] if run.losses else None, "out_dir": str(run.out)}
