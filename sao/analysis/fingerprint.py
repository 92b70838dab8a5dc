"""Landmark audio fingerprints (Wang, "An Industrial-Strength Audio Search Algorithm", 2003).

Spectrogram peaks ("constellation") at 8 kHz are paired into hashes (f1, f2, dt) anchored at
time t1. A query matches a reference when many of its hashes occur in the reference at one
consistent time offset. Because only the strongest local peaks are kept, a track playing
under a field recording at reduced level still leaves enough aligned peaks to be found.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FP_RATE = 8000
N_FFT = 1024
HOP = 256                     # 32 ms
PEAK_NEIGHBOURHOOD = (15, 11)  # (freq bins, frames)
PEAKS_PER_SECOND = 60
FAN_OUT = 10
MAX_DT = 48                   # frames (~1.5 s)
MAX_DF = 96                   # bins


def _to_mono_8k(x: np.ndarray, sr: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if sr != FP_RATE and x.size:
        import soxr
        x = soxr.resample(x, sr, FP_RATE, quality="HQ")
    return x


def peaks(x: np.ndarray, sr: int) -> np.ndarray:
    """[n, 2] array of (frame, bin) spectral peaks, at most PEAKS_PER_SECOND per second."""
    from scipy.ndimage import maximum_filter
    y = _to_mono_8k(x, sr)
    if y.size < N_FFT:
        return np.zeros((0, 2), np.int32)
    n = 1 + (y.size - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(y[idx] * np.hanning(N_FFT).astype(np.float32), axis=1)).T     # [bins, frames]
    logs = np.log(spec + 1e-6)
    local = maximum_filter(logs, size=PEAK_NEIGHBOURHOOD, mode="constant", cval=-np.inf)
    cand = (logs == local) & (spec > 1e-4)
    cand[:3] = False                                     # ignore DC / rumble
    f, t = np.nonzero(cand)
    if f.size == 0:
        return np.zeros((0, 2), np.int32)
    strength = logs[f, t]
    keep = min(f.size, int(PEAKS_PER_SECOND * n * HOP / FP_RATE) + 1)
    order = np.argsort(-strength)[:keep]
    pk = np.stack([t[order], f[order]], axis=1).astype(np.int32)
    return pk[np.lexsort((pk[:, 1], pk[:, 0]))]


def hashes(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash values uint32, anchor frames int32)."""
    pk = peaks(x, sr)
    hs, ts = [], []
    for i in range(len(pk)):
        t1, f1 = pk[i]
        j, taken = i + 1, 0
        while j < len(pk) and taken < FAN_OUT:
            t2, f2 = pk[j]
            dt = t2 - t1
            if dt > MAX_DT:
                break
            if 0 < dt and abs(int(f2) - int(f1)) <= MAX_DF:
                hs.append((int(f1) << 20) | (int(f2) << 8) | int(dt))
                ts.append(t1)
                taken += 1
            j += 1
    return np.asarray(hs, np.uint32), np.asarray(ts, np.int32)


@dataclass
class Match:
    reference: str
    score: int                # hashes agreeing on one offset
    offset_seconds: float     # where the reference starts relative to the query


class FingerprintIndex:
    def __init__(self):
        self.names: list[str] = []
        self._h = np.zeros(0, np.uint32)
        self._t = np.zeros(0, np.int32)
        self._r = np.zeros(0, np.int32)

    def add(self, name: str, x: np.ndarray, sr: int) -> int:
        h, t = hashes(x, sr)
        rid = len(self.names)
        self.names.append(name)
        self._h = np.concatenate([self._h, h])
        self._t = np.concatenate([self._t, t])
        self._r = np.concatenate([self._r, np.full(len(h), rid, np.int32)])
        order = np.argsort(self._h, kind="stable")
        self._h, self._t, self._r = self._h[order], self._t[order], self._r[order]
        return len(h)

    def match(self, x: np.ndarray, sr: int, *, min_score: int = 20, top: int = 3) -> list[Match]:
        qh, qt = hashes(x, sr)
        if not len(qh) or not len(self._h):
            return []
        lo = np.searchsorted(self._h, qh, "left")
        hi = np.searchsorted(self._h, qh, "right")
        refs, offs = [], []
        for i in np.flatnonzero(hi > lo):
            sl = slice(lo[i], hi[i])
            refs.append(self._r[sl])
            offs.append(self._t[sl] - qt[i])
        if not refs:
            return []
        refs, offs = np.concatenate(refs), np.concatenate(offs)
        key = refs.astype(np.int64) * 1_000_003 + (offs.astype(np.int64) + 500_000)
        uniq, counts = np.unique(key, return_counts=True)
        best: dict[int, tuple[int, int]] = {}
        for k, c in zip(uniq, counts):
            r, o = int(k // 1_000_003), int(k % 1_000_003) - 500_000
            if c > best.get(r, (0, 0))[0]:
                best[r] = (int(c), o)
        out = [Match(self.names[r], c, o * HOP / FP_RATE) for r, (c, o) in best.items() if c >= min_score]
        return sorted(out, key=lambda m: -m.score)[:top]
