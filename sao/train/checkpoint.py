"""Checkpoints: weights (raw and EMA) in safetensors with the manifest's sha256 in their metadata,
the manifest beside them, and the resumable state (optimizers, schedulers, step, data position)
in a torch file loaded with weights_only=True. Everything is written under temporary names."""
from __future__ import annotations

import json
import pathlib
from typing import Any

import torch

from ..fsutil import atomic_path
from .manifest import manifest_bytes, manifest_sha256


def save_checkpoint(out_dir: str | pathlib.Path, step: int, weights: dict[str, dict[str, torch.Tensor]],
                    state: dict[str, Any], manifest: dict) -> dict[str, str]:
    from safetensors.torch import save_file
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sha = manifest_sha256(manifest)
    paths = {}
    for name, sd in weights.items():
        p = out / f"step-{step:07d}-{name}.safetensors"
        with atomic_path(p.with_suffix(".manifest.json")) as tmp:
            tmp.write_bytes(manifest_bytes(manifest))
        with atomic_path(p) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(tmp),
                      metadata={"sao_manifest_sha256": sha, "step": str(step), "weights": name})
        paths[name] = str(p)
    with atomic_path(out / f"step-{step:07d}-state.pt") as tmp:
        torch.save(state, tmp)
    with atomic_path(out / "latest.json") as tmp:
        tmp.write_text(json.dumps({"step": step, **paths, "state": str(out / f"step-{step:07d}-state.pt")}))
    return paths


def load_latest(out_dir: str | pathlib.Path) -> tuple[dict | None, dict | None]:
    p = pathlib.Path(out_dir) / "latest.json"
    if not p.is_file():
        return None, None
    latest = json.loads(p.read_text())
    state = torch.load(latest["state"], map_location="cpu", weights_only=True)
    return latest, state
