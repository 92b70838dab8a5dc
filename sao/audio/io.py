"""Decode with soundfile (bundled libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3) and resample
with soxr. Errors name the file and the reason; nothing here writes to disk."""
from __future__ import annotations

import hashlib
import os
import pathlib
from dataclasses import dataclass

import numpy as np
import soundfile as sf


class AudioDecodeError(ValueError):
    """A file could not be decoded; the message names the file and the reason."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe(path: str | os.PathLike) -> AudioInfo:
    p = pathlib.Path(path)
    if not p.is_file():
        raise AudioDecodeError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise AudioDecodeError(f"{p}: empty file (0 bytes)")
    try:
        i = sf.info(str(p))
    except Exception as exc:  # libsndfile raises RuntimeError/LibsndfileError with its own text
        raise AudioDecodeError(f"{p}: cannot decode: {exc}") from exc
    declared = wav_declared_frames(p)
    if declared is not None and declared - int(i.frames) > max(4608, 0.02 * declared):
        raise AudioDecodeError(f"{p}: truncated: the header declares {declared} frames, the file holds {i.frames}")
    return AudioInfo(str(p), int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype)


def verify(path: str | os.PathLike) -> AudioInfo:
    """``probe`` plus proof that the file decodes where it says it does: its first block and its
    last second decode to samples. A cut-short MP3 or FLAC keeps a header that announces the
    full length, so only reading its end shows the cut; reading a second costs little next to
    decoding the whole file."""
    info = probe(path)
    if info.frames <= 0:
        raise AudioDecodeError(f"{path}: no audio frames (header announces 0)")
    tail = min(info.frames, info.sample_rate)
    try:
        with sf.SoundFile(str(path)) as f:
            head = f.read(min(info.frames, 4096), dtype="float32", always_2d=True)
            f.seek(info.frames - tail)
            end = f.read(tail, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioDecodeError(f"{path}: cannot decode: {exc}") from exc
    if head.shape[0] == 0:
        raise AudioDecodeError(f"{path}: no audio frames decode")
    if not (np.isfinite(head).all() and np.isfinite(end).all()):
        raise AudioDecodeError(f"{path}: contains NaN or infinite samples")
    slack = max(4608, int(0.02 * info.frames))
    if tail - end.shape[0] > slack:
        raise AudioDecodeError(f"{path}: truncated: the last {tail} of {info.frames} announced frames do not decode "
                               f"({end.shape[0]} do)")
    return info


def wav_declared_frames(path) -> int | None:
    """Frames a RIFF/WAVE header's data chunk declares (libsndfile silently shrinks it to what the
    file holds, which hides a truncated download); None for other formats or odd headers."""
    import struct
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                ch = f.read(8)
                if len(ch) < 8:
                    return None
                cid, size = ch[:4], struct.unpack("<I", ch[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                elif cid == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size & 1), 1)
    except OSError:
        return None


def check_complete(path, read: int, announced: int) -> None:
    """A file that decodes fewer frames than its header announces was cut short (libsndfile reads
    what is there without complaint). MP3 frame counts are estimates: a couple of MP3 frames or
    2 % of slack is allowed. A file with no audio frames at all is refused too. (A WAV's own
    header is checked by ``probe``: libsndfile's frame count already hides its truncation.)"""
    if read == 0:
        raise AudioDecodeError(f"{path}: no audio frames decode" + (f" (header announces {announced})" if announced else ""))
    if announced - read > max(4608, 0.02 * announced):
        raise AudioDecodeError(f"{path}: truncated: {read} of {announced} announced frames decode")


def load(path: str | os.PathLike, *, sample_rate: int | None = None, mono: bool = False,
         start: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    """Return (audio as float32 [channels, samples], sample_rate).

    ``start``/``duration`` (seconds) read only that window, so long files need not fit in
    memory. Non-finite samples are an error, not something to pass downstream.
    """
    info = probe(path)
    a = int(round(start * info.sample_rate))
    n = -1 if duration is None else int(round(duration * info.sample_rate))
    try:
        data, sr = sf.read(str(path), start=a, frames=n, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioDecodeError(f"{path}: cannot decode: {exc}") from exc
    x = data.T
    if duration is None and a == 0:
        check_complete(path, x.shape[1], info.frames)
    if not np.isfinite(x).all():
        raise AudioDecodeError(f"{path}: contains NaN or infinite samples")
    if mono and x.shape[0] > 1:
        x = x.mean(axis=0, keepdims=True)
    if sample_rate and sample_rate != sr and x.shape[1] > 0:
        import soxr
        x = soxr.resample(x.T, sr, sample_rate, quality="HQ").T.astype(np.float32, copy=False)
        sr = sample_rate
    return np.ascontiguousarray(x), sr


def file_digests(path: str | os.PathLike, chunk: int = 1 << 20) -> tuple[str, str]:
    """(sha256, md5) of a file's bytes, streamed."""
    s, m = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            s.update(block)
            m.update(block)
    return s.hexdigest(), m.hexdigest()
