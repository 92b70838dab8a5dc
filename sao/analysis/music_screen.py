"""The music screen stage (paper section 3): find music in Freesound audio with PANNs
Cnn14_DecisionLevelMax and the music rule; flagged items go to copyright review.

Audio is streamed: decoded block by block, mixed to mono, resampled to 32 kHz with a
stateful soxr stream, cut into fixed windows (10 s) and batched across recordings, so a
47-minute file never sits in memory whole. Work the rule cannot use is skipped:
a recording shorter than the rule's duration cannot be music under it (decided without the
model), and a recording stops being read as soon as its verdict cannot change.
Every decision records the model, the checkpoint sha256 (or "uncalibrated"), the threshold,
the class set and whether the duration is cumulative or contiguous.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from typing import Any, Iterator

import numpy as np
import soundfile as sf
import torch

from ..audio import AudioDecodeError
from ..audio.io import check_complete, probe
from ..catalog import Catalog, Decision
from ..log import progress
from .music_rule import MusicRule, audioset_labels, longest_run, music_rule
from .panns import MODEL_NAME, SAMPLE_RATE, LoadedModel

log = logging.getLogger(__name__)
STAGE = "music_screen"
HOP = 320


@dataclasses.dataclass(frozen=True)
class ScreenConfig:
    rule: MusicRule = MusicRule()
    classes: tuple[int, ...] = ()
    window_seconds: float = 10.0
    batch_size: int = 8
    skip_short: bool = True
    early_stop: bool = True

    def signature(self, checkpoint_sha: str | None) -> str:
        blob = json.dumps({"rule": self.rule.describe(), "classes": list(self.classes),
                           "ckpt": checkpoint_sha or "uncalibrated"}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass
class ItemState:
    rid: str
    path: str
    duration: float
    activity: list = dataclasses.field(default_factory=list)
    class_max: np.ndarray | None = None
    windows_done: int = 0
    decided: bool = False
    error: str | None = None
    content_sha256: str | None = None

    def frames(self) -> np.ndarray:
        return np.concatenate(self.activity) if self.activity else np.zeros(0, np.float32)


def stream_windows(path: str, window: int, *, short_pad: int = SAMPLE_RATE) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (window of 32 kHz mono float32 padded to ``window`` samples, valid samples).

    A file shorter than one window yields a single window padded only to whole multiples of
    ``short_pad`` samples (1 s), so short sounds do not cost a full window of compute."""
    import soxr
    probe(path)                       # empty, unreadable and truncated-WAV files fail here, named
    try:
        f = sf.SoundFile(path)
    except Exception as exc:
        raise AudioDecodeError(f"{path}: cannot decode: {exc}") from exc
    with f:
        sr = f.samplerate
        rs = soxr.ResampleStream(sr, SAMPLE_RATE, 1, dtype="float32") if sr != SAMPLE_RATE else None
        buf = np.zeros(0, np.float32)
        produced, frames_read = 0, 0
        block = max(4096, int(window * sr / SAMPLE_RATE))
        while True:
            try:
                x = f.read(block, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioDecodeError(f"{path}: cannot decode: {exc}") from exc
            last = len(x) < block
            frames_read += len(x)
            if last:
                check_complete(path, frames_read, f.frames)
            if x.size and not np.isfinite(x).all():
                raise AudioDecodeError(f"{path}: contains NaN or infinite samples")
            mono = x.mean(axis=1).astype(np.float32) if x.size else np.zeros(0, np.float32)
            if rs is not None:
                mono = rs.resample_chunk(mono, last=last)
            buf = np.concatenate([buf, mono])
            while len(buf) >= window:
                yield buf[:window], window
                produced += 1
                buf = buf[window:]
            if last:
                if len(buf):
                    size = window if produced else min(window, max(1, -(-len(buf) // short_pad)) * short_pad)
                    yield np.pad(buf, (0, size - len(buf))), len(buf)
                return


def decoded_seconds_upto(path: str, limit_seconds: float) -> float:
    """Seconds of audio that actually decode from ``path``, reading no more than ``limit_seconds``."""
    probe(path)
    try:
        with sf.SoundFile(path) as f:
            limit, got = int(limit_seconds * f.samplerate) + 1, 0
            while got < limit:
                x = f.read(min(65536, limit - got), dtype="float32", always_2d=True)
                if not len(x):
                    break
                if not np.isfinite(x).all():
                    raise AudioDecodeError(f"{path}: contains NaN or infinite samples")
                got += len(x)
            if got == 0:
                raise AudioDecodeError(f"{path}: no audio frames decode")
            return got / f.samplerate
    except AudioDecodeError:
        raise
    except Exception as exc:
        raise AudioDecodeError(f"{path}: cannot decode: {exc}") from exc


def _decided(st: ItemState, rule: MusicRule, seconds_done: float) -> bool:
    """True when the rest of the file cannot change the verdict."""
    act = st.frames() >= rule.threshold
    remaining = max(0.0, st.duration - seconds_done)
    if rule.contiguous:
        run = longest_run(act) / rule.fps
        trailing = 0
        if act.size and act[-1]:
            trailing = act.size - (np.flatnonzero(~act)[-1] + 1 if (~act).any() else 0)
        return run >= rule.min_seconds or (trailing / rule.fps + remaining) < rule.min_seconds
    got = act.sum() / rule.fps
    return got >= rule.min_seconds or got + remaining < rule.min_seconds


def screen_audio(items: list[dict[str, Any]], lm: LoadedModel, cfg: ScreenConfig
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Screen (recording_id, path, duration) items. Returns ({rid: result}, stats)."""
    window = int(cfg.window_seconds * SAMPLE_RATE)
    classes = list(cfg.classes)
    results: dict[str, dict[str, Any]] = {}
    stats = {"items": len(items), "model_seconds": 0.0, "audio_seconds": 0.0, "skipped_short": 0, "early_stops": 0,
             "wall_seconds": 0.0}
    t0 = time.perf_counter()
    states = []
    for it in items:
        rid, duration = it["recording_id"], it.get("duration")
        if duration is None or not math.isfinite(duration) or duration < 0:
            results[rid] = {"kind": "error", "content_sha256": it.get("content_sha256"),
                            "error": f"{it['path']}: no decoded duration (the decode stage has not passed it)"}
            continue
        if cfg.skip_short and duration < cfg.rule.min_seconds:
            # "short" is a verdict, so it is decided from the samples, not the header: decode up
            # to the rule's length (cheap for a short file); more audio than the header says
            # means the header lies and the file is screened like any other
            try:
                got = decoded_seconds_upto(it["path"], cfg.rule.min_seconds + 1.0)
            except AudioDecodeError as exc:
                results[rid] = {"kind": "error", "error": str(exc), "content_sha256": it.get("content_sha256")}
                continue
            if got < cfg.rule.min_seconds:
                results[rid] = {"kind": "short", "duration": got, "content_sha256": it.get("content_sha256")}
                stats["skipped_short"] += 1
                stats["audio_seconds"] += got
                continue
            duration = math.inf                        # unknown length: never stop early on "too little left"
        states.append(ItemState(rid, it["path"], duration, content_sha256=it.get("content_sha256")))

    bar = progress(total=len(states), desc="music screen", unit="file")

    def run(batch):
        x = torch.from_numpy(np.stack([w for _, w, _ in batch])).to(lm.device)
        with torch.inference_mode():
            out = lm.model(x)["framewise_output"].float().cpu().numpy()
        for (st, _, valid), fw in zip(batch, out):
            n = min(fw.shape[0], max(1, valid // HOP))
            st.activity.append(fw[:n, classes].max(axis=1))
            cm = fw[:n].max(axis=0)
            st.class_max = cm if st.class_max is None else np.maximum(st.class_max, cm)
            st.windows_done += 1
            stats["model_seconds"] += valid / SAMPLE_RATE
            if cfg.early_stop and not st.decided and _decided(st, cfg.rule, st.windows_done * cfg.window_seconds):
                st.decided = True
                stats["early_stops"] += 1

    # Round-robin over a bounded set of open files, one window each per turn, so a file's
    # verdict is known after a few windows and its remaining audio is never decoded.
    # Windows are grouped by length (short files have short windows) into batches.
    queue_ = list(states)
    active: list[tuple[ItemState, Iterator]] = []
    buckets: dict[int, list] = {}
    max_open = max(2, cfg.batch_size * 2)
    while queue_ or active:
        while queue_ and len(active) < max_open:
            st = queue_.pop(0)
            active.append((st, stream_windows(st.path, window)))
        still = []
        for st, gen in active:
            if st.decided:
                gen.close()
                bar.update(1)
                continue
            try:
                w, valid = next(gen)
            except StopIteration:
                bar.update(1)
                continue
            except AudioDecodeError as exc:
                st.error = str(exc)
                bar.update(1)
                continue
            b = buckets.setdefault(len(w), [])
            b.append((st, w, valid))
            if len(b) >= cfg.batch_size:
                run(b)
                buckets[len(w)] = []
            still.append((st, gen))
        active = still
        if not active and not queue_:
            break
        if not queue_ and len(active) < cfg.batch_size and any(buckets.values()):
            # few files left: run what is waiting rather than wait for full batches
            for k, b in list(buckets.items()):
                if b:
                    run(b)
                    buckets[k] = []
    for b in buckets.values():
        if b:
            run(b)
    bar.close()
    labels = audioset_labels()
    for st in states:
        if st.error:
            results[st.rid] = {"kind": "error", "error": st.error, "content_sha256": st.content_sha256}
            continue
        v = music_rule(st.frames(), cfg.rule)
        top = []
        if st.class_max is not None:
            order = np.argsort(-st.class_max[classes])[:3]
            top = [{"class": labels[classes[i]], "max_prob": round(float(st.class_max[classes[i]]), 4)} for i in order]
        results[st.rid] = {"kind": "screened", "verdict": v, "top_music_classes": top,
                           "stopped_early": st.decided and st.windows_done * cfg.window_seconds < st.duration,
                           "content_sha256": st.content_sha256}
        stats["audio_seconds"] += min(st.duration, st.windows_done * cfg.window_seconds)
    stats["wall_seconds"] = time.perf_counter() - t0
    return results, stats


def pending_screen(cat: Catalog, signature: str, audio_store) -> list[dict[str, Any]]:
    """Items of the screened sources (``Source.music_screen``: Freesound, a local folder) admitted
    by the license gate, with audio, not taken down, and not yet screened under this exact model +
    rule signature."""
    import pathlib

    from ..sources import names_where
    # the duration is the one the decode stage read from the file: a crawled `duration` of 5 s
    # on a 1-hour file must not let it pass as too short to be music
    rows = cat.query(
        "SELECT r.recording_id, r.content_sha256, r.audio_path, r.audio_duration AS duration "
        "FROM playable p JOIN recordings r USING (recording_id) "
        "LEFT JOIN latest_decisions m ON m.recording_id = r.recording_id AND m.stage = ? "
        "WHERE r.source IN (SELECT unnest(?::VARCHAR[])) "
        "AND (m.details IS NULL OR json_extract_string(m.details, '$.signature') IS DISTINCT FROM ? "
        "     OR json_extract_string(m.details, '$.content_sha256') IS DISTINCT FROM r.content_sha256) "
        "ORDER BY r.recording_id", [STAGE, names_where(music_screen=True), signature])
    store = pathlib.Path(audio_store)
    for r in rows:
        r["path"] = str(store / r.pop("audio_path"))
    return rows


def screen_decisions(results: dict[str, dict[str, Any]], cfg: ScreenConfig, *, checkpoint_sha256: str | None,
                     uncalibrated: bool, config_hash: str) -> tuple[list[Decision], dict[str, int]]:
    """The catalogue decisions for ``screen_audio`` results (pure: the music rule's verdicts as
    records naming the model, checkpoint checksum, threshold and rule that made them)."""
    sig = cfg.signature(checkpoint_sha256)
    rule = cfg.rule
    mode = "contiguous" if rule.contiguous else "cumulative"
    base = {"signature": sig, "rule": rule.describe(), "classes": "custom" if cfg.classes else "audioset-music",
            "n_classes": len(cfg.classes), "uncalibrated": uncalibrated}
    tag = " [UNCALIBRATED: random weights]" if uncalibrated else ""
    decisions, counts = [], {"music": 0, "not_music": 0, "too_short": 0, "errors": 0}
    for rid, res in sorted(results.items()):
        if res["kind"] == "error":
            counts["errors"] += 1
            decisions.append(Decision(rid, "decode", "reject", f"audio-corrupt: {res['error']}", config_hash=config_hash,
                                      details={"content_sha256": res.get("content_sha256")}))
            continue
        if res["kind"] == "short":
            counts["too_short"] += 1
            verdict, reason, details = "pass", (f"too-short: {res['duration']:.1f} s < {rule.min_seconds:g} s, cannot "
                                                f"meet the music rule{tag}"), {}
        else:
            v = res["verdict"]
            details = {"music_seconds": v.music_seconds, "longest_run_seconds": v.longest_run_seconds,
                       "screened_seconds": v.total_seconds, "stopped_early": res["stopped_early"],
                       "top_music_classes": res["top_music_classes"]}
            measured = v.longest_run_seconds if rule.contiguous else v.music_seconds
            if v.is_music:
                counts["music"] += 1
                verdict, reason = "flag", (f"music: {measured:.1f} s ({mode}) of music classes >= {rule.threshold:g} "
                                           f"(rule {rule.min_seconds:g} s){tag}")
            else:
                counts["not_music"] += 1
                verdict, reason = "pass", (f"not-music: {measured:.1f} s ({mode}) of music classes >= "
                                           f"{rule.threshold:g} (rule {rule.min_seconds:g} s){tag}")
        decisions.append(Decision(rid, STAGE, verdict, reason, config_hash=config_hash, model_name=MODEL_NAME,
                                  checkpoint_sha256=checkpoint_sha256, threshold=rule.threshold,
                                  uncalibrated=uncalibrated,
                                  details={**base, **details, "content_sha256": res.get("content_sha256")}))
    return decisions, counts


def screen_summary(counts: dict[str, int], n: int, cfg: ScreenConfig, *, checkpoint_sha256: str | None,
                   uncalibrated: bool, audio_seconds: float, wall_seconds: float, model_seconds: float,
                   early_stops: int) -> dict[str, Any]:
    rule = cfg.rule
    mode = "contiguous" if rule.contiguous else "cumulative"
    return {**counts, "screened": n, "uncalibrated": uncalibrated,
            "checkpoint_sha256": checkpoint_sha256 or "none (random weights)",
            "rule": f"{rule.min_seconds:g} s {mode} at threshold {rule.threshold:g}, "
                    f"{len(cfg.classes)} AudioSet music classes",
            "audio_s_per_s": round(audio_seconds / wall_seconds, 1) if wall_seconds else 0.0,
            "model_audio_seconds": round(model_seconds, 1), "early_stops": early_stops}


def run_music_screen(cat: Catalog, lm: LoadedModel, cfg: ScreenConfig, *, audio_store, config_hash: str
                     ) -> dict[str, Any]:
    items = pending_screen(cat, cfg.signature(lm.checkpoint_sha256), audio_store)
    results, stats = screen_audio(items, lm, cfg)
    decisions, counts = screen_decisions(results, cfg, checkpoint_sha256=lm.checkpoint_sha256,
                                         uncalibrated=lm.uncalibrated, config_hash=config_hash)
    cat.add_decisions(decisions)
    return screen_summary(counts, len(results), cfg, checkpoint_sha256=lm.checkpoint_sha256,
                          uncalibrated=lm.uncalibrated, audio_seconds=stats["audio_seconds"],
                          wall_seconds=stats["wall_seconds"], model_seconds=stats["model_seconds"],
                          early_stops=stats["early_stops"])
