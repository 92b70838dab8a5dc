"""Training data from the WebDataset shards: a deterministic stream (local or fsspec).

Order: shards are shuffled per epoch from (seed, epoch), split across ranks and loader
workers without overlap (shard i goes to stream i mod (world * workers)), samples pass
through a seeded shuffle buffer, and each clip is randomly cropped or padded to the training
length from (seed, key, epoch). The same (seed, rank, world) always gives the same sequence,
so a resumed run replays to its saved position and continues the data order it had.
Prompts are redrawn per epoch from the stored prompt inputs (sao.prompts).
"""
from __future__ import annotations

import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import soundfile as sf
import torch

from ..prompts import PromptInputs, build_prompt


@dataclass
class StreamConfig:
    urls: list[str]
    sample_length: int
    seed: int = 0
    shuffle_buffer: int = 64
    rank: int = 0
    world_size: int = 1
    storage_options: dict = field(default_factory=dict)


def list_shards(root: str, set_: str, storage_options: dict | None = None) -> list[str]:
    import fsspec
    fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
    found = sorted(fs.glob(f"{path.rstrip('/')}/{set_}/shard-*.tar"))
    if not found:
        raise FileNotFoundError(f"no {set_} shards under {root}")
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return [p if proto in ("file", "local") else f"{proto}://{p}" for p in found]


def _read_tar(url: str, storage_options: dict) -> Iterator[tuple[str, bytes, dict]]:
    import fsspec
    with fsspec.open(url, "rb", **storage_options) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        pending: dict[str, dict] = {}
        for m in tar:
            key, _, ext = m.name.partition(".")
            pending.setdefault(key, {})[ext] = tar.extractfile(m).read()
            item = pending[key]
            if "flac" in item and "json" in item:
                del pending[key]
                yield key, item["flac"], json.loads(item["json"])


def crop_or_pad(audio: np.ndarray, length: int, rng: random.Random) -> tuple[np.ndarray, int, int]:
    """[C, N] -> [C, length]; returns (clip, offset, valid samples)."""
    n = audio.shape[1]
    if n > length:
        off = rng.randint(0, n - length)
        return audio[:, off:off + length], off, length
    out = np.zeros((audio.shape[0], length), np.float32)
    out[:, :n] = audio
    return out, 0, n


class ShardStream:
    def __init__(self, cfg: StreamConfig):
        self.cfg = cfg

    def epoch(self, epoch: int, worker: int = 0, workers: int = 1) -> Iterator[dict]:
        c = self.cfg
        order = list(c.urls)
        random.Random(f"{c.seed}:shards:{epoch}").shuffle(order)
        streams = c.world_size * workers
        mine = order[c.rank * workers + worker::streams]
        rng = random.Random(f"{c.seed}:buffer:{epoch}:{c.rank}:{worker}")
        buf: list[dict] = []
        for url in mine:
            for key, flac, meta in _read_tar(url, c.storage_options):
                buf.append({"key": key, "flac": flac, "json": meta, "url": url})
                if len(buf) >= c.shuffle_buffer:
                    yield self._decode(buf.pop(rng.randrange(len(buf))), epoch)
        while buf:
            yield self._decode(buf.pop(rng.randrange(len(buf))), epoch)

    def _decode(self, item: dict, epoch: int) -> dict:
        c = self.cfg
        audio, sr = sf.read(io.BytesIO(item["flac"]), dtype="float32", always_2d=True)
        meta = item["json"]
        valid = int(meta.get("n_valid_samples", audio.shape[0]))
        clip, off, n = crop_or_pad(audio[:valid].T, c.sample_length, random.Random(f"{c.seed}:{item['key']}:{epoch}"))
        inputs = meta.get("prompt_inputs")
        prompt = build_prompt(PromptInputs.from_dict(inputs), seed=c.seed, key=item["key"], epoch=epoch) \
            if inputs else meta.get("prompt", "")
        start = int(meta.get("offset_samples", 0)) + off
        return {"audio": torch.from_numpy(np.ascontiguousarray(clip)), "prompt": prompt,
                "seconds_start": start // sr, "seconds_total": int(meta.get("seconds_total", 0)),
                "key": item["key"], "recording_id": meta.get("recording_id"), "shard": item["url"],
                "padding_mask": torch.arange(c.sample_length) < n}

    def batches(self, batch_size: int, *, start_epoch: int = 0, skip: int = 0) -> Iterator[tuple[int, int, dict]]:
        """Endless (epoch, index, batch) stream; ``skip`` batches of ``start_epoch`` are replayed away."""
        epoch = start_epoch
        while True:
            items: list[dict] = []
            index = 0
            for sample in self.epoch(epoch):
                items.append(sample)
                if len(items) == batch_size:
                    if epoch == start_epoch and index < skip:
                        index += 1
                        items = []
                        continue
                    yield epoch, index, collate(items)
                    index += 1
                    items = []
            if index == 0 and epoch == start_epoch and skip == 0:
                raise RuntimeError("the shards hold fewer samples than one batch")
            epoch += 1
            skip = 0


def collate(items: list[dict]) -> dict:
    return {"audio": torch.stack([i["audio"] for i in items]),
            "padding_mask": torch.stack([i["padding_mask"] for i in items]),
            "meta": [{k: v for k, v in i.items() if k not in ("audio", "padding_mask")} for i in items]}
