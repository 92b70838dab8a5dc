"""Conditioners: T5 text encoder (transformers, from a local folder, 128 tokens; not part of
the checkpoint) and number conditioners for seconds_start / seconds_total."""
from __future__ import annotations

import math
import os
import pathlib

import torch
from torch import nn


class LearnedPositionalEmbedding(nn.Module):
    """cat[x, sin(2*pi*x*w), cos(2*pi*x*w)]: 1 + dim wide (sin before cos, raw x first)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x):
        x = x[:, None]
        f = x * self.weights[None, :] * 2 * math.pi
        return torch.cat([x, f.sin(), f.cos()], dim=-1)


class NumberConditioner(nn.Module):
    def __init__(self, output_dim: int, min_val: float = 0.0, max_val: float = 512.0):
        super().__init__()
        self.min_val, self.max_val = float(min_val), float(max_val)
        self.embedder = nn.Module()
        self.embedder.embedding = nn.Sequential(LearnedPositionalEmbedding(256), nn.Linear(257, output_dim))

    def forward(self, values, device) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.tensor([float(v) for v in values], device=device)
        x = (x.clamp(self.min_val, self.max_val) - self.min_val) / (self.max_val - self.min_val)
        dtype = self.embedder.embedding[1].weight.dtype
        emb = self.embedder.embedding(x.to(dtype))[:, None, :]
        return emb, torch.ones(emb.shape[0], 1, dtype=torch.bool, device=device)


class T5Conditioner(nn.Module):
    """T5 encoder from a local folder (tokenizer + weights); frozen; padding positions zeroed."""

    def __init__(self, output_dim: int, t5_model_name: str = "t5-base", max_length: int = 128,
                 local_path: str | os.PathLike | None = None):
        super().__init__()
        self.max_length, self.output_dim, self.name = max_length, output_dim, t5_model_name
        self.local_path = local_path or os.environ.get("SAO_T5_PATH")
        self.__dict__["_t5"] = None            # kept out of the state dict: not part of the checkpoint
        self.__dict__["_tok"] = None

    def load(self):
        if self._t5 is None:
            if not self.local_path or not pathlib.Path(self.local_path).is_dir():
                raise FileNotFoundError(f"T5 encoder ({self.name}) needs a local folder with its weights and tokenizer "
                                        f"([models].t5_path or $SAO_T5_PATH); got {self.local_path!r}")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoTokenizer, T5EncoderModel
            self.__dict__["_tok"] = AutoTokenizer.from_pretrained(str(self.local_path))
            model = T5EncoderModel.from_pretrained(str(self.local_path)).eval().requires_grad_(False)
            if model.config.d_model != self.output_dim:
                raise ValueError(f"T5 at {self.local_path} has d_model {model.config.d_model}, config wants "
                                 f"{self.output_dim}")
            self.__dict__["_t5"] = model
        return self._tok, self._t5

    def forward(self, texts, device) -> tuple[torch.Tensor, torch.Tensor]:
        tok, t5 = self.load()
        t5.to(device)
        enc = tok(list(texts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device).bool()
        with torch.no_grad():
            emb = t5(input_ids=ids, attention_mask=mask).last_hidden_state
        return emb * mask[..., None].to(emb.dtype), mask


class MultiConditioner(nn.Module):
    def __init__(self, conditioners: dict[str, nn.Module]):
        super().__init__()
        self.conditioners = nn.ModuleDict(conditioners)

    def forward(self, batch: list[dict], device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        for key, cond in self.conditioners.items():
            if any(key not in item for item in batch):
                raise KeyError(f"conditioning key {key!r} missing from the batch metadata")
            out[key] = cond([item[key] for item in batch], device)
        return out
