"""Autoencoder losses (paper 4.1) as stable-audio-tools (SAT) computes them in
``AutoencoderTrainingWrapper.training_step`` (SAT 50049e3, its ``stable_audio_2_0_vae.json``):

- reconstruction: SAT's copy of auraloss' multi-resolution STFT loss (spectral convergence plus log
  magnitude, |X| floored at sqrt(eps) = 1e-4, the waveform A-weighted by a 101-tap FIR) on the sum and
  difference signals (weight 1/2 each) and on left and right (weight 1/2 each);
- the EnCodec multi-scale STFT discriminator as SAT configures it (window-normalised, uncentred STFT,
  stride (1, 1)), its hinge discriminator loss, the generator loss -D and plain-L1 feature matching.

Where the paper's text, or an earlier reasoned choice of this project, differs from SAT's code, it is a
named option of the config (``stereo_weighting``, ``spectral_convergence``, ``a_weighting``,
``adversarial_loss``), never the default. The schedules (InverseLR) and EMA are in sao.train.schedules."""
from __future__ import annotations

import functools
import re
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

# --- reconstruction ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def a_weighting_fir_taps(sample_rate: int, ntaps: int = 101) -> tuple[float, ...]:
    """The FIR that SAT's auraloss copy (``FIRFilter(filter_type="aw")``) filters the waveform with: the analog
    A-weighting filter of IEC/CD 1672 (poles at 20.6, 107.7, 737.9 and 12194 Hz, +1.9997 dB at 1 kHz), made
    digital by the bilinear transform, its response sampled at 512 frequencies and fitted by least squares
    with NTAPS taps (scipy's firls)."""
    import numpy as np
    import scipy.signal
    if ntaps % 2 == 0:
        raise ValueError(f"ntaps must be odd (got {ntaps})")
    f1, f2, f3, f4, gain_1k_db = 20.598997, 107.65265, 737.86223, 12194.217, 1.9997
    w = lambda f: 2 * np.pi * f  # noqa: E731
    num = [w(f4) ** 2 * 10 ** (gain_1k_db / 20), 0, 0, 0, 0]
    den = np.polymul(np.polymul([1, 2 * w(f4), w(f4) ** 2], [1, 2 * w(f1), w(f1) ** 2]),
                     np.polymul([1, w(f3)], [1, w(f2)]))
    b, a = scipy.signal.bilinear(num, den, fs=sample_rate)
    freqs, resp = scipy.signal.freqz(b, a, worN=512, fs=sample_rate)
    return tuple(float(t) for t in scipy.signal.firls(ntaps, freqs, abs(resp), fs=sample_rate).astype("float32"))


def a_weighting_curve(freqs: torch.Tensor) -> torch.Tensor:
    """IEC 61672 A-weighting as a linear gain per frequency (1 at 1 kHz): the ``a_weighting: "analytic"``
    option, which weights the magnitudes instead of filtering the waveform (no FIR ripple, exact at every
    bin; not what SAT computes)."""
    f2 = freqs.clamp_min(1.0) ** 2
    ra = (12194 ** 2 * f2 ** 2) / ((f2 + 20.6 ** 2) * torch.sqrt((f2 + 107.7 ** 2) * (f2 + 737.9 ** 2)) * (f2 + 12194 ** 2))
    return ra / 0.7943282347242815


class STFTLoss(nn.Module):
    """One resolution of SAT's ``auraloss.STFTLoss`` (the options stable_audio_2_0_vae.json uses, plus named
    alternatives). ``forward(recon, target)`` takes [B, C, N] and returns the mean over items and channels.

    ``spectral_convergence``: "sat" is ||R - T||_F / ||R||_F per item and channel, R and T the magnitudes of
    the reconstruction and the target. The denominator is the reconstruction's because SAT's AuralossLoss
    passes (target, reconstruction) to auraloss, whose denominator is its second argument. "bounded" is
    ||R - T|| / (||R|| + ||T|| + 1e-7), this project's earlier choice: at most 1, also where both are at the
    magnitude floor (the side signal of mono material)."""

    def __init__(self, fft_size: int, hop_size: int, win_length: int, *, window: str = "hann_window",
                 w_sc: float = 1.0, w_log_mag: float = 1.0, w_lin_mag: float = 0.0, eps: float = 1e-8,
                 sample_rate: int | None = None, perceptual_weighting: bool = False, a_weighting: str = "fir",
                 spectral_convergence: str = "sat"):
        super().__init__()
        if spectral_convergence not in ("sat", "bounded"):
            raise ValueError(f"spectral_convergence {spectral_convergence!r}: 'sat' or 'bounded'")
        if a_weighting not in ("fir", "analytic"):
            raise ValueError(f"a_weighting {a_weighting!r}: 'fir' or 'analytic'")
        if perceptual_weighting and sample_rate is None:
            raise ValueError("perceptual_weighting needs the sample rate")
        self.fft_size, self.hop_size, self.win_length, self.window = fft_size, hop_size, win_length, window
        self.w_sc, self.w_log_mag, self.w_lin_mag, self.eps = w_sc, w_log_mag, w_lin_mag, eps
        self.sample_rate, self.perceptual = sample_rate, perceptual_weighting
        self.a_weighting, self.sc_kind = a_weighting, spectral_convergence

    def _window(self, device) -> torch.Tensor:
        return getattr(torch, self.window)(self.win_length, device=device)

    def _magnitude(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.stft(x, self.fft_size, self.hop_size, self.win_length, self._window(x.device), return_complex=True)
        # the floor is on the power (|X|^2 >= eps), as SAT's: |X| >= 1e-4 with eps 1e-8
        return torch.sqrt(torch.clamp(z.real ** 2 + z.imag ** 2, min=self.eps))

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b, c, n = recon.shape
        recon, target = recon.reshape(b * c, 1, n), target.reshape(b * c, 1, n)
        if self.perceptual and self.a_weighting == "fir":
            taps = torch.tensor(a_weighting_fir_taps(self.sample_rate), device=recon.device)
            taps = taps.to(recon.dtype).view(1, 1, -1)
            recon, target = (F.conv1d(z, taps, padding=taps.shape[-1] // 2) for z in (recon, target))
        r, t = self._magnitude(recon.reshape(b * c, -1)), self._magnitude(target.reshape(b * c, -1))
        if self.perceptual and self.a_weighting == "analytic":
            w = a_weighting_curve(torch.linspace(0, self.sample_rate / 2, r.shape[-2], device=r.device))[:, None]
            r, t = r * w, t * w
        # the reductions in SAT's order (per-item SC broadcast against the scalar magnitude terms, then the
        # mean), so that the value is bit for bit SAT's: the log term's gradient is 1/|X| at bins near the
        # floor, where a last-bit difference in one step grows into percent-size ones a few steps on
        loss = 0.0
        if self.w_sc:
            fro = lambda z: torch.norm(z, p="fro", dim=[-1, -2])  # noqa: E731
            num = fro(r - t)
            den = fro(r) if self.sc_kind == "sat" else fro(r) + fro(t) + 1e-7
            loss = loss + self.w_sc * (num / den).unsqueeze(-1).unsqueeze(-1)
        if self.w_log_mag:
            loss = loss + self.w_log_mag * F.l1_loss(torch.log(t), torch.log(r))
        if self.w_lin_mag:
            loss = loss + self.w_lin_mag * F.l1_loss(t, r)
        return loss.mean() if torch.is_tensor(loss) else torch.tensor(loss)


class MultiResolutionSTFTLoss(nn.Module):
    """SAT's ``auraloss.MultiResolutionSTFTLoss``: the mean of one STFTLoss per resolution."""

    def __init__(self, fft_sizes: Sequence[int], hop_sizes: Sequence[int], win_lengths: Sequence[int], **kw):
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length")
        self.losses = nn.ModuleList(STFTLoss(f, h, w, **kw) for f, h, w in zip(fft_sizes, hop_sizes, win_lengths))

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(f(recon, target) for f in self.losses) / len(self.losses)


STEREO_WEIGHTINGS = ("sat", "paper")


class ReconstructionLoss(nn.Module):
    """The spectral reconstruction terms of SAT's generator loss, by name (each already weighted).

    Stereo, ``stereo_weighting="sat"`` (SAT's code): ``mrstft_loss`` = w (MR(L+R) + MR(L-R)) / 2 (its
    SumAndDifferenceSTFTLoss), ``stft_loss_left`` = w/2 MR(L), ``stft_loss_right`` = w/2 MR(R): all four
    signals at weight 1/2. ``"paper"``: the paper's text (4.1: L/R down-weighted by 0.5 relative to M/S):
    the sum and difference signals at weight 1 each, left and right at 1/2. Mono: ``mrstft_loss`` = w MR(x)."""

    def __init__(self, *, weight: float = 1.0, stereo_weighting: str = "sat", channels: int = 2, **stft):
        super().__init__()
        if stereo_weighting not in STEREO_WEIGHTINGS:
            raise ValueError(f"stereo_weighting {stereo_weighting!r}: one of {', '.join(STEREO_WEIGHTINGS)}")
        self.mr = MultiResolutionSTFTLoss(**stft)
        self.weight, self.stereo_weighting, self.channels = weight, stereo_weighting, channels

    @staticmethod
    def channels_of(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left and right as [B, 1, N] views. The trainer takes them before the discriminator sees the
        reconstruction, as SAT's training_step does: the order in which autograd sums the gradients of a
        tensor's uses follows their creation, and this loss's gradient is ill-conditioned enough near its
        magnitude floor that a last-bit difference in one step becomes a visible one a few steps on."""
        return z[:, 0:1, :], z[:, 1:2, :]

    def forward(self, recon: torch.Tensor, target: torch.Tensor, recon_lr=None) -> dict[str, torch.Tensor]:
        w = self.weight
        if self.channels != 2:
            return {"mrstft_loss": w * self.mr(recon, target)}
        left, right = recon_lr or self.channels_of(recon)
        s = lambda z: ((z[:, 0, :] + z[:, 1, :]).unsqueeze(1), (z[:, 0, :] - z[:, 1, :]).unsqueeze(1))  # noqa: E731
        (rs, rd), (ts, td) = s(recon), s(target)
        sd = self.mr(rs, ts) + self.mr(rd, td)
        return {"mrstft_loss": w * (sd / 2 if self.stereo_weighting == "sat" else sd),
                "stft_loss_left": w / 2 * self.mr(left, target[:, 0:1, :]),
                "stft_loss_right": w / 2 * self.mr(right, target[:, 1:2, :])}


def vae_sample(h: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE bottleneck's posterior sample and KL term (sao.models.autoencoder.VAEBottleneck's numbers) in
    the operation order of SAT's ``vae_sample``, so that autograd sums the encoder's gradients in SAT's
    order too (bit for bit; see ReconstructionLoss.channels_of for why that matters)."""
    mean, scale = h.chunk(2, dim=1)
    stdev = F.softplus(scale) + 1e-4
    var = stdev * stdev
    logvar = torch.log(var)
    z = noise.to(mean.dtype) * stdev + mean
    kl = (mean * mean + var - logvar - 1).sum(1).mean()
    return z, kl


# --- discriminator ----------------------------------------------------------------------------------------------


def _wn(conv: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.weight_norm(conv)


class STFTDiscriminator(nn.Module):
    """One scale of SAT's EnCodec MS-STFT discriminator (``models/encodec.py`` DiscriminatorSTFT): the complex
    STFT (uncentred; divided by the window's L2 norm when ``normalized``, as torchaudio's Spectrogram does),
    real parts of all channels then imaginary parts as input channels, [B, 2C, frames, freq]; weight-normed
    convolutions with LeakyReLU(0.2) after each (the feature maps), then a 3x3 to one channel (the logits)."""

    def __init__(self, filters: int, in_channels: int = 2, *, n_fft: int = 1024, hop_length: int = 256,
                 win_length: int = 1024, kernel_size: Sequence[int] = (3, 9), dilations: Sequence[int] = (1, 2, 4),
                 stride: Sequence[int] = (1, 1), normalized: bool = True, filters_scale: int = 1,
                 max_filters: int = 1024, negative_slope: float = 0.2):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length, self.normalized = n_fft, hop_length, win_length, normalized
        self.negative_slope = negative_slope
        k0, k1 = kernel_size
        pad = lambda k, d=(1, 1): ((k[0] - 1) * d[0] // 2, (k[1] - 1) * d[1] // 2)  # noqa: E731
        convs = [_wn(nn.Conv2d(2 * in_channels, filters, (k0, k1), padding=pad((k0, k1))))]
        in_chs = min(filters_scale * filters, max_filters)
        for i, d in enumerate(dilations):
            out_chs = min(filters_scale ** (i + 1) * filters, max_filters)
            convs.append(_wn(nn.Conv2d(in_chs, out_chs, (k0, k1), stride=tuple(stride), dilation=(d, 1),
                                       padding=pad((k0, k1), (d, 1)))))
            in_chs = out_chs
        out_chs = min(filters_scale ** (len(dilations) + 1) * filters, max_filters)
        convs.append(_wn(nn.Conv2d(in_chs, out_chs, (k0, k0), padding=pad((k0, k0)))))
        self.convs = nn.ModuleList(convs)
        self.conv_post = _wn(nn.Conv2d(out_chs, 1, (k0, k0), padding=pad((k0, k0))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = x.float()          # the STFT runs in fp32 under autocast
        b, c, n = x.shape
        win = torch.hann_window(self.win_length, device=x.device)
        z = torch.stft(x.reshape(b * c, n), self.n_fft, self.hop_length, self.win_length, win, center=False,
                       return_complex=True)
        if self.normalized:
            z = z / win.pow(2).sum().sqrt()
        z = z.reshape(b, c, *z.shape[-2:])
        z = torch.cat([z.real, z.imag], dim=1).transpose(2, 3)          # [B, 2C, frames, freq]
        fmap = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), self.negative_slope)
            fmap.append(z)
        return self.conv_post(z), fmap


class EncodecDiscriminator(nn.Module):
    """SAT's ``EncodecDiscriminator`` (the ``"encodec"`` discriminator type): one STFTDiscriminator per
    (n_fft, hop, window) and its losses. ``forward`` returns (logits per scale, feature maps per scale)."""

    def __init__(self, filters: int, in_channels: int = 2, *, n_ffts: Sequence[int], hop_lengths: Sequence[int],
                 win_lengths: Sequence[int], normalize_losses: bool = False, adversarial_loss: str = "sat", **kw):
        super().__init__()
        if not len(n_ffts) == len(hop_lengths) == len(win_lengths):
            raise ValueError("n_ffts, hop_lengths and win_lengths must have the same length")
        if adversarial_loss not in ("sat", "hinge"):
            raise ValueError(f"adversarial_loss {adversarial_loss!r}: 'sat' or 'hinge'")
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(filters, in_channels, n_fft=f, hop_length=h, win_length=w, **kw)
            for f, h, w in zip(n_ffts, hop_lengths, win_lengths))
        self.normalize_losses, self.adversarial_loss = normalize_losses, adversarial_loss

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        outs = [d(x) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]

    def discriminator_loss(self, logits_real, logits_fake) -> torch.Tensor:
        """Hinge, the mean over scales of mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
        return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(logits_real, logits_fake)) / len(logits_real)

    def generator_loss(self, logits_fake) -> torch.Tensor:
        """SAT's: the mean over scales of -mean(D(fake)). ``adversarial_loss: "hinge"``: mean(relu(1 - D(fake))),
        this project's earlier choice (no gradient once a fake scores above 1)."""
        if self.adversarial_loss == "hinge":
            return sum(F.relu(1 - f).mean() for f in logits_fake) / len(logits_fake)
        return sum(-f.mean() for f in logits_fake) / len(logits_fake)

    def feature_matching(self, feats_real, feats_fake) -> torch.Tensor:
        """SAT's: per scale, the mean over layers of mean|real - fake| (with ``normalize_losses`` divided by
        mean|real| + 1e-3, SAT's option), then the mean over scales."""
        total = 0.0
        for fr, ff in zip(feats_real, feats_fake):
            dist = [(a - b).abs().mean() / (a.abs().mean() + 1e-3) if self.normalize_losses else (a - b).abs().mean()
                    for a, b in zip(fr, ff)]
            total = total + sum(dist) / len(fr)
        return total / len(feats_real)


_SAT_DISC_KEY = re.compile(r"^discriminators\.discriminators\.(\d+)\.(convs\.\d+|conv_post)\.conv\.(bias|weight_g|weight_v)$")


def sat_discriminator_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A SAT EncodecDiscriminator state dict (old-style weight_norm: ``weight_g``/``weight_v``) in this module's
    names (``parametrizations.weight.original0``/``original1``); its STFT window buffers are dropped (this
    module makes the window), any other key is an error naming it."""
    out = {}
    part = {"bias": "bias", "weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
    for k, v in state.items():
        if k.endswith(".spec_transform.window"):
            continue
        m = _SAT_DISC_KEY.match(k)
        if not m:
            raise KeyError(f"{k}: not a key of SAT's EncodecDiscriminator")
        out[f"discriminators.{m[1]}.{m[2]}.{part[m[3]]}"] = v
    return out
