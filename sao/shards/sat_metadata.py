"""stable-audio-tools custom metadata module for sao shards (``custom_metadata_module`` in a SAT
dataset config; SAT loads this file by path and calls ``get_custom_metadata(info, audio)``).

It does what sao's own trainer does with the same shards:

* redraws the randomized metadata prompt (paper 3.2) every time it sees a sample again, from the
  sample's stored prompt inputs, through sao's one prompt builder (``sao.prompts``): the n-th time
  this process meets a key it draws that key's prompt of epoch n, so with SAT's resampled shards
  every pass over the data sees fresh prompts, reproducibly per worker;
* puts back the recording-level timing the paper conditions on: SAT's pad/crop rewrites
  ``seconds_start`` and ``seconds_total`` from the stored clip, and a diffusion sample is one
  window of a longer recording, so the clip's place in its recording (``offset_samples``,
  ``recording_n_samples``, both in the shard's JSON) gives them back. The padding mask SAT
  computes from the unpadded clip is right as it stands.

The file is sao/shards/sat_metadata.py (each local shard build also writes SAT dataset configs that
name it: ``<build>/sat/*.json``). Needs ``sao`` importable (``pip install -e /path/to/sao``); set ``SAO_PROMPT_SEED`` to change the
prompt seed (default 0, sao's own default).
"""
from __future__ import annotations

import collections
import math
import os

from sao.prompts import epoch_prompt

_SEEN: collections.Counter = collections.Counter()      # per worker process: how often each key came by
_SEED = int(os.environ.get("SAO_PROMPT_SEED", "0"))


def get_custom_metadata(info: dict, audio) -> dict:
    key = str(info.get("key") or info.get("__key__") or "")
    out: dict = {}
    if info.get("prompt_inputs"):
        epoch = _SEEN[key]
        _SEEN[key] += 1
        out["prompt"] = epoch_prompt(info, seed=_SEED, key=key, epoch=epoch)
    sr = int(info.get("sample_rate") or 44100)
    if "offset_samples" in info and "recording_n_samples" in info:
        # SAT's seconds_start counts from the clip's start (its random crop offset); add the clip's offset
        crop = int(info.get("seconds_start") or 0)
        out["seconds_start"] = math.floor(int(info["offset_samples"]) / sr) + crop
        out["seconds_total"] = math.ceil(int(info["recording_n_samples"]) / sr)
    return out
