"""Training data from the WebDataset shards: a deterministic stream (local or fsspec).

Order. The shards of a set are dealt, per epoch, to a fixed number of *data streams*
(shard i of the epoch's seeded shuffle goes to stream i mod streams), so streams never
overlap; with fewer shards than streams, the samples are dealt instead (sample i of the
epoch's shard order to stream i mod streams), each stream reading every shard. Each stream passes its samples through a seeded shuffle buffer and randomly crops or
pads each clip from (seed, key, epoch). A global batch takes an equal slice from every stream
in stream order; under torch.distributed each rank owns a contiguous block of the streams.
So the global batch sequence depends only on (seed, streams, global batch size), not on the
number of processes: two processes with batch B reproduce one process with batch 2B, and a
run may resume on a different world size. A data position is (epoch, samples consumed) per
stream; a resumed run skips that many samples without decoding them and continues the data
order it had. Prompts are redrawn per epoch from the stored prompt inputs (sao.prompts).

Pre-encoded latent shards (``sao train encode-latents``) are read the same way: each sample
holds the autoencoder's pre-bottleneck output (mean and scale) instead of FLAC audio, cropped
in latent frames.
"""
from __future__ import annotations

import io
import json
import os
import random
import tarfile
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import soundfile as sf
import torch

from ..prompts import epoch_prompt


@dataclass
class StreamConfig:
    urls: list[str]
    sample_length: int                          # audio samples, or latent frames for latent shards
    seed: int = 0
    shuffle_buffer: int = 64
    rank: int = 0
    world_size: int = 1
    streams: int = 0                            # data streams (0: one per process)
    storage_options: dict = field(default_factory=dict)

    def __post_init__(self):
        self.streams = self.streams or self.world_size
        if self.streams % self.world_size:
            raise ValueError(f"{self.streams} data streams cannot be split evenly over {self.world_size} processes")
        if not self.urls:
            raise ValueError("no shards to read")

    @property
    def by_sample(self) -> bool:
        """Fewer shards than streams: every stream reads every shard and keeps every streams-th sample
        (so a tiny build, like the demo's one shard, still feeds any number of processes)."""
        return len(self.urls) < self.streams

    @property
    def local_streams(self) -> list[int]:
        per = self.streams // self.world_size
        return list(range(self.rank * per, (self.rank + 1) * per))


def list_shards(root: str | os.PathLike, set_: str, storage_options: dict | None = None) -> list[str]:
    """The set's shards as ``ROOT/SET/shard-N.tar``, spelled from ``root`` as given (so a shard's
    name relative to its build is ``url[len(root) + 1:]``, for local and remote builds alike)."""
    import fsspec
    root = str(root).rstrip("/")
    fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
    base = path.rstrip("/")
    found = sorted(fs.glob(f"{base}/{set_}/shard-*.tar"))
    if not found:
        raise FileNotFoundError(f"no {set_} shards under {root}")
    return [f"{root}/{p[len(base) + 1:]}" for p in found]


def shard_name(root: str | os.PathLike, url: str) -> str:
    """A shard's path relative to its build (``SET/shard-N.tar``)."""
    root = str(root).rstrip("/")
    if not url.startswith(root + "/"):
        raise ValueError(f"{url} is not under {root}")
    return url[len(root) + 1:]


def read_tar(url: str, storage_options: dict | None = None, payload: tuple[str, ...] = ("flac", "posterior.npy")
             ) -> Iterator[tuple[str, str, bytes, dict]]:
    """(key, payload extension, payload bytes, metadata) per complete sample of one shard."""
    import fsspec
    with fsspec.open(url, "rb", **(storage_options or {})) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        pending: dict[str, dict] = {}
        for m in tar:
            key, _, ext = m.name.partition(".")
            pending.setdefault(key, {})[ext] = tar.extractfile(m).read()
            item = pending[key]
            body = next((e for e in payload if e in item), None)
            if body and "json" in item:
                del pending[key]
                yield key, body, item[body], json.loads(item["json"])


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

    def raw(self, stream: int, epoch: int) -> Iterator[dict]:
        """One stream's undecoded samples for one epoch, in shuffle-buffer order."""
        c = self.cfg
        order = list(c.urls)
        random.Random(f"{c.seed}:shards:{epoch}").shuffle(order)
        rng = random.Random(f"{c.seed}:buffer:{epoch}:{stream}")
        buf: list[dict] = []
        mine = order if c.by_sample else order[stream::c.streams]
        i = -1
        for url in mine:
            for key, ext, body, meta in read_tar(url, c.storage_options):
                i += 1
                if c.by_sample and i % c.streams != stream:
                    continue
                buf.append({"key": key, "ext": ext, "body": body, "json": meta, "url": url})
                if len(buf) >= c.shuffle_buffer:
                    yield buf.pop(rng.randrange(len(buf)))
        while buf:
            yield buf.pop(rng.randrange(len(buf)))

    def epoch(self, epoch: int, stream: int | None = None) -> Iterator[dict]:
        """Decoded samples of one epoch: one stream, or every stream this rank owns, one after another."""
        for s in ([stream] if stream is not None else self.cfg.local_streams):
            for item in self.raw(s, epoch):
                yield self.decode(item, epoch)

    def decode(self, item: dict, epoch: int) -> dict:
        c = self.cfg
        meta = item["json"]
        rng = random.Random(f"{c.seed}:{item['key']}:{epoch}")
        if item["ext"] == "posterior.npy":
            lat = np.load(io.BytesIO(item["body"]), allow_pickle=False).astype(np.float32)
            valid = int(meta.get("latent_valid_frames", lat.shape[1]))
            clip, off, n = crop_or_pad(lat[:, :valid], c.sample_length, rng)
            ratio = int(meta["downsampling_ratio"])
            sr = int(meta.get("sample_rate", 44100))
            start = int(meta.get("offset_samples", 0)) + off * ratio
            out = {"latents": torch.from_numpy(np.ascontiguousarray(clip))}
        else:
            audio, sr = sf.read(io.BytesIO(item["body"]), dtype="float32", always_2d=True)
            valid = int(meta.get("n_valid_samples", audio.shape[0]))
            clip, off, n = crop_or_pad(audio[:valid].T, c.sample_length, rng)
            start = int(meta.get("offset_samples", 0)) + off
            out = {"audio": torch.from_numpy(np.ascontiguousarray(clip))}
        prompt = epoch_prompt(meta, seed=c.seed, key=item["key"], epoch=epoch)
        out.update({"prompt": prompt, "seconds_start": start // sr, "seconds_total": int(meta.get("seconds_total", 0)),
                    "key": item["key"], "recording_id": meta.get("recording_id"), "shard": item["url"],
                    "padding_mask": torch.arange(c.sample_length) < n})
        return out

    def _endless(self, stream: int, epoch: int, consumed: int, pos: dict) -> Iterator[dict]:
        """One stream forever from (epoch, consumed): skipped samples are never decoded."""
        while True:
            seen = 0
            for item in self.raw(stream, epoch):
                seen += 1
                if seen <= consumed:
                    continue
                pos[stream] = [epoch, seen]
                yield self.decode(item, epoch)
            if seen == 0:
                raise RuntimeError(f"data stream {stream} holds no samples: the set has fewer samples than "
                                   f"{self.cfg.streams} data streams")
            epoch, consumed = epoch + 1, 0

    def batches(self, batch_size: int, *, position: dict | None = None) -> Iterator[tuple[dict, dict]]:
        """Endless (position after the batch, batch) for this rank. ``batch_size`` is per rank and is
        split evenly over the rank's streams; ``position`` ({stream: [epoch, consumed]}) resumes."""
        local = self.cfg.local_streams
        if batch_size % len(local):
            raise ValueError(f"batch size {batch_size} cannot be split evenly over {len(local)} data streams")
        per = batch_size // len(local)
        position = {int(k): v for k, v in (position or {}).items()}
        pos: dict[int, list[int]] = {s: list(position.get(s, [0, 0])) for s in local}
        its = [self._endless(s, *pos[s], pos) for s in local]
        while True:
            items = [next(it) for it in its for _ in range(per)]
            yield {s: list(p) for s, p in pos.items()}, collate(items)


def collate(items: list[dict]) -> dict:
    body = "latents" if "latents" in items[0] else "audio"
    return {body: torch.stack([i[body] for i in items]),
            "padding_mask": torch.stack([i["padding_mask"] for i in items]),
            "meta": [{k: v for k, v in i.items() if k not in (body, "padding_mask")} for i in items]}
