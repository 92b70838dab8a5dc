"""Weight files: the one module that reads and writes them (models, PANNs, CLAP, the trainer, latents, eval).

Reading: ``.safetensors`` through safetensors (no code can run); any other file (the legacy ``.pt``,
``.pth``, ``.ckpt`` of PANNs, LAION-CLAP and the released model) through ``torch.load`` with
``weights_only=True``, so a pickle that would build arbitrary objects is refused. A torch file's state
dict may sit in a container (``{"state_dict": ...}``, ``{"model": ...}``): ``unwrap`` names the keys
that are looked into, in order. Prefixes are stripped (``module.`` of DataParallel) or selected (a
part of a larger model). Loading into a module checks every key and shape first and names the file
and the missing, unexpected and mis-shaped keys. Writing is atomic: a temporary name beside the
destination, then ``os.replace``. ``sha256_file`` is the checksum callers record (curation decisions,
latents, eval reports)."""
from __future__ import annotations

import contextlib
import os
import pathlib
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..fsutil import atomic_path, sha256_file

__all__ = ["SAFETENSORS", "CheckpointError", "CheckpointMismatch", "load_checkpoint", "load_torch_file",
           "load_weights", "read_state_dict", "save_torch_file", "save_weights", "select_prefix", "sha256_file",
           "strip_prefix", "writing_weights"]

SAFETENSORS = ".safetensors"
SHOWN_KEYS = 5                                  # keys named per kind in a mismatch error


class CheckpointError(ValueError):
    """A weights file that is missing, cannot be read safely, or does not fit the model."""


CheckpointMismatch = CheckpointError            # the name the model factory's callers use: the same class


# --- reading ----------------------------------------------------------------------------------------------------

def load_torch_file(path: str | os.PathLike) -> Any:
    """What a torch file holds, loaded with weights_only=True (tensors, containers, numbers, strings): a
    pickle that would build any other object is refused with an error naming the file."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {p} cannot be read safely: torch's weights_only=True loader refuses it "
                              f"({exc}); convert it to a plain state dict or safetensors") from exc


def read_state_dict(path: str | os.PathLike, *, unwrap: tuple[str, ...] = ("model", "state_dict")
                    ) -> dict[str, torch.Tensor]:
    """The state dict in a ``.safetensors`` file, or in a torch file (see load_torch_file) where, for each
    key of UNWRAP in turn, a dict under that key replaces the whole (the official PANNs files hold
    ``{"model": state_dict, ...}``, LAION-CLAP's and the released model's ``{"state_dict": ...}``)."""
    p = pathlib.Path(path)
    if p.suffix == SAFETENSORS:
        if not p.is_file():
            raise CheckpointError(f"checkpoint {p} does not exist")
        from safetensors.torch import load_file
        try:
            return load_file(str(p))
        except Exception as exc:
            raise CheckpointError(f"checkpoint {p} cannot be read safely: not a valid safetensors file "
                                  f"({exc})") from exc
    obj = load_torch_file(p)
    for key in unwrap:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {p}: expected a state dict, found a {type(obj).__name__}")
    return obj


def strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Every key without PREFIX where it has it (``module.`` of a DataParallel-wrapped model); others unchanged."""
    return {k.removeprefix(prefix): v for k, v in state.items()}


def select_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The keys under PREFIX, without it (a part of a larger model, e.g. a whole model's
    ``pretransform.model.``); STATE unchanged when no key has PREFIX (a checkpoint of just that part)."""
    if not prefix or not any(k.startswith(prefix) for k in state):
        return state
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# --- loading into a module --------------------------------------------------------------------------------------

def _shape(v: Any) -> tuple | None:
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def load_weights(model: nn.Module, state: dict[str, Any], *, source: str | os.PathLike, what: str = "the model",
                 strict: bool = True, required: Callable[[str], bool] | None = None) -> tuple[list[str], list[str]]:
    """Load STATE into MODEL after checking it fits: an error names SOURCE (the file) and the missing,
    unexpected and mis-shaped keys. STRICT: the model's keys exactly, every shape equal. Not strict: the
    model's keys for which REQUIRED is true (all without it) must be there; keys the model lacks are
    ignored. Returns (model keys left as they were, ignored keys of STATE)."""
    own = model.state_dict()
    need = (lambda k: True) if strict or required is None else required
    missing = sorted(k for k in own if k not in state and need(k))
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(f"{k} {_shape(state[k])} vs {_shape(own[k])}" for k in own     # (a module's extra state: no shape)
                   if k in state and _shape(own[k]) is not None and _shape(state[k]) != _shape(own[k]))
    if missing or wrong or (strict and unexpected):
        n = SHOWN_KEYS
        raise CheckpointError(f"checkpoint {source} does not fit {what}: {len(missing)} missing (e.g. {missing[:n]}), "
                              f"{len(unexpected)} unexpected{'' if strict else ' (ignored)'} (e.g. {unexpected[:n]}), "
                              f"{len(wrong)} with other shapes (e.g. {wrong[:n]})")
    result = model.load_state_dict(state, strict=strict)
    return list(result.missing_keys), list(result.unexpected_keys)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, prefix: str = "", what: str = "the model",
                    unwrap: tuple[str, ...] = ("state_dict",)) -> None:
    """Load ``model.safetensors`` or ``model.ckpt`` ({"state_dict": ...}, weights_only) into MODEL, strictly:
    any missing or unexpected key is an error that names them. With PREFIX, a checkpoint of a larger model
    holding keys under it (e.g. a whole model's ``pretransform.model.``) gives just that part."""
    state = select_prefix(read_state_dict(path, unwrap=unwrap), prefix)
    load_weights(model, state, source=path, what=what)


# --- writing ----------------------------------------------------------------------------------------------------

def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


@contextlib.contextmanager
def writing_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], *,
                    metadata: dict[str, str] | None = None) -> Iterator[pathlib.Path]:
    """Write TENSORS as safetensors under a temporary name beside PATH and yield that name: what the block
    does with it (check it, write the files that must exist first) happens before PATH appears, which it
    does when the block ends; an error leaves neither."""
    from safetensors.torch import save_file
    with atomic_path(path) as tmp:
        save_file(_cpu(tensors), str(tmp), metadata=metadata)
        yield tmp


def save_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], *,
                 metadata: dict[str, str] | None = None) -> pathlib.Path:
    """Write TENSORS to PATH (safetensors), atomically."""
    with writing_weights(path, tensors, metadata=metadata):
        pass
    return pathlib.Path(path)


def save_torch_file(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    """Write OBJ (a training state: tensors, state dicts, numbers, strings; or a legacy ``.pth`` for tools
    that read only those) as a torch file that load_torch_file reads back, atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return pathlib.Path(path)
