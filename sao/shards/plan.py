"""The shard plan: a pure, deterministic function from the selected recordings and a seed
to the list of samples of both sets and their assignment to shards.

* Autoencoder set (paper 3.1): 5 s chunks; up to 3 random chunks per Freesound recording
  (one per full 5 s of audio, at least one); then extra random chunks from the high-fidelity
  subset: every FMA track, and Freesound recordings that are stereo and >= 48 kHz (their
  extra chunks are written only if the audio passes the high-frequency check). Which policy a
  recording gets is its source's (``Source.autoencoder_chunks``, ``Source.always_hifi``); its
  prompt inputs are its source's too (``Source.prompt_inputs``).
* Diffusion set (paper 4.2): consecutive windows of 2,097,152 samples at 44.1 kHz (~47.5 s,
  1024 latents); the last or only window is stored as long as it really is (the loader pads it
  and masks the padding).

Shards are filled in plan order up to an estimated size, so every shard can be written
independently (in parallel, resumably) and the same inputs always give the same shards.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..licensing import tasl
from ..licensing.table import spdx_id
from ..prompts import PromptInputs, build_prompt, prompt_rng
from ..sources import source_for

SAMPLE_RATE = 44_100
AE_CHUNK = 5 * SAMPLE_RATE
DIFFUSION_WINDOW = 2_097_152
# the sample layout (sao/shards/writer.py); in the plan hash, so a build of an older layout is never
# taken for this one
SHARD_FORMAT = "sao-shards/2"
FLAC_RATIO_ESTIMATE = 0.6          # planned bytes per sample = samples * 2 ch * 2 B * this


@dataclass(frozen=True)
class PlanConfig:
    seed: int = 0
    ae_chunk_samples: int = AE_CHUNK
    ae_max_chunks: int = 3
    hifi_extra_chunks: int = 3
    diffusion_window: int = DIFFUSION_WINDOW
    max_windows_per_recording: int = 0          # 0: every window
    target_shard_bytes: int = 256 * 1024 * 1024
    hifi_min_rate: int = 48_000


@dataclass
class Sample:
    key: str                    # "<source>-<id>-<set>-<n>": no dots (WebDataset splits keys at dots)
    set: str                    # "autoencoder" or "diffusion"
    recording_id: str
    path: str
    offset: int                 # in samples at 44.1 kHz
    length: int                 # samples in the written clip (chunk or window size)
    chunk_index: int
    hifi_extra: bool            # an extra high-fidelity chunk (needs the HF check for Freesound)
    needs_hf_check: bool
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ShardSpec:
    set: str
    index: int
    samples: list[Sample]

    @property
    def name(self) -> str:
        return f"{self.set}/shard-{self.index:06d}.tar"


def sample_key(recording_id: str, set_: str, n: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", recording_id)
    return f"{safe}-{'ae' if set_ == 'autoencoder' else 'dit'}-{n:04d}"


def prompt_inputs(rec: dict[str, Any]) -> PromptInputs:
    return source_for(rec["source"]).prompt_inputs(rec)


def _meta(rec: dict[str, Any], inputs: PromptInputs, prompt: str) -> dict[str, Any]:
    attribution = (rec.get("extra") or {}).get("attribution") or tasl(
        title=rec.get("title") or "", author=rec.get("author") or "", source_url=rec.get("page_url") or "",
        license_canonical=rec["license_canonical"], license_url=rec.get("license_url") or "")
    return {"recording_id": rec["recording_id"], "source": rec["source"], "license": spdx_id(rec["license_canonical"]),
            "license_url": rec.get("license_url") or "", "attribution": attribution,
            "prompt_inputs": inputs.to_dict(), "prompt": prompt, "admitted_by": rec.get("admitted_by") or {},
            "content_sha256": rec.get("content_sha256")}


def plan_samples(recs: list[dict[str, Any]], cfg: PlanConfig) -> list[Sample]:
    samples: list[Sample] = []
    for rec in sorted(recs, key=lambda r: r["recording_id"]):
        rid = rec["recording_id"]
        n = max(1, int(round((rec.get("duration") or 0.0) * SAMPLE_RATE)))
        src = source_for(rec["source"])
        inputs = src.prompt_inputs(rec)
        rng = prompt_rng(cfg.seed, rid, epoch=-1)          # chunk positions; prompts use their own stream
        chunk = cfg.ae_chunk_samples
        span = max(0, n - chunk)
        # autoencoder chunks
        regular = min(cfg.ae_max_chunks, max(1, n // chunk)) if src.autoencoder_chunks else 0
        hifi_candidate = src.always_hifi or (
            rec.get("channels") == 2 and (rec.get("sample_rate") or 0) >= cfg.hifi_min_rate)
        extra = cfg.hifi_extra_chunks if hifi_candidate else 0
        for i in range(regular + extra):
            key = sample_key(rid, "autoencoder", i)
            prompt = build_prompt(inputs, seed=cfg.seed, key=key)
            samples.append(Sample(key, "autoencoder", rid, rec["path"], rng.randint(0, span), chunk, i,
                                  hifi_extra=i >= regular, needs_hf_check=i >= regular and not src.always_hifi,
                                  meta=_meta(rec, inputs, prompt)))
        # diffusion windows
        w = cfg.diffusion_window
        windows = max(1, math.ceil(n / w))
        if cfg.max_windows_per_recording:
            windows = min(windows, cfg.max_windows_per_recording)
        for i in range(windows):
            key = sample_key(rid, "diffusion", i)
            prompt = build_prompt(inputs, seed=cfg.seed, key=key)
            samples.append(Sample(key, "diffusion", rid, rec["path"], i * w, w, i, hifi_extra=False,
                                  needs_hf_check=False, meta=_meta(rec, inputs, prompt)))
    return samples


def assign_shards(samples: list[Sample], cfg: PlanConfig) -> list[ShardSpec]:
    shards: list[ShardSpec] = []
    for set_ in ("autoencoder", "diffusion"):
        current: list[Sample] = []
        size = 0
        for s in (x for x in samples if x.set == set_):
            est = int(s.length * 4 * FLAC_RATIO_ESTIMATE) + 2048
            if current and size + est > cfg.target_shard_bytes:
                shards.append(ShardSpec(set_, len([x for x in shards if x.set == set_]), current))
                current, size = [], 0
            current.append(s)
            size += est
        if current:
            shards.append(ShardSpec(set_, len([x for x in shards if x.set == set_]), current))
    return shards


def plan_hash(samples: list[Sample], cfg: PlanConfig) -> str:
    h = hashlib.sha256(json.dumps([SHARD_FORMAT, asdict(cfg)], sort_keys=True).encode())
    for s in samples:
        h.update(json.dumps([s.key, s.offset, s.length, s.meta.get("content_sha256"), s.meta["prompt"],
                             s.meta["license"]], sort_keys=True).encode())
    return h.hexdigest()
