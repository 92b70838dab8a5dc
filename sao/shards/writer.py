"""Write one WebDataset shard: decode each planned clip, resample to 44.1 kHz stereo with
soxr, make it clip-safe, encode FLAC, and add ``<key>.flac`` + ``<key>.json`` to a tar whose
bytes depend only on the plan (fixed member order, times and owners).

Each sample's JSON follows the conventions of the loaders people train with (stable-audio-tools'
WebDataset loader, Hugging Face ``datasets``' webdataset builder): every field is present in every
sample with one JSON type (no nulls; nested, variable-length values such as the prompt inputs and
the admitting decisions are JSON text, so a schema inferred from the first samples holds for all),
and the FLAC holds only the real audio, unpadded: a loader that pads or crops to its own window
computes the right padding mask and timing from it. ``window_samples`` is the window the plan
cut the recording into, ``offset_samples`` / ``recording_n_samples`` place the clip in its
recording (``seconds_start``, ``seconds_total`` are those, in seconds, as the paper conditions on).

The tar is built under a temporary name and appears under its final name (local rename, or
one upload for object stores) only when whole. A shard that already exists is not rebuilt:
its index rows are read back from its JSON members. Runs in worker processes: everything
it needs travels in its arguments; failures come back as data, never as a crash.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import pathlib
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf

from ..audio import AudioDecodeError, load, probe
from .hifi import HF_MIN_SHARE, high_frequency_energy_share, is_hifi
from .plan import SAMPLE_RATE, Sample, ShardSpec

log = logging.getLogger(__name__)

TAR_MTIME = 946_684_800          # fixed member time (2000-01-01): identical bytes on every rebuild


@dataclass(frozen=True)
class WriteContext:
    out_url: str
    storage_options: dict = field(default_factory=dict)
    flac_subtype: str = "PCM_16"
    hf_min_share: float = HF_MIN_SHARE
    hifi_min_rate: int = 48_000


@dataclass
class ShardResult:
    name: str
    status: str                       # "written" or "skipped"
    sha256: str
    bytes: int
    rows: list[dict[str, Any]]
    failures: dict[str, str]          # recording_id -> reason
    audio_seconds: float
    seconds: float


def filesystem(url: str, storage_options: dict | None = None):
    import fsspec
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def resample_44k(frames: np.ndarray, sr: int) -> np.ndarray:
    """[samples, channels] at ``sr`` -> the same at 44.1 kHz (soxr HQ)."""
    if sr != SAMPLE_RATE and frames.shape[0] > 0:
        import soxr
        frames = soxr.resample(frames, sr, SAMPLE_RATE, quality="HQ")
    return frames


def read_frames_to_stereo(frames: np.ndarray, sr: int, length: int | None) -> np.ndarray:
    """[samples, channels] at ``sr`` -> C-contiguous [length, 2] float32 at 44.1 kHz, zero-padded.

    Works in the frame-major layout soundfile reads and writes, so a clip is copied once.
    """
    frames = resample_44k(frames, sr)
    n = frames.shape[0] if length is None else min(length, frames.shape[0])
    out = np.zeros((n if length is None else length, 2), dtype=np.float32)
    if frames.shape[1] == 1:
        out[:n, 0] = frames[:n, 0]
        out[:n, 1] = frames[:n, 0]
    else:
        out[:n] = frames[:n, :2]      # as stable-audio-tools' Stereo(): keep the first two channels
    return out


def safe_gain(x: np.ndarray) -> float:
    """The gain that brings ``x``'s peak to 0.999 of full scale when resampling overshot it, else 1.
    A NaN or infinite sample (a broken decoder, or one fed to the resampler) makes the peak non-finite:
    AudioDecodeError. This is the shards' one finite-sample check: the peak is read anyway."""
    peak = float(max(x.max(initial=0.0), -x.min(initial=0.0))) if x.size else 0.0
    if not math.isfinite(peak):
        raise AudioDecodeError("contains NaN or infinite samples")
    return 0.999 / peak if peak > 0.999 else 1.0


def clip_safe(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Resampling can overshoot full scale; scale down instead of clipping (in place)."""
    g = safe_gain(x)
    if g != 1.0:
        x *= g
    return x, g


PCM16_SCALE = 32768.0          # libsndfile (1.2) writes float as 16-bit rint(x * 0x8000), clipped


def stereo_pcm16(frames: np.ndarray, length: int) -> tuple[np.ndarray, float]:
    """[samples, channels] float32 at 44.1 kHz -> ([length, 2] int16, gain): exactly
    what libsndfile writes as PCM_16 from ``clip_safe(read_frames_to_stereo(frames, 44100, length))``
    (rint(x * 32768)), without the padded float copy. The peak (so the gain) is read off the real samples only, and only they are converted:
    the padding is zeros in int16 already. After clip_safe every sample is within 0.999 of full
    scale, so the conversion needs no clipping."""
    n = min(length, frames.shape[0])
    src = frames[:n, :1] if frames.shape[1] == 1 else frames[:n, :2]
    gain = safe_gain(src)
    y = np.multiply(src, gain, dtype=np.float32) if gain != 1.0 else src
    y = np.multiply(y, PCM16_SCALE, dtype=np.float32)
    out = np.empty((length, 2), dtype=np.int16) if n == length else np.zeros((length, 2), dtype=np.int16)
    if src.shape[1] == 1:
        np.rint(y[:, 0], out=out[:n, 0], casting="unsafe")
        out[:n, 1] = out[:n, 0]
    else:
        np.rint(y, out=out[:n], casting="unsafe")
    return out, gain


def encode_flac(x: np.ndarray, subtype: str) -> bytes:
    """[samples, 2] float32 (or int16 samples, as stereo_pcm16 gives them) -> FLAC bytes at 44.1 kHz."""
    buf = io.BytesIO()
    sf.write(buf, x, SAMPLE_RATE, format="FLAC", subtype=subtype)
    return buf.getvalue()


def read_window(path: str, sr: int, start: int, frames: int) -> np.ndarray:
    """Read ``frames`` native frames from ``start``; decode errors are AudioDecodeError. Non-finite
    samples are found where the clip's peak is taken (safe_gain), after resampling."""
    try:
        with sf.SoundFile(path) as f:
            if start:
                f.seek(min(start, f.frames))
            data = f.read(frames, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile's own error types
        raise AudioDecodeError(f"{path}: cannot decode: {exc}") from exc
    return data


def read_clip_frames(s: Sample, info, total_44k: int) -> tuple[np.ndarray, int, int]:
    """Return (the clip's frames at 44.1 kHz in the file's channels, unpadded (at least ``valid``,
    perhaps a few more), offset actually used, valid samples)."""
    offset = s.offset
    if s.set == "autoencoder" and offset + s.length > total_44k:
        offset = max(0, total_44k - s.length)          # the stored file can be shorter than the metadata
    sr = info.sample_rate
    start = int(round(offset * sr / SAMPLE_RATE))
    frames = int(math.ceil(s.length * sr / SAMPLE_RATE)) + (64 if sr != SAMPLE_RATE else 0)
    data = read_window(s.path, sr, start, frames)
    # a cut-short MP3 keeps a header announcing the full length and reads as nothing past the
    # cut: that window must fail, not enter the shards as padded silence
    expected = max(0, min(frames, info.frames - start))
    if expected - data.shape[0] > max(4608, int(0.02 * info.frames)):
        raise AudioDecodeError(f"{s.path}: truncated: {data.shape[0]} of {expected} frames decode at frame {start} "
                               f"(the header announces {info.frames})")
    valid = min(s.length, int(round(data.shape[0] * SAMPLE_RATE / sr)))
    return resample_44k(data, sr), offset, valid


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = len(data), TAR_MTIME, 0o644, 0, 0, "", ""
    tar.addfile(ti, io.BytesIO(data))


def _rows_from_existing(fs, path: str) -> tuple[str, int, list[dict[str, Any]], float]:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        data = f.read()
    h.update(data)
    rows, seconds = [], 0.0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar.getmembers():
            if m.name.endswith(".json"):
                meta = json.loads(tar.extractfile(m).read())
                rows.append(_row(meta))
                seconds += meta["n_samples"] / SAMPLE_RATE
    return h.hexdigest(), len(data), rows, seconds


INDEX_FIELDS = ("key", "set", "recording_id", "source", "license", "chunk_index", "offset_samples", "n_samples",
                "n_valid_samples", "window_samples", "recording_n_samples", "seconds_start", "seconds_total", "hifi",
                "hf_checked", "hf_share", "prompt", "admitted_by")


def _row(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in INDEX_FIELDS}


# a sample's attribution: always these keys, all text (Freesound's own line and a remix's sources are
# empty where a recording has none), so every sample has the one struct type a schema infers
ATTRIBUTION_FIELDS = ("title", "author", "source_url", "license", "license_name", "license_url", "freesound_line")


def shard_attribution(attribution: dict[str, Any]) -> dict[str, str]:
    out = {k: str(attribution.get(k) or "") for k in ATTRIBUTION_FIELDS}
    out["remix_sources"] = json.dumps([str(x) for x in attribution.get("sources") or []])
    return out


def sample_meta(s: Sample, *, offset: int, valid: int, total: int, hifi: bool, hf_share: float | None, gain: float,
                info) -> dict[str, Any]:
    """A sample's JSON member: every field always present, each with one JSON type (see the module doc)."""
    meta = dict(s.meta)
    meta.pop("content_sha256", None)
    meta.update(key=s.key, set=s.set, chunk_index=s.chunk_index, offset_samples=offset,
                n_samples=valid, n_valid_samples=valid, window_samples=s.length, recording_n_samples=total,
                sample_rate=SAMPLE_RATE, channels=2,
                seconds_start=math.floor(offset / SAMPLE_RATE), seconds_total=math.ceil(total / SAMPLE_RATE),
                text=meta["prompt"], hifi=bool(hifi), hf_checked=hf_share is not None,
                hf_share=float(hf_share if hf_share is not None else 0.0), gain=float(gain),
                source_sample_rate=int(info.sample_rate), source_channels=int(info.channels),
                attribution=shard_attribution(meta["attribution"]),
                prompt_inputs=json.dumps(meta["prompt_inputs"], sort_keys=True, ensure_ascii=False),
                admitted_by=json.dumps(meta["admitted_by"], sort_keys=True))
    return meta


def write_shard(spec: ShardSpec, ctx: WriteContext) -> ShardResult:
    t0 = time.perf_counter()
    fs, root = filesystem(ctx.out_url, ctx.storage_options)
    final = f"{root.rstrip('/')}/{spec.name}"
    if fs.exists(final):
        sha, size, rows, secs = _rows_from_existing(fs, final)
        return ShardResult(spec.name, "skipped", sha, size, rows, {}, secs, time.perf_counter() - t0)

    failures: dict[str, str] = {}
    infos: dict[str, Any] = {}
    hf: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    audio_seconds = 0.0
    if is_local(fs):
        tmp_dir = pathlib.Path(root) / ".tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp_dir = pathlib.Path(tempfile.gettempdir())
    fd, tmp = tempfile.mkstemp(prefix=f"{spec.set}-{spec.index:06d}.", suffix=".tar.part", dir=tmp_dir)
    os.close(fd)
    try:
        # one read and write per member (tarfile copies in 16 KiB pieces by default)
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT, copybufsize=8 << 20) as tar:
            for s in spec.samples:
                rid = s.recording_id
                if rid in failures:
                    continue
                try:
                    if rid not in infos:
                        infos[rid] = probe(s.path)
                    info = infos[rid]
                    if info.frames == 0:
                        raise AudioDecodeError(f"{s.path}: decoded to 0 samples")
                    total = int(round(info.frames * SAMPLE_RATE / info.sample_rate))
                    if s.set == "diffusion" and s.offset >= total and s.chunk_index > 0:
                        continue                               # the stored file is shorter than planned
                    if s.needs_hf_check and rid not in hf:
                        mid = max(0.0, info.duration / 2 - 15.0)
                        x_native, sr_native = load(s.path, start=mid, duration=30.0)
                        hf[rid] = high_frequency_energy_share(x_native, sr_native)
                    hifi = False
                    if s.hifi_extra:
                        hifi = True if not s.needs_hf_check else is_hifi(
                            2, ctx.hifi_min_rate, hf[rid], min_share=ctx.hf_min_share)
                        if not hifi:
                            continue                           # not full-band: no extra chunks
                    frames, offset, valid = read_clip_frames(s, info, total)
                    if valid <= 0:
                        raise AudioDecodeError(f"{s.path}: no samples decode at sample {offset}")
                    # the real samples only: loaders pad to their own window and mask what they padded
                    if ctx.flac_subtype == "PCM_16":    # the usual case: no float copy
                        pcm, gain = stereo_pcm16(frames, valid)
                    else:
                        pcm, gain = clip_safe(read_frames_to_stereo(frames, SAMPLE_RATE, valid))
                except AudioDecodeError as exc:
                    failures[rid] = f"audio-corrupt: {exc}" if s.path in str(exc) else f"audio-corrupt: {s.path}: {exc}"
                    continue
                flac = encode_flac(pcm, ctx.flac_subtype)
                meta = sample_meta(s, offset=offset, valid=valid, total=total, hifi=hifi, hf_share=hf.get(rid),
                                   gain=gain, info=info)
                _add(tar, f"{s.key}.flac", flac)
                _add(tar, f"{s.key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode())
                rows.append(_row(meta))
                audio_seconds += valid / SAMPLE_RATE
        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        size = os.path.getsize(tmp)
        if is_local(fs):
            pathlib.Path(final).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        else:
            fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(tmp, final)                     # one upload: the object appears only when complete
            os.unlink(tmp)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    secs = time.perf_counter() - t0
    log.info("shard %s: %d sample(s), %.1f s of audio, %.2f MB in %.1f s%s", spec.name, len(rows), audio_seconds,
             size / 1e6, secs, f"; {len(failures)} recording(s) did not decode" if failures else "")
    return ShardResult(spec.name, "written", h.hexdigest(), size, rows, failures, audio_seconds, secs)
