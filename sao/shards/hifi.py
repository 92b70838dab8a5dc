"""The high-fidelity check of paper section 3.1: stereo, recorded at 48 kHz or more, and
verified to contain energy in high frequencies.

"Energy in high frequencies" is defined as the share of spectral power above 16 kHz,
averaged over Hann-windowed frames of the native-rate audio. Band-limited material (an
upsampled 32 kHz file, a 16 kHz low-passed MP3) has a share near 1e-7 or below; real
full-band recordings sit around 1e-4 to 1e-1. The default threshold is 1e-5 (-50 dB).
"""
from __future__ import annotations

import numpy as np

HF_CUTOFF_HZ = 16_000.0
HF_MIN_SHARE = 1e-5


def high_frequency_energy_share(x: np.ndarray, sr: int, *, cutoff_hz: float = HF_CUTOFF_HZ, n_fft: int = 4096,
                                max_frames: int = 256) -> float:
    """Share of power above ``cutoff_hz`` in ``x`` ([channels, samples] or [samples]).

    Returns 0.0 for silence or when the sample rate cannot represent the cutoff.
    At most ``max_frames`` evenly spaced frames are analysed, so long files stay cheap.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if sr / 2 <= cutoff_hz or x.size == 0:
        return 0.0
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    hop = n_fft // 2
    n_frames = 1 + (x.size - n_fft) // hop
    starts = np.linspace(0, (n_frames - 1) * hop, num=min(n_frames, max_frames)).astype(np.int64)
    frames = np.stack([x[s:s + n_fft] for s in starts]) * np.hanning(n_fft).astype(np.float32)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).sum(axis=0)
    total = float(power.sum())
    if total <= 0.0:
        return 0.0
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    return float(power[freqs > cutoff_hz].sum() / total)


def is_hifi(channels: int, sample_rate: int, hf_share: float, *, min_rate: int = 48_000,
            min_share: float = HF_MIN_SHARE) -> bool:
    """The paper's rule: stereo, >= 48 kHz, and energy above 16 kHz."""
    return channels == 2 and sample_rate >= min_rate and hf_share >= min_share
