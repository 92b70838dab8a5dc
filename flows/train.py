"""The `train` flow: the autoencoder, then (optionally) pre-encoded latent shards, then the DiT on
the trained autoencoder's EMA weights. Each stage is one task (it runs torch's own loop; use
torchrun for several processes).

    python -m flows.train --shards DIR --out DIR [--vae-steps N] [--dit-steps N] [--t5-path DIR] [--pre-encode]
"""
from __future__ import annotations

import argparse
import pathlib
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from sao import config as config_mod
from sao.signing import key_file_for
from sao.train.trainer import TrainSettings, train_dit, train_vae

from flows import runtime


@task(name="train-autoencoder", cache_policy=NO_CACHE)
def vae_task(settings: dict) -> dict[str, Any]:
    return train_vae(TrainSettings(stage="vae", **settings))


@task(name="train-dit", cache_policy=NO_CACHE)
def dit_task(settings: dict) -> dict[str, Any]:
    return train_dit(TrainSettings(stage="dit", **settings))


@task(name="encode-latents", cache_policy=NO_CACHE)
def latents_task(shards_dir: str, vae_checkpoint: str, model_name: str, out_dir: str) -> dict[str, Any]:
    from sao.train.latents import encode_latents
    return encode_latents(shards_dir, vae_checkpoint, model_config=model_name, out_dir=out_dir)


@flow(name="train")
def train(shards_dir: str, out_dir: str, vae_steps: int = 40, dit_steps: int = 60, model_name: str = "tiny",
          t5_path: str | None = None, catalog: str | None = None, batch_size: int = 4,
          disc_channels: int = 8, pre_encode: bool = False, config_path: str | None = None) -> dict[str, Any]:
    """``catalog`` (default: the config's) names the recordings' licenses in the manifests and
    receives the run summary."""
    cfg = config_mod.load(config_path)
    catalog = catalog or str(cfg.catalog_path)
    with runtime.recorded_run(config_path, "train", runtime.current_runner(), catalog=catalog) as (stages, tally):
        stages.update(_train(shards_dir, out_dir, vae_steps, dit_steps, model_name, t5_path, catalog, batch_size,
                             disc_channels, pre_encode, tally, signing_key_file=key_file_for(cfg)))
        return {k: stages[k] for k in ("vae", "latents", "dit")}


def _train(shards_dir, out_dir, vae_steps, dit_steps, model_name, t5_path, catalog, batch_size, disc_channels,
           pre_encode, tally, *, signing_key_file: str | None = None) -> dict[str, Any]:
    out = pathlib.Path(out_dir)
    # (pydantic reserves the name model_config, so the flow parameter is model_name); the config's
    # [signing].key_file signs both stages' checkpoints, as `sao train` does (None: $SAO_SIGNING_KEY or unsigned)
    common = dict(shards_dir=shards_dir, model_config=model_name, batch_size=batch_size, catalog=catalog,
                  signing_key_file=signing_key_file)
    vae = tally.result(vae_task(dict(common, out_dir=str(out / "vae"), steps=vae_steps, disc_channels=disc_channels,
                                     checkpoint_every=max(1, vae_steps)), return_state=True))
    ema = sorted((out / "vae").glob("step-*-ema.safetensors"))[-1]
    latents = tally.result(latents_task(shards_dir, str(ema), model_name, str(out / "latents"), return_state=True)
                           ) if pre_encode else None
    dit = tally.result(dit_task(dict(common, out_dir=str(out / "dit"), steps=dit_steps, t5_path=t5_path,
                                     vae_checkpoint=str(ema), checkpoint_every=max(1, dit_steps),
                                     latents=latents["out_dir"] if latents else None), return_state=True))
    return {"vae": vae, "latents": latents, "dit": dit}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vae-steps", type=int, default=40)
    ap.add_argument("--dit-steps", type=int, default=60)
    ap.add_argument("--model-config", default="tiny")
    ap.add_argument("--t5-path")
    ap.add_argument("--catalog")
    ap.add_argument("--config")
    ap.add_argument("--pre-encode", action="store_true", help="train the DiT on pre-encoded latent shards")
    a = ap.parse_args(argv)
    train(a.shards, a.out, a.vae_steps, a.dit_steps, a.model_config, a.t5_path, a.catalog, pre_encode=a.pre_encode,
          config_path=a.config)


if __name__ == "__main__":
    main()
