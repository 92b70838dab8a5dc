"""What both training stages share: the settings, torch.distributed set-up, the per-sample random draws,
EMA, mixed precision and the optimizer step, and ``_Run``: data, resume, checkpoints and the loss log.
The stages themselves (their step modules, objectives and loops) are in sao.train.trainer."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pathlib
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..models.checkpoint import load_weights
from .checkpoint import load_latest, save_checkpoint
from .data import ShardStream, StreamConfig, list_shards, shard_name
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
    # Hyperparameters come from the model config's training section (sao.train.config); each of these,
    # when not None, overrides the config paths sao.train.config.VAE_SETTINGS / DIT_SETTINGS name
    lr: float | None = None                     # the autoencoder's (not the discriminator's) / the DiT's lr
    weight_decay: float | None = None
    warmup: float | None = None                 # InverseLR's warmup (every scheduler of the stage)
    ema_decay: float | None = None              # the EMA's beta (its cap)
    checkpoint_every: int = 50
    kl_weight: float | None = None
    adv_weight: float | None = None
    fm_weight: float | None = None
    freeze_encoder: bool = False                # vae stage 2: train the decoder on
    cfg_dropout: float | None = None
    vae_checkpoint: str | None = None           # dit: the trained autoencoder's safetensors
    t5_path: str | None = None
    catalog: str | None = None                  # for the manifest's titles, authors and attribution lines
    precision: str = "fp32"                     # fp32 | bf16 | fp16 (autocast)
    gradient_checkpointing: bool = False
    shuffle_buffer: int = 64
    disc_channels: int | None = None            # the discriminator's filters (tiny CPU runs use 8)
    data_streams: int = 0                       # global data streams (0: one per process); fixes the data order
    global_batch_size: int = 0                  # if set: batch_size = global / (processes * grad_accum)
    latents: str | None = None                  # dit: a pre-encoded latent shards folder (sao train encode-latents)
    signing_key_file: str | None = None         # ed25519 key signing each checkpoint (None: $SAO_SIGNING_KEY or unsigned)
    logger: str = "jsonl"                       # jsonl (always written) | tensorboard | wandb: where losses also go
    training: dict | None = None                # {dotted path in the training section: value}, applied last

LOGGERS = ("jsonl", "tensorboard", "wandb")


class _ExtraLogger:
    """Sends each step's losses to TensorBoard (``<out>/tensorboard``) or Weights & Biases besides
    losses.jsonl; a missing package is an error at start, not a silent loss of the run's curves."""

    def __init__(self, kind: str, out: pathlib.Path, s: "TrainSettings"):
        if kind not in LOGGERS:
            raise ValueError(f"logger {kind!r}: not one of {', '.join(LOGGERS)}")
        self.kind, self.writer = kind, None
        try:
            if kind == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
            elif kind == "wandb":
                import wandb      # its mode (online/offline) and project come from WANDB_* variables
                self.writer = wandb.init(dir=str(out), job_type=f"train-{s.stage}", resume="allow",
                                         config={k: v for k, v in asdict(s).items() if k != "signing_key_file"})
        except ImportError as e:
            raise RuntimeError(f"logger {kind!r} needs its package ({e.name}): pip install "
                               f"{'tensorboard' if kind == 'tensorboard' else 'wandb'}") from e

    def log(self, step: int, vals: dict[str, float]) -> None:
        if self.kind == "tensorboard":
            for k, v in vals.items():
                self.writer.add_scalar(f"train/{k}", v, step)
        elif self.kind == "wandb":
            self.writer.log({f"train/{k}": v for k, v in vals.items()}, step=step)

    def close(self) -> None:
        if self.writer is not None:
            (self.writer.close if self.kind == "tensorboard" else self.writer.finish)()


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
        self.extra_log = _ExtraLogger(s.logger, self.out, s) if self.rank == 0 else None
        from ..signing import load_signing_key
        self.signing_key = load_signing_key(s.signing_key_file) if self.rank == 0 else None   # a bad key fails now
        latest, self.state = load_latest(self.out)
        self.state_file = latest["state"] if latest else None
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
        self.training_config: dict | None = None        # set by the stage: its resolved training section

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
        if self.extra_log is not None:
            self.extra_log.log(self.step, vals)
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
        if self.training_config is not None:           # the checked training section the run used
            manifest["training"]["config"] = self.training_config
        state.update(step=self.step, data_position={str(k): v for k, v in sorted(position.items())},
                     data_streams=self.stream.cfg.streams, shards_read=sorted(read))
        return save_checkpoint(self.out, self.step, weights, state, manifest, signing_key=self.signing_key)

    def finish(self) -> None:
        """Plot, then leave the process group together: a rank that exits while a peer is still
        in a collective makes gloo abort that peer."""
        self.plot()
        if self.extra_log is not None:
            self.extra_log.close()
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
        # every term any step logged (the autoencoder's and the discriminator's steps alternate and log
        # different terms), one labelled panel each
        keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("step", "batch")))
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * len(keys)), squeeze=False, sharex=True,
                                 layout="constrained")       # leaves room for the title above the first panel
        for ax, k in zip(axes[:, 0], keys):
            ax.plot([r["step"] for r in rows if k in r], [r[k] for r in rows if k in r], label=k)
            ax.set_ylabel(k)
            ax.legend(loc="upper right", fontsize="small")
        axes[-1, 0].set_xlabel("step")
        fig.suptitle(f"{self.s.stage} training")
        fig.savefig(self.out / "loss.png", dpi=100)
        plt.close(fig)


def _restore(state: dict | None, objects: dict[str, Any], source: str | None = None) -> None:
    """Load models, optimizers and schedulers from a resumable state (nothing on a fresh run); a model
    that does not fit is an error naming SOURCE (the state file) and the keys."""
    if state:
        where = source or "resumable state"
        for name, obj in objects.items():
            if name not in state:
                raise ValueError(f"{where}: has no {name!r} (written by another training set-up or an earlier "
                                 "sao train?); start this run in a new --out folder")
            if isinstance(obj, nn.Module):
                load_weights(obj, state[name], source=f"{where} [{name}]", what=f"the {name}")
            else:
                try:
                    obj.load_state_dict(state[name])
                except (ValueError, KeyError, RuntimeError) as exc:
                    raise ValueError(f"{where} [{name}]: does not fit this run's {name}: {exc}") from None


def _snapshot(objects: dict[str, Any]) -> dict[str, Any]:
    return {name: obj.state_dict() for name, obj in objects.items()}


def _wrap(model: nn.Module, world: int, device, find_unused: bool = False) -> nn.Module:
    if world > 1:
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                   find_unused_parameters=find_unused)
    return model


def _scaler(s: TrainSettings, device) -> torch.amp.GradScaler:
    """fp16 needs loss scaling; for fp32 and bf16 the scaler is a pass-through."""
    return torch.amp.GradScaler(device.type, enabled=s.precision == "fp16")


def _optimizer_step(scaler, opt, sched, params, max_norm: float) -> float:
    """One optimizer step (gradients clipped to MAX_NORM only if it is > 0: SAT clips nothing by default),
    then the scheduler's; returns the learning rate the step used."""
    lr = opt.param_groups[0]["lr"]
    scaler.unscale_(opt)
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    if sched is not None:
        sched.step()
    return lr
