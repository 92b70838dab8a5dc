"""Training loops for the autoencoder (paper 4.1) and the DiT (paper 4.2).

Both read the shards through ShardStream, run under torchrun / torch.distributed when
WORLD_SIZE > 1 (DDP; NCCL on GPUs, gloo on CPU), keep EMA weights, and save resumable
checkpoints (safetensors weights + manifest beside + a weights_only-loadable state file)
every ``checkpoint_every`` steps. Resuming restores optimizers, schedulers, the step and the
data position, and the set of shards read so far (for the manifest).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import pathlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..models.factory import create_autoencoder, create_model, load_config
from .checkpoint import load_latest, save_checkpoint
from .data import ShardStream, StreamConfig, list_shards
from .losses import (MultiResolutionSTFTLoss, MultiScaleSTFTDiscriminator, discriminator_loss, feature_matching_loss,
                     generator_adv_loss, inverse_lr, stereo_stft_loss)
from .manifest import build_manifest

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    stage: str                                  # "vae" or "dit"
    shards_dir: str                             # a complete shards build (folder or fsspec URL)
    out_dir: str
    model_config: str = "tiny"
    steps: int = 100
    batch_size: int = 4                         # per process
    grad_accum: int = 1
    sample_length: int = 16384                  # vae: samples per clip (paper: 65,536); dit: the config's sample_size
    seed: int = 0
    lr: float | None = None                     # vae 1.5e-4 (discriminator 3e-4); dit 5e-5
    weight_decay: float = 1e-3
    warmup: float = 0.99
    ema_decay: float = 0.999
    checkpoint_every: int = 50
    kl_weight: float = 1e-4
    adv_weight: float = 0.1
    fm_weight: float = 5.0
    freeze_encoder: bool = False                # vae stage 2: train the decoder on
    cfg_dropout: float = 0.1
    vae_checkpoint: str | None = None           # dit: the trained autoencoder's safetensors
    t5_path: str | None = None
    catalog: str | None = None                  # for the manifest's titles, authors and attribution lines
    precision: str = "fp32"                     # fp32 | bf16 | fp16 (autocast)
    gradient_checkpointing: bool = False
    shuffle_buffer: int = 64
    disc_channels: int = 32                     # per EnCodec discriminator; tiny CPU runs use 8
    extra: dict = field(default_factory=dict)


def init_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _autocast(s: TrainSettings, device):
    if s.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if s.precision == "bf16" else torch.float16)


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - decay)


def _all_shards_read(local: set[str], world: int) -> set[str]:
    if world == 1:
        return local
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, sorted(local))
    return set().union(*[set(g) for g in gathered])


class _Run:
    """What both stages share: data, resume, checkpoints, the loss log."""

    def __init__(self, s: TrainSettings, set_: str, sample_length: int):
        self.s = s
        self.rank, self.world, self.device = init_distributed()
        torch.manual_seed(s.seed + self.rank)
        self.urls = list_shards(s.shards_dir, set_)
        self.set = set_
        self.stream = ShardStream(StreamConfig(self.urls, sample_length, seed=s.seed, shuffle_buffer=s.shuffle_buffer,
                                               rank=self.rank, world_size=self.world))
        self.out = pathlib.Path(s.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.latest, self.state = load_latest(self.out)
        self.step = self.state["step"] if self.state else 0
        self.read: set[str] = set(self.state.get("shards_read", [])) if self.state else set()
        self.losses: list[dict] = []

    def batches(self):
        epoch = self.state["data_epoch"] if self.state else 0
        skip = self.state["data_index"] + 1 if self.state else 0
        for ep, idx, batch in self.stream.batches(self.s.batch_size, start_epoch=epoch, skip=skip):
            self.data_pos = (ep, idx)
            self.batch_id = hashlib.sha1(",".join(m["key"] for m in batch["meta"]).encode()).hexdigest()[:12]
            for m in batch["meta"]:
                self.read.add(self.rel(m["shard"]))
            yield batch

    def rel(self, url: str) -> str:
        root = self.s.shards_dir.rstrip("/")
        return url[len(root) + 1:] if url.startswith(root) else url

    def log(self, **vals):
        vals["step"] = self.step
        vals["batch"] = getattr(self, "batch_id", None)      # which samples: resumed runs must match
        self.losses.append(vals)
        if self.rank == 0:
            with open(self.out / "losses.jsonl", "a") as f:
                f.write(json.dumps(vals) + "\n")

    def save(self, weights: dict, state: dict) -> dict | None:
        read = _all_shards_read(self.read, self.world)
        if self.rank != 0:
            return None
        cat = None
        if self.s.catalog:
            from ..catalog import Catalog
            cat = Catalog(self.s.catalog, read_only=True)
        try:
            manifest = build_manifest(cat, self.s.shards_dir, [self.set], stage=self.s.stage, step=self.step,
                                      shards_read=read)
        finally:
            if cat is not None:
                cat.close()
        manifest["training"] = {k: v for k, v in asdict(self.s).items() if k not in ("catalog",)}
        state.update(step=self.step, data_epoch=self.data_pos[0], data_index=self.data_pos[1],
                     shards_read=sorted(read))
        return save_checkpoint(self.out, self.step, weights, state, manifest)

    def plot(self):
        if self.rank != 0 or not self.losses:
            return
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        rows = [json.loads(x) for x in (self.out / "losses.jsonl").read_text().splitlines()]
        keys = [k for k in rows[-1] if k not in ("step", "batch")]
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * len(keys)), squeeze=False)
        for ax, k in zip(axes[:, 0], keys):
            ax.plot([r["step"] for r in rows if k in r], [r[k] for r in rows if k in r])
            ax.set_ylabel(k)
        axes[-1, 0].set_xlabel("step")
        fig.suptitle(f"{self.s.stage} training")
        fig.tight_layout()
        fig.savefig(self.out / "loss.png", dpi=100)
        plt.close(fig)


def _restore(state: dict | None, objects: dict[str, Any]) -> None:
    """Load models, optimizers and schedulers from a resumable state (nothing on a fresh run)."""
    if state:
        for name, obj in objects.items():
            obj.load_state_dict(state[name])


def _snapshot(objects: dict[str, Any]) -> dict[str, Any]:
    return {name: obj.state_dict() for name, obj in objects.items()}


def _wrap(model: nn.Module, world: int, device) -> nn.Module:
    if world > 1:
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def train_vae(s: TrainSettings) -> dict[str, Any]:
    cfg = load_config(s.model_config)
    run = _Run(s, "autoencoder", s.sample_length)
    ae = create_autoencoder(cfg["model"]["pretransform"]["config"], cfg["sample_rate"]).to(run.device)
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
    resumable = dict(model=ae, ema=ema, disc=disc, opt_g=opt_g, opt_d=opt_d, sch_g=sch_g, sch_d=sch_d)
    _restore(run.state, resumable)
    g_model, d_model = _wrap(ae, run.world, run.device), _wrap(disc, run.world, run.device)
    stft = MultiResolutionSTFTLoss(sample_rate=cfg["sample_rate"])
    t0, done = time.perf_counter(), 0
    batches = run.batches()
    while run.step < s.steps:
        for micro in range(s.grad_accum):
            x = next(batches)["audio"].to(run.device)
            with _autocast(s, run.device):
                inner = g_model.module if hasattr(g_model, "module") else g_model
                z, kl = inner.bottleneck.encode(inner.encoder(x) if not s.freeze_encoder else inner.encoder(x).detach(),
                                                return_kl=True)
                recon = inner.decoder(z)
                rec = stereo_stft_loss(stft, recon.float(), x)
                fake, real = d_model(recon), d_model(x)
                loss_g = rec + s.kl_weight * kl + s.adv_weight * generator_adv_loss(fake) + \
                    s.fm_weight * s.adv_weight * feature_matching_loss(real, fake)
            (loss_g / s.grad_accum).backward()
            done += x.shape[0]
        torch.nn.utils.clip_grad_norm_(g_params, 10.0)
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        sch_g.step()
        opt_d.zero_grad(set_to_none=True)
        with _autocast(s, run.device):
            loss_d = discriminator_loss(d_model(x), d_model(recon.detach()))
        loss_d.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        sch_d.step()
        _ema_update(ema, ae, s.ema_decay)
        run.step += 1
        run.log(loss=float(loss_g.detach()), recon=float(rec.detach()), kl=float(kl.detach()), disc=float(loss_d.detach()))
        if run.step % s.checkpoint_every == 0 or run.step == s.steps:
            run.save({"raw": ae.state_dict(), "ema": ema.state_dict()}, _snapshot(resumable))
    run.plot()
    secs = time.perf_counter() - t0
    return {"stage": "vae", "step": run.step, "samples_per_s": round(done * run.world / secs, 2) if secs else 0.0,
            "final_loss": run.losses[-1]["loss"] if run.losses else None, "out_dir": str(run.out)}


def train_dit(s: TrainSettings) -> dict[str, Any]:
    cfg = load_config(s.model_config)
    run = _Run(s, "diffusion", cfg["sample_size"])
    model = create_model(cfg, t5_path=s.t5_path, checkpointing=s.gradient_checkpointing).to(run.device)
    if s.vae_checkpoint:
        from safetensors.torch import load_file
        model.pretransform.model.load_state_dict(load_file(s.vae_checkpoint))
    trainable = nn.ModuleDict({"dit": model.model, "conditioner": model.conditioner})
    ema = copy.deepcopy(model.model).requires_grad_(False)
    opt = torch.optim.AdamW(trainable.parameters(), lr=s.lr or 5e-5, weight_decay=s.weight_decay, betas=(0.9, 0.999))
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda st: inverse_lr(st, warmup=s.warmup))
    resumable = dict(model=model, ema=ema, opt=opt, sch=sch)
    _restore(run.state, resumable)
    dit = _wrap(model.model.model, run.world, run.device)
    gen = torch.Generator(device=run.device).manual_seed(s.seed * 1000 + run.rank + run.step)
    t0, done = time.perf_counter(), 0
    batches = run.batches()
    while run.step < s.steps:
        for _ in range(s.grad_accum):
            batch = next(batches)
            x = batch["audio"].to(run.device)
            with torch.no_grad():
                lat = model.pretransform.model.encode(x)
            b = lat.shape[0]
            t = torch.rand(b, generator=gen, device=run.device)
            alpha, sigma = torch.cos(t * torch.pi / 2)[:, None, None], torch.sin(t * torch.pi / 2)[:, None, None]
            noise = torch.randn(lat.shape, generator=gen, device=run.device)
            noised = lat * alpha + noise * sigma
            target = noise * alpha - lat * sigma
            cross, glob = model.conditioning(batch["meta"], run.device)
            keep = (torch.rand(b, generator=gen, device=run.device) >= s.cfg_dropout).to(cross.dtype)
            cross = cross * keep[:, None, None]            # 10 % of samples see no text/timing tokens
            with _autocast(s, run.device):
                v = dit(noised, t, cross, glob)
                loss = F.mse_loss(v.float(), target)
            (loss / s.grad_accum).backward()
            done += b
        torch.nn.utils.clip_grad_norm_(trainable.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sch.step()
        _ema_update(ema, model.model, s.ema_decay)
        run.step += 1
        run.log(loss=float(loss.detach()))
        if run.step % s.checkpoint_every == 0 or run.step == s.steps:
            raw = model.state_dict()
            ema_full = dict(raw)
            ema_full.update({f"model.{k}": v for k, v in ema.state_dict().items()})
            run.save({"raw": raw, "ema": ema_full}, _snapshot(resumable))
    run.plot()
    secs = time.perf_counter() - t0
    return {"stage": "dit", "step": run.step, "samples_per_s": round(done * run.world / secs, 2) if secs else 0.0,
            "final_loss": run.losses[-1]["loss"] if run.losses else None, "out_dir": str(run.out)}
