"""Oobleck VAE (paper 2.1): 5 strided blocks of residual units with dilated convolutions and
SnakeBeta activations, weight-normalised convolutions, no final tanh, a VAE bottleneck with
64 latent channels, 2048x downsampling. Module names follow the released checkpoint's keys."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
import warnings

from torch.nn.utils import weight_norm as _weight_norm


def weight_norm(module: nn.Module) -> nn.Module:
    """Old-style weight norm (keys weight_g / weight_v, as the released checkpoint); torch marks
    it deprecated in favour of parametrizations, whose keys differ."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return _weight_norm(module)


def WNConv1d(*args, **kwargs) -> nn.Module:  # noqa: N802
    return weight_norm(nn.Conv1d(*args, **kwargs))


def WNConvTranspose1d(*args, **kwargs) -> nn.Module:  # noqa: N802
    return weight_norm(nn.ConvTranspose1d(*args, **kwargs))


class SnakeBeta(nn.Module):
    """x + 1/(exp(beta) + 1e-9) * sin^2(exp(alpha) * x), with log-scale alpha and beta per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.exp(self.alpha)[None, :, None]
        b = torch.exp(self.beta)[None, :, None]
        return x + (1.0 / (b + 1e-9)) * torch.sin(x * a) ** 2


class ResidualUnit(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, dilation: int):
        super().__init__()
        self.layers = nn.Sequential(SnakeBeta(out_ch), WNConv1d(in_ch, out_ch, 7, dilation=dilation, padding=3 * dilation),
                                    SnakeBeta(out_ch), WNConv1d(out_ch, out_ch, 1))

    def forward(self, x):
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.layers = nn.Sequential(ResidualUnit(in_ch, in_ch, 1), ResidualUnit(in_ch, in_ch, 3),
                                    ResidualUnit(in_ch, in_ch, 9), SnakeBeta(in_ch),
                                    WNConv1d(in_ch, out_ch, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))

    def forward(self, x):
        return self.layers(x)


class DecoderBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.layers = nn.Sequential(SnakeBeta(in_ch),
                                    WNConvTranspose1d(in_ch, out_ch, 2 * stride, stride=stride,
                                                      padding=math.ceil(stride / 2)),
                                    ResidualUnit(out_ch, out_ch, 1), ResidualUnit(out_ch, out_ch, 3),
                                    ResidualUnit(out_ch, out_ch, 9))

    def forward(self, x):
        return self.layers(x)


class OobleckEncoder(nn.Module):
    def __init__(self, in_channels=2, channels=128, latent_dim=128, c_mults=(1, 2, 4, 8, 16), strides=(2, 4, 4, 8, 8),
                 use_snake=True):
        super().__init__()
        c = [1, *c_mults]
        layers = [WNConv1d(in_channels, c[0] * channels, 7, padding=3)]
        for i, s in enumerate(strides):
            layers.append(EncoderBlock(c[i] * channels, c[i + 1] * channels, s))
        layers += [SnakeBeta(c[-1] * channels), WNConv1d(c[-1] * channels, latent_dim, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class OobleckDecoder(nn.Module):
    def __init__(self, out_channels=2, channels=128, latent_dim=64, c_mults=(1, 2, 4, 8, 16), strides=(2, 4, 4, 8, 8),
                 use_snake=True, final_tanh=False):
        super().__init__()
        c = [1, *c_mults]
        layers = [WNConv1d(latent_dim, c[-1] * channels, 7, padding=3)]
        for i in range(len(strides), 0, -1):
            layers.append(DecoderBlock(c[i] * channels, c[i - 1] * channels, strides[i - 1]))
        layers += [SnakeBeta(c[0] * channels), WNConv1d(c[0] * channels, out_channels, 7, padding=3, bias=False),
                   nn.Tanh() if final_tanh else nn.Identity()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class VAEBottleneck(nn.Module):
    """The first half of the encoder's channels is the mean; stdev = softplus(scale) + 1e-4."""

    def encode(self, x: torch.Tensor, *, sample: bool = True, return_kl: bool = False, generator=None,
               noise: torch.Tensor | None = None):
        """``noise``: the posterior sample's standard normal draw, given by trainers that draw it
        per sample (so that data parallel runs equal single-process ones)."""
        mean, scale = x.chunk(2, dim=1)
        std = F.softplus(scale) + 1e-4
        if sample and noise is None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + std * noise.to(mean.dtype) if sample else mean
        if return_kl:
            var = std * std
            kl = (mean * mean + var - torch.log(var) - 1).sum(1).mean()
            return z, kl
        return z

    def decode(self, z):
        return z


class AudioAutoencoder(nn.Module):
    def __init__(self, encoder: OobleckEncoder, decoder: OobleckDecoder, *, latent_dim=64, downsampling_ratio=2048,
                 io_channels=2, sample_rate=44100):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.bottleneck = VAEBottleneck()
        self.latent_dim, self.downsampling_ratio = latent_dim, downsampling_ratio
        self.io_channels, self.sample_rate = io_channels, sample_rate

    def encode(self, audio: torch.Tensor, *, sample: bool = True, return_kl: bool = False, generator=None):
        return self.bottleneck.encode(self.encoder(audio), sample=sample, return_kl=return_kl, generator=generator)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.bottleneck.decode(latents))

    def decode_chunked(self, latents: torch.Tensor, chunk: int = 128, overlap: int = 32) -> torch.Tensor:
        """Decode in overlapping latent chunks; each piece drops overlap/2 latents at interior edges
        (enough to cover the decoder's receptive field), so the result equals a full decode up to
        float rounding, at a fraction of the peak memory."""
        t = latents.shape[-1]
        if t <= chunk:
            return self.decode(latents)
        hop = chunk - overlap
        starts = list(range(0, t - chunk, hop)) + [t - chunk]
        r = self.downsampling_ratio
        out = latents.new_zeros(latents.shape[0], self.io_channels, t * r)
        half = overlap // 2
        for i, s in enumerate(starts):
            y = self.decode(latents[..., s:s + chunk])
            lo = 0 if i == 0 else half
            hi = chunk if i == len(starts) - 1 else chunk - half
            if i == len(starts) - 1 and i > 0:
                lo = max(lo, (starts[i - 1] + chunk - half) - s)
            out[..., (s + lo) * r:(s + hi) * r] = y[..., lo * r:hi * r]
        return out
