"""The paper's metrics (section 5), as plain functions over arrays.

Autoencoder reconstruction (tables 3 and 4): STFT distance, MEL distance and SI-SDR "as in the
auraloss library, with its default parameters". Each is computed per recording on (channels,
samples) audio at 44.1 kHz, exactly as auraloss computes it on one item (stereo: auraloss folds
channels into its batch), and tables report the mean over recordings.
- STFT distance: auraloss.freq.MultiResolutionSTFTLoss(): FFT sizes 1024/2048/512, hops 120/240/50,
  Hann windows 600/1200/240; per resolution spectral convergence + mean |log magnitude difference|,
  averaged over the resolutions.
- MEL distance: auraloss.freq.MelSTFTLoss(sample_rate): FFT 1024, hop 256, window 1024, 128 mel
  bands (librosa's Slaney filters), spectral convergence + mean |log mel magnitude difference|.
- SI-SDR: auraloss.time.SISDRLoss() negated (zero mean, eps 1e-8), averaged over channels.

Generation (tables 1, 2 and 5), as stable-audio-metrics defines them:
- FD: Frechet distance between Gaussians fitted to reference and generated embedding sets.
- KL: per caption, KL(generated || reference) between softmax-normalised tagger logits (mean over
  10 s windows hopped by 5 s), averaged over captions.
- CLAP score: mean cosine between the text embedding of each caption and the audio embedding of
  its generation.
- Table 5's prompt subsets: captions without speech words, without connectors, without either.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
import torch

EPS = 1e-8
STFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))   # (fft, hop, window)
MEL_RESOLUTION = (1024, 256, 1024)
MEL_BANDS = 128
# paper footnotes 5 and 6 (section 6.1)
CONNECTOR_WORDS = ("and", "followed", "while", "as", "then", "with", "later", "before", "after")
SPEECH_WORDS = ("speech", "male", "female", "woman", "man", "speaking", "speaks")


def _as_tensor(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2:
        raise ValueError(f"audio must be (channels, samples), got shape {tuple(t.shape)}")
    return t


def _pair(estimate, reference) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_tensor(estimate), _as_tensor(reference)
    if x.shape != y.shape:
        raise ValueError(f"estimate {tuple(x.shape)} and reference {tuple(y.shape)} differ in shape")
    if x.shape[-1] < 2048:
        raise ValueError(f"{x.shape[-1]} samples: too short for the 2048-point STFT of the metrics")
    return x, y


def _magnitude(x: torch.Tensor, fft: int, hop: int, win: int) -> torch.Tensor:
    s = torch.stft(x, fft, hop, win, torch.hann_window(win, device=x.device), return_complex=True)
    return torch.sqrt(torch.clamp(s.real ** 2 + s.imag ** 2, min=EPS))


def _stft_term(xm: torch.Tensor, ym: torch.Tensor) -> float:
    sc = torch.linalg.norm(ym - xm) / torch.linalg.norm(ym)          # Frobenius over all channels
    log_mag = torch.mean(torch.abs(torch.log(xm) - torch.log(ym)))
    return float(sc + log_mag)


def stft_distance(estimate, reference) -> float:
    """auraloss MultiResolutionSTFTLoss() of one (channels, samples) pair. Lower is better."""
    x, y = _pair(estimate, reference)
    return sum(_stft_term(_magnitude(x, *r), _magnitude(y, *r)) for r in STFT_RESOLUTIONS) / len(STFT_RESOLUTIONS)


@lru_cache(maxsize=4)
def _mel_filters(sample_rate: int) -> torch.Tensor:
    import librosa
    return torch.tensor(librosa.filters.mel(sr=sample_rate, n_fft=MEL_RESOLUTION[0], n_mels=MEL_BANDS))


def mel_distance(estimate, reference, sample_rate: int = 44_100) -> float:
    """auraloss MelSTFTLoss(sample_rate) of one (channels, samples) pair. Lower is better."""
    x, y = _pair(estimate, reference)
    fb = _mel_filters(sample_rate)
    return _stft_term(fb @ _magnitude(x, *MEL_RESOLUTION), fb @ _magnitude(y, *MEL_RESOLUTION))


def si_sdr(estimate, reference) -> float:
    """Scale-invariant SDR in dB (auraloss SISDRLoss negated), mean over channels. Higher is better."""
    x, y = _pair(estimate, reference)
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    alpha = (x * y).sum(-1) / ((y ** 2).sum(-1) + EPS)
    target = y * alpha[:, None]
    res = x - target
    return float((10 * torch.log10((target ** 2).sum(-1) / ((res ** 2).sum(-1) + EPS) + EPS)).mean())


# -- generation --------------------------------------------------------------------------------
def gaussian(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"need at least 2 embeddings of shape (n, d), got {e.shape}")
    return e.mean(0), np.cov(e, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), with the usual offset when S1 S2 is singular."""
    from scipy import linalg
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1 @ sigma2, disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fd(reference: np.ndarray, generated: np.ndarray) -> float:
    return frechet_distance(*gaussian(reference), *gaussian(generated))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def kl_generated_vs_reference(generated_logits: np.ndarray, reference_logits: np.ndarray) -> np.ndarray:
    """Per caption KL(p_gen || p_ref) of softmax-normalised logits (stable-audio-metrics' KL_passt
    form: F.kl_div(log(p_ref + 1e-6), p_gen, reduction='sum'))."""
    p_gen, p_ref = softmax(generated_logits), softmax(reference_logits)
    if p_gen.shape != p_ref.shape:
        raise ValueError(f"generated {p_gen.shape} and reference {p_ref.shape} logits differ in shape")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p_gen > 0, p_gen * (np.log(p_gen) - np.log(p_ref + 1e-6)), 0.0)
    return terms.sum(-1)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-8)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def has_connector(prompt: str) -> bool:
    return bool(_words(prompt) & set(CONNECTOR_WORDS))


def has_speech(prompt: str) -> bool:
    return bool(_words(prompt) & set(SPEECH_WORDS))


def table5_subsets(prompts: Sequence[str]) -> dict[str, list[int]]:
    """Indices of the prompts in each of paper table 5's rows."""
    idx = range(len(prompts))
    return {"all": list(idx),
            "no speech prompts": [i for i in idx if not has_speech(prompts[i])],
            "no connectors prompts": [i for i in idx if not has_connector(prompts[i])],
            "no speech & connectors": [i for i in idx if not has_speech(prompts[i]) and not has_connector(prompts[i])]}


def mean(values: Iterable[float]) -> float:
    v = [float(x) for x in values]
    return float(np.mean(v)) if v else float("nan")
