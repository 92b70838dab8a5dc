"""Autoencoder losses (paper 4.1): a perceptually weighted multi-resolution STFT loss over the
mid/side signals plus left/right at half weight; 5 multi-scale STFT discriminators as in
EnCodec with hinge losses and feature matching; the KL term is weighted by the trainer."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def a_weighting(freqs: torch.Tensor) -> torch.Tensor:
    """IEC 61672 A-weighting as a linear gain per frequency (normalised to 1 at 1 kHz)."""
    f2 = freqs.clamp_min(1.0) ** 2
    ra = (12194 ** 2 * f2 ** 2) / ((f2 + 20.6 ** 2) * torch.sqrt((f2 + 107.7 ** 2) * (f2 + 737.9 ** 2)) * (f2 + 12194 ** 2))
    return ra / 0.7943282347242815


class MultiResolutionSTFTLoss(nn.Module):
    def __init__(self, fft_sizes=(2048, 1024, 512, 256, 128, 64, 32), sample_rate: int = 44100,
                 perceptual: bool = True):
        super().__init__()
        self.fft_sizes, self.sample_rate, self.perceptual = fft_sizes, sample_rate, perceptual

    def _one(self, x, y, n_fft):
        win = torch.hann_window(n_fft, device=x.device)
        X = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, n_fft // 4, window=win, return_complex=True).abs()
        Y = torch.stft(y.reshape(-1, y.shape[-1]), n_fft, n_fft // 4, window=win, return_complex=True).abs()
        if self.perceptual:
            w = a_weighting(torch.linspace(0, self.sample_rate / 2, X.shape[-2], device=x.device))[:, None]
            X, Y = X * w, Y * w
        # bounded spectral convergence: the side channel of mono material is exactly zero, where
        # the textbook ||Y - X|| / ||Y|| explodes. Per item, then averaged, so the loss of a batch
        # is the mean of its items' losses (data parallel ranks then average to the global batch).
        norm = lambda z: torch.linalg.norm(z.flatten(1), dim=1)  # noqa: E731
        sc = (norm(Y - X) / (norm(Y) + norm(X) + 1e-7)).mean()
        mag = F.l1_loss(torch.log(X.clamp_min(1e-7)), torch.log(Y.clamp_min(1e-7)))
        return sc + mag

    def forward(self, x, y):
        return sum(self._one(x, y, n) for n in self.fft_sizes) / len(self.fft_sizes)


def stereo_stft_loss(stft: MultiResolutionSTFTLoss, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mid/side at full weight, left/right at half weight (recon, target: [B, 2, N])."""
    mid = lambda z: (z[:, 0] + z[:, 1]) / 2  # noqa: E731
    side = lambda z: (z[:, 0] - z[:, 1]) / 2  # noqa: E731
    return stft(mid(recon), mid(target)) + stft(side(recon), side(target)) + \
        0.5 * (stft(recon[:, 0], target[:, 0]) + stft(recon[:, 1], target[:, 1]))


class STFTDiscriminator(nn.Module):
    """One EnCodec-style discriminator on the complex STFT (real and imaginary parts as channels)."""

    def __init__(self, n_fft: int, channels: int = 32, in_channels: int = 2):
        super().__init__()
        self.n_fft = n_fft
        c = channels
        self.convs = nn.ModuleList([
            nn.utils.parametrizations.weight_norm(nn.Conv2d(2 * in_channels, c, (3, 9), padding=(1, 4))),
            *[nn.utils.parametrizations.weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(d, 1),
                                                              padding=(d, 4))) for d in (1, 2, 4)],
            nn.utils.parametrizations.weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
        ])
        self.out = nn.utils.parametrizations.weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor):
        x = x.float()          # the STFT runs in fp32 under autocast
        b, ch, n = x.shape
        win = torch.hann_window(self.n_fft, device=x.device)
        z = torch.stft(x.reshape(b * ch, n), self.n_fft, self.n_fft // 4, window=win, return_complex=True)
        z = torch.view_as_real(z).reshape(b, ch, z.shape[-2], z.shape[-1], 2)
        z = z.permute(0, 1, 4, 3, 2).reshape(b, ch * 2, z.shape[3], z.shape[2])     # [B, 2C, time, freq]
        feats = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), 0.2)
            feats.append(z)
        return self.out(z), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, fft_sizes=(2048, 1024, 512, 256, 128), channels: int = 32, in_channels: int = 2):
        super().__init__()
        self.discriminators = nn.ModuleList([STFTDiscriminator(n, channels, in_channels) for n in fft_sizes])

    def forward(self, x):
        return [d(x) for d in self.discriminators]


def discriminator_loss(real, fake) -> torch.Tensor:
    return sum(F.relu(1 - r[0]).mean() + F.relu(1 + f[0]).mean() for r, f in zip(real, fake)) / len(real)


def generator_adv_loss(fake) -> torch.Tensor:
    return sum(F.relu(1 - f[0]).mean() for f in fake) / len(fake)


def feature_matching_loss(real, fake) -> torch.Tensor:
    total, n = 0.0, 0
    for (_, rf), (_, ff) in zip(real, fake):
        for a, b in zip(rf, ff):
            a = a.detach()     # relative L1 per item, so a batch's loss is the mean of its items'
            total = total + ((b - a).abs().flatten(1).mean(1) / (a.abs().flatten(1).mean(1) + 1e-8)).mean()
            n += 1
    return total / max(n, 1)


def inverse_lr(step: int, *, warmup: float = 0.99, inv_gamma: float = 1e6, power: float = 0.5) -> float:
    """LR multiplier: exponential ramp-up, then inverse decay (stable-audio-tools' InverseLR)."""
    return (1 - warmup ** (step + 1)) * (1 + step / inv_gamma) ** -power


