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
"""
from __future__ import annotations

import collections
import contextlib
import copy
import hashlib
import json
import logging
import os
import pathlib
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..fsutil import sha256_file
from ..models.factory import create_autoencoder, create_model, load_config
from .checkpoint import autoencoder_part, autoencoder_reference, load_latest, save_checkpoint
from .data import ShardStream, StreamConfig, list_shards, shard_name
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
    data_streams: int = 0                       # global data streams (0: one per process); fixes the data order
    global_batch_size: int = 0                  # if set: batch_size = global / (processes * grad_accum)
    latents: str | None = None                  # dit: a pre-encoded latent shards folder (sao train encode-latents)
    signing_key_file: str | None = None         # ed25519 key signing each checkpoint (None: $SAO_SIGNING_KEY or unsigned)


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


def _gather(obj: Any, world: int) -> list:
    if world == 1:
        return [obj]
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def _per_sample(draw, seed: int, step: int, first: int, n: int, shape: tuple[int, ...], tag: str, device):
    """[n, *shape] draws, one generator per sample keyed by (seed, step, index in the step's global
    batch, tag): the same numbers whichever process or micro-batch holds the sample."""
    def generator(index: int) -> torch.Generator:
        h = hashlib.blake2b(f"{seed}:{step}:{index}:{tag}".encode(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(h, "little") & (2 ** 63 - 1))
    return torch.stack([draw(shape, generator=generator(first + i)) for i in range(n)]).to(device)


def sample_normal(seed: int, step: int, first: int, n: int, shape: tuple[int, ...], tag: str, device) -> torch.Tensor:
    return _per_sample(torch.randn, seed, step, first, n, shape, tag, device)


def sample_uniform(seed: int, step: int, first: int, n: int, tag: str, device) -> torch.Tensor:
    return _per_sample(torch.rand, seed, step, first, n, (), tag, device)


class _Run:
    """What both stages share: data, resume, checkpoints, the loss log."""

    def __init__(self, s: TrainSettings, set_: str, sample_length: int):
        self.s = s
        self.rank, self.world, self.device = init_distributed()
        torch.manual_seed(s.seed)                   # the same initial weights on every rank
        self.batch_size = s.batch_size              # per process and micro-batch
        if s.global_batch_size:
            self.batch_size, left = divmod(s.global_batch_size, self.world * s.grad_accum)
            if left or not self.batch_size:
                raise ValueError(f"global batch {s.global_batch_size} does not split into {self.world} processes x "
                                 f"{s.grad_accum} accumulation steps")
        self.out = pathlib.Path(s.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        from ..signing import load_signing_key
        self.signing_key = load_signing_key(s.signing_key_file) if self.rank == 0 else None   # a bad key fails now
        _, self.state = load_latest(self.out)
        self.step = self.state["step"] if self.state else 0
        self.read: set[str] = set(self.state.get("shards_read", [])) if self.state else set()
        streams = (self.state or {}).get("data_streams") or s.data_streams or self.world
        self.set = set_
        self.autoencoder: dict | None = None       # dit: the manifest's ``autoencoder`` (the one in its weights)
        self.latent_info = None
        if s.latents:
            from .latents import read_latents_info
            from .manifest import shard_build_info
            self.latent_info = read_latents_info(s.latents)
            plan_hash = shard_build_info(s.shards_dir)[0].get("plan_hash")
            if self.latent_info.get("source_plan_hash") != plan_hash:
                raise ValueError(f"{s.latents} was encoded from another shards build than {s.shards_dir}")
            self.urls = list_shards(s.latents, set_)
        else:
            self.urls = list_shards(s.shards_dir, set_)
        self.stream = ShardStream(StreamConfig(self.urls, sample_length, seed=s.seed, shuffle_buffer=s.shuffle_buffer,
                                               rank=self.rank, world_size=self.world, streams=streams))
        self.data_pos: dict = dict((self.state or {}).get("data_position") or {})
        self.losses: list[dict] = []

    def first_index(self, micro: int) -> int:
        """This rank's first sample in the step's global batch (micro-batch major, then rank), so
        one process with batch 4 draws what two with batch 2, or one with 2 x 2 accumulated, draw."""
        return (micro * self.world + self.rank) * self.batch_size

    def batches(self):
        for pos, batch in self.stream.batches(self.batch_size, position=self.data_pos):
            self.data_pos = pos
            self.batch_id = hashlib.sha1(",".join(m["key"] for m in batch["meta"]).encode()).hexdigest()[:12]
            for m in batch["meta"]:
                self.read.add(self.rel(m["shard"]))
            yield batch

    def rel(self, url: str) -> str:
        return shard_name(self.s.latents or self.s.shards_dir, url)

    def sync(self, module: nn.Module, micro: int):
        """Skip DDP's all-reduce on all but the last micro-batch of an accumulated step."""
        if isinstance(module, nn.parallel.DistributedDataParallel) and micro < self.s.grad_accum - 1:
            return module.no_sync()
        return contextlib.nullcontext()

    def log(self, **vals):
        """Log the step's losses, averaged over the ranks (the global batch's loss)."""
        if self.world > 1:
            both = torch.tensor([float(v) for v in vals.values()], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(both)
            vals = dict(zip(vals, (both / self.world).tolist()))
        vals = {k: float(v) for k, v in vals.items()}
        vals["step"] = self.step
        vals["batch"] = getattr(self, "batch_id", None)      # which samples: resumed runs must match
        self.losses.append(vals)
        if self.rank == 0:
            with open(self.out / "losses.jsonl", "a") as f:
                f.write(json.dumps(vals) + "\n")

    def save(self, weights: dict, state: dict) -> dict | None:
        read = set().union(*[set(r) for r in _gather(sorted(self.read), self.world)])
        position: dict = {}
        for p in _gather(self.data_pos, self.world):
            position.update(p)
        if self.rank != 0:
            return None
        cat = None
        if self.s.catalog:
            from ..catalog import Catalog
            cat = Catalog(self.s.catalog, read_only=True)
        try:
            # latent shards mirror the audio shards' names, so the recordings come from the same rows
            manifest = build_manifest(cat, self.s.shards_dir, [self.set], stage=self.s.stage, step=self.step,
                                      shards_read=read)
        finally:
            if cat is not None:
                cat.close()
        if self.latent_info is not None:
            manifest["latents"] = {"location": self.s.latents, "autoencoder_sha256": self.latent_info["vae_sha256"],
                                   "shards": [{"name": sh["name"], "sha256": sh["sha256"]}
                                              for sh in self.latent_info["shards"] if sh["name"] in read]}
        if self.autoencoder is not None:
            manifest["autoencoder"] = self.autoencoder
        manifest["training"] = {k: v for k, v in asdict(self.s).items() if k not in ("catalog", "signing_key_file")}
        manifest["training"]["batch_size"] = self.batch_size
        state.update(step=self.step, data_position={str(k): v for k, v in sorted(position.items())},
                     data_streams=self.stream.cfg.streams, shards_read=sorted(read))
        return save_checkpoint(self.out, self.step, weights, state, manifest, signing_key=self.signing_key)

    def finish(self) -> None:
        """Plot, then leave the process group together: a rank that exits while a peer is still
        in a collective makes gloo abort that peer."""
        self.plot()
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()

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


def _scaler(s: TrainSettings, device) -> torch.amp.GradScaler:
    """fp16 needs loss scaling; for fp32 and bf16 the scaler is a pass-through."""
    return torch.amp.GradScaler(device.type, enabled=s.precision == "fp16")


def _optimizer_step(scaler, opt, sched, params, max_norm: float) -> None:
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    sched.step()


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
        from safetensors.torch import load_file
        ae.load_state_dict(load_file(s.vae_checkpoint))
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
    _restore(run.state, resumable)
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
        from safetensors.torch import load_file
        ae.load_state_dict(load_file(s.vae_checkpoint))
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
    _restore(run.state, resumable)
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
