"""sao.models.checkpoint: the one module that reads and writes weight files."""
from __future__ import annotations

import hashlib
import pathlib
import pickle
import re

import pytest
import torch
from torch import nn

from sao.models import checkpoint as ck
from sao.models.checkpoint import (CheckpointError, load_checkpoint, load_torch_file, load_weights, read_state_dict,
                                   save_torch_file, save_weights, select_prefix, sha256_file, strip_prefix,
                                   writing_weights)

REPO = pathlib.Path(__file__).resolve().parents[1]
RAN: list[str] = []


def _ran(what: str) -> None:                     # what a hostile pickle would call
    RAN.append(what)


class Hostile:
    def __reduce__(self):
        return (_ran, ("pwned",))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in Tiny().state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- (a) round trips --------------------------------------------------------------------------------------------

def test_safetensors_round_trip_is_atomic_and_keeps_metadata(tmp_path):
    sd = _state()
    p = save_weights(tmp_path / "w.safetensors", sd, metadata={"step": "3"})
    assert p.is_file() and _leftovers(tmp_path) == []
    assert _equal(read_state_dict(p), sd)
    from sao.signing import read_safetensors_header
    assert read_safetensors_header(p)[1] == {"step": "3"}
    model = Tiny()
    load_checkpoint(model, p)
    assert _equal(model.state_dict(), sd)
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_a_failed_write_leaves_no_file_under_the_final_name(tmp_path):
    dest = tmp_path / "w.safetensors"
    with pytest.raises(RuntimeError, match="check failed"):
        with writing_weights(dest, _state()) as tmp:
            assert tmp.is_file() and not dest.exists()       # written, checked here, not yet visible
            raise RuntimeError("check failed")
    assert not dest.exists() and _leftovers(tmp_path) == []
    save_weights(dest, _state(1))
    with pytest.raises(RuntimeError):
        with writing_weights(dest, _state(2)):
            raise RuntimeError("again")
    assert _equal(read_state_dict(dest), _state(1))             # the old file is untouched


def test_weights_only_torch_files_round_trip(tmp_path):
    sd = _state()
    save_torch_file(tmp_path / "plain.pt", sd)
    save_torch_file(tmp_path / "wrapped.ckpt", {"state_dict": sd, "epoch": 3})
    save_torch_file(tmp_path / "panns.pth", {"model": sd, "iteration": 0})
    assert _leftovers(tmp_path) == []
    for name in ("plain.pt", "wrapped.ckpt", "panns.pth"):
        assert _equal(read_state_dict(tmp_path / name), sd), name
    # only the containers asked for are looked into
    assert set(read_state_dict(tmp_path / "panns.pth", unwrap=("state_dict",))) == {"model", "iteration"}
    model = Tiny()
    load_checkpoint(model, tmp_path / "wrapped.ckpt")
    assert _equal(model.state_dict(), sd)
    # a training state: optimizer and numbers come back as they were
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = {"opt": opt.state_dict(), "step": 7, "data_position": {"0": [1, 2]}}
    save_torch_file(tmp_path / "state.pt", state)
    back = load_torch_file(tmp_path / "state.pt")
    assert back["step"] == 7 and back["data_position"] == {"0": [1, 2]} and back["opt"]["param_groups"]


def test_prefixes_are_stripped_or_selected(tmp_path):
    sd = {"module.a.weight": 1, "module.b.bias": 2, "c": 3}
    assert strip_prefix(sd, "module.") == {"a.weight": 1, "b.bias": 2, "c": 3}
    whole = {"pretransform.model.x": 1, "model.model.y": 2}
    assert select_prefix(whole, "pretransform.model.") == {"x": 1}
    assert select_prefix({"x": 1}, "pretransform.model.") == {"x": 1}   # a checkpoint of just that part
    model = Tiny()
    sd = _state(3)
    whole = {f"pretransform.model.{k}": v for k, v in sd.items()} | {"other.z": torch.zeros(1)}
    load_checkpoint(model, save_weights(tmp_path / "whole.safetensors", whole), prefix="pretransform.model.")
    assert _equal(model.state_dict(), sd)


# --- (b) pickles that are not weights only ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["evil.pt", "evil.pth", "evil.ckpt"])
def test_a_pickle_that_is_not_weights_only_is_refused(tmp_path, name):
    RAN.clear()
    p = tmp_path / name
    p.write_bytes(pickle.dumps({"state_dict": {"a.weight": Hostile()}}, protocol=2))
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))} cannot be read safely.*weights_only"):
        read_state_dict(p)
    torch.save({"model": Tiny()}, tmp_path / "module.pt")          # a whole module object, not a state dict
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_torch_file(p)
    assert RAN == []                                               # nothing it names was called


def test_unreadable_missing_and_non_dict_files_name_the_file(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors cannot be read safely"):
        read_state_dict(tmp_path / "bad.safetensors")
    for name in ("none.safetensors", "none.pt"):
        with pytest.raises(CheckpointError, match=f"{name} does not exist"):
            read_state_dict(tmp_path / name)
    save_torch_file(tmp_path / "list.pt", [torch.zeros(1)])
    with pytest.raises(CheckpointError, match="list.pt: expected a state dict"):
        read_state_dict(tmp_path / "list.pt")


# --- (c) keys that do not fit -----------------------------------------------------------------------------------

def test_missing_unexpected_and_mis_shaped_keys_are_named(tmp_path):
    sd = _state()
    sd.pop("b.bias")
    sd["c.weight"] = torch.zeros(1)
    p = save_weights(tmp_path / "partial.safetensors", sd)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(Tiny(), p, what="the tiny model")
    msg = str(exc.value)
    assert str(p) in msg and "does not fit the tiny model" in msg
    assert re.search(r"1 missing \(e\.g\. \['b\.bias'\]\), 1 unexpected \(e\.g\. \['c\.weight'\]\)", msg), msg
    sd = _state()
    sd["a.weight"] = torch.zeros(5, 3)
    with pytest.raises(CheckpointError, match=r"1 with other shapes \(e\.g\. \['a\.weight \(5, 3\) vs \(4, 3\)'\]"):
        load_weights(Tiny(), sd, source="shapes.pt")
    # not strict: keys the model lacks are ignored; the required ones must be there
    model = Tiny()
    before = model.state_dict()["b.weight"].clone()
    a_only = {k: v for k, v in _state(5).items() if k.startswith("a.")} | {"extra": torch.zeros(1)}
    kept, ignored = load_weights(model, a_only, source="tower.pt", strict=False, required=lambda k: k.startswith("a."))
    assert set(kept) == {"b.weight", "b.bias"} and ignored == ["extra"]
    assert torch.equal(model.state_dict()["a.weight"], _state(5)["a.weight"])
    assert torch.equal(model.state_dict()["b.weight"], before)
    a_only.pop("a.bias")
    with pytest.raises(CheckpointError, match=r"tower.pt does not fit .*1 missing \(e\.g\. \['a\.bias'\]\)"):
        load_weights(model, a_only, source="tower.pt", strict=False, required=lambda k: k.startswith("a."))


def test_the_names_callers_use_are_this_module(tmp_path):
    from sao import models
    from sao.analysis import panns
    from sao.models import factory
    assert panns.CheckpointError is factory.CheckpointMismatch is models.CheckpointMismatch is CheckpointError
    assert panns.sha256_file is sha256_file and factory.load_checkpoint is models.load_checkpoint is load_checkpoint
    p = save_weights(tmp_path / "m.safetensors", _state())
    assert _equal(panns.load_state_dict(p), _state())


# --- (d) nobody else reads or writes weight files ---------------------------------------------------------------

PATTERNS = [r"\btorch\.load\(", r"\btorch\.save\(", r"\bsafe_open\(", r"\bsave_file\(", r"\bload_file\(",
            r"safetensors\.torch\b"]


def test_only_the_checkpoint_module_reads_or_writes_weight_files():
    own = REPO / "sao" / "models" / "checkpoint.py"
    found = []
    for top in ("sao", "flows", "bench"):
        for f in sorted((REPO / top).rglob("*.py")):
            if f == own:
                continue
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if any(re.search(p, line) for p in PATTERNS):
                    found.append(f"{f.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == [], "weight files are read or written outside sao/models/checkpoint.py:\n" + "\n".join(found)
    text = own.read_text(encoding="utf-8")
    assert all(re.search(p, text) for p in PATTERNS[:2] + [r"\bsave_file\(", r"\bload_file\("])
    assert "weights_only=True" in text and ck.__all__
