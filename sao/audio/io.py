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
    return AudioInfo(str(p), int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype)


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
