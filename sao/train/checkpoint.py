"""Training checkpoints: weights (raw and EMA) in safetensors with their manifest's sha256 in the metadata,
the manifest beside them (naming the weights' tensor digest), a DSSE-signed in-toto statement
binding the two when a signing key is configured (sao.signing), and the resumable state
(optimizers, schedulers, step, data position) in a torch file loaded with weights_only=True.
Everything is written under temporary names; the weights appear under their final name last.
The files themselves are read and written by sao.models.checkpoint; this layer adds the training
manifests, signatures and ``latest.json``."""
from __future__ import annotations

import copy
import json
import logging
import pathlib
from typing import Any, Iterator

import torch

from .. import signing
from ..attribution.publish import model_card
from ..fsutil import atomic_path, atomic_write_text
from ..models.checkpoint import load_torch_file, save_torch_file, writing_weights
from .manifest import (AUTOENCODER_PREFIX, ManifestError, absolute_location, checkpoint_statement, envelope_path,
                       manifest_bytes, manifest_sha256, verify)

log = logging.getLogger(__name__)

# torch dtypes by their safetensors names, for the tensor digest of weights still in memory
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}
for _name, _st in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2")):
    if hasattr(torch, _name):
        _DTYPES[getattr(torch, _name)] = _st


def state_dict_digest(tensors: dict[str, torch.Tensor]) -> str:
    """The ``sao-tensors/1`` digest of CPU, contiguous tensors: what safetensors_digest reads back from the file."""
    def entries() -> Iterator:
        for name in sorted(tensors):
            t = tensors[name]
            if t.dtype not in _DTYPES:
                raise ValueError(f"tensor {name!r}: dtype {t.dtype} cannot be digested")
            raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
            yield name, _DTYPES[t.dtype], tuple(t.shape), t.numel() * t.element_size(), [memoryview(raw)]
    return signing.tensor_digest(entries())


def autoencoder_part(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DiT's autoencoder tensors under the names they have in the autoencoder's own checkpoint."""
    return {k[len(AUTOENCODER_PREFIX):]: v.detach().contiguous().cpu() for k, v in tensors.items()
            if k.startswith(AUTOENCODER_PREFIX)}


def autoencoder_reference(vae_checkpoint: str | pathlib.Path | None, tensors: dict[str, torch.Tensor]) -> dict:
    """The DiT manifest's ``autoencoder``: the digest of the autoencoder TENSORS it holds (as from
    autoencoder_part) and, with VAE_CHECKPOINT, that checkpoint and its manifest (path, sha256) and the
    recordings it was trained on, so the DiT's attribution covers them. The checkpoint must verify against
    its manifest and hold exactly these tensors; without one, the autoencoder is untrained (no data)."""
    digest = state_dict_digest(tensors)
    ref = {"weights": {"digest": signing.TENSOR_DIGEST, "sha256": digest}, "checkpoint": None, "manifest": None,
           "recordings": []}
    if not vae_checkpoint:                       # as train_dit reads it: no checkpoint loaded
        return ref
    try:
        checked = verify(vae_checkpoint, check_shards=False)
    except ManifestError as exc:
        raise ManifestError(f"autoencoder checkpoint: {exc} (its training data could not be attributed)") from None
    if checked["weights_sha256"] != digest:
        raise ManifestError(f"autoencoder checkpoint {vae_checkpoint}: tensors {checked['weights_sha256'][:16]}, but "
                            f"the DiT holds autoencoder {digest[:16]} (resumed from another autoencoder?)")
    man_path = pathlib.Path(checked["manifest"])
    vae = signing.strict_json(man_path.read_bytes(), man_path.name)
    return dict(ref, checkpoint=absolute_location(str(vae_checkpoint)),
                manifest={"file": absolute_location(str(man_path)), "sha256": checked["manifest_sha256"]},
                stage=vae["stage"], step=vae["step"], shards_build=vae["shards_build"], recordings=vae["recordings"],
                counts=vae["counts"], signing={k: vae["signing"].get(k) for k in ("status", "keyid")})


def _bind(manifest: dict, file_name: str, weights: str, digest: str, key) -> dict:
    """This file's manifest: the shared one plus its weights' digest, the signing status, absolute locations."""
    man = copy.deepcopy(manifest)
    man["shards_build"]["location"] = absolute_location(man["shards_build"]["location"])
    if man.get("latents"):
        man["latents"]["location"] = absolute_location(man["latents"]["location"])
    man["weights"] = {"name": weights, "file": file_name, "digest": signing.TENSOR_DIGEST, "sha256": digest}
    man["signing"] = ({"status": "signed", "algorithm": "ed25519", "keyid": signing.keyid(key.public_key()),
                       "envelope": envelope_path(file_name).name} if key is not None else {"status": "unsigned"})
    return man


def save_checkpoint(out_dir: str | pathlib.Path, step: int, weights: dict[str, dict[str, torch.Tensor]],
                    state: dict[str, Any], manifest: dict, *, signing_key=None) -> dict[str, str]:
    """Write each weights set with its own manifest (and, with SIGNING_KEY, its signed statement)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if signing_key is None:
        log.warning("checkpoint step %d is UNSIGNED: no signing key ([signing].key_file, --key-file or $%s)",
                    step, signing.ENV_KEY)
    paths = {}
    for name, sd in weights.items():
        p = out / f"step-{step:07d}-{name}.safetensors"
        tensors = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
        digest = state_dict_digest(tensors)
        # the autoencoder a DiT manifest names is the one in these weights (else verify would refuse them)
        ae = manifest.get("autoencoder")
        part = autoencoder_part(tensors)
        if (ae is None) != (not part) or (ae is not None and state_dict_digest(part) != ae["weights"]["sha256"]):
            raise RuntimeError(f"{p.name}: its autoencoder tensors ({AUTOENCODER_PREFIX}*) are not the autoencoder "
                               "the manifest names")
        man = _bind(manifest, p.name, name, digest, signing_key)
        man_path = p.with_suffix(".manifest.json")
        with writing_weights(p, tensors, metadata={"sao_manifest_sha256": manifest_sha256(man), "step": str(step),
                                                   "weights": name}) as tmp:
            # what was written is what the manifest names (both digests follow one rule: sao.signing)
            if signing.safetensors_digest(tmp)[0] != digest:
                raise RuntimeError(f"{p.name}: the written tensors differ from the digested ones")
            with atomic_path(man_path) as mt:
                mt.write_bytes(manifest_bytes(man))
            if signing_key is not None:
                signing.write_envelope(envelope_path(p), signing.sign_statement(
                    checkpoint_statement(p.name, man, man_path.name), signing_key))
            else:                                # an older run's statement must not sit beside unsigned weights
                envelope_path(p).unlink(missing_ok=True)
            # the model card a Hub upload shows: what trained these weights and under which licenses
            atomic_write_text(p.with_suffix(".card.md"), model_card(man, p.name))
        paths[name] = str(p)
    save_torch_file(out / f"step-{step:07d}-state.pt", state)
    with atomic_path(out / "latest.json") as tmp:
        tmp.write_text(json.dumps({"step": step, **paths, "state": str(out / f"step-{step:07d}-state.pt")}))
    return paths


def load_latest(out_dir: str | pathlib.Path) -> tuple[dict | None, dict | None]:
    p = pathlib.Path(out_dir) / "latest.json"
    if not p.is_file():
        return None, None
    latest = json.loads(p.read_text())
    state = load_torch_file(latest["state"])
    return latest, state
