"""Sampling with the v-objective: k-diffusion-style VDenoiser (sigma_data = 1), a log-linear
sigma schedule (sigma_max 500 -> sigma_min 0.3), DPM-Solver++ 2M (deterministic) and 3M SDE
(eta = 1, seeded Gaussian noise), and classifier-free guidance with the cross-attention
conditioning zeroed for the unconditional half (the global timing conditioning is kept)."""
from __future__ import annotations

import math

import torch


def sigmas_loglinear(steps: int, sigma_min: float = 0.3, sigma_max: float = 500.0, device=None) -> torch.Tensor:
    s = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, device=device))
    return torch.cat([s, s.new_zeros(1)])


def sigma_to_t(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.atan() * 2 / math.pi


class CFGDenoiser:
    """denoised = x * c_skip + model(x * c_in, t) * c_out, with CFG over the cross-attention input."""

    def __init__(self, dit, cross, glob, cfg_scale: float = 7.0):
        self.dit, self.cross, self.glob, self.cfg_scale = dit, cross, glob, cfg_scale

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, 1, 1) if sigma.ndim else sigma.expand(x.shape[0]).reshape(-1, 1, 1)
        c_skip, c_out, c_in = 1 / (s ** 2 + 1), -s / (s ** 2 + 1).sqrt(), 1 / (s ** 2 + 1).sqrt()
        t = sigma_to_t(s.flatten())
        if self.cfg_scale == 1.0:
            v = self.dit(x * c_in, t, self.cross, self.glob)
        else:
            both = self.dit(torch.cat([x * c_in] * 2), torch.cat([t] * 2),
                            torch.cat([self.cross, torch.zeros_like(self.cross)]), torch.cat([self.glob] * 2))
            cond, uncond = both.chunk(2)
            v = uncond + (cond - uncond) * self.cfg_scale
        return (x * c_skip + v.float() * c_out).float()


@torch.no_grad()
def sample_dpmpp_2m(denoise, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    old = None
    t_fn = lambda s: -s.log()  # noqa: E731
    for i in range(len(sigmas) - 1):
        d = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = d
            break
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old is None:
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * d
        else:
            h_last = t - t_fn(sigmas[i - 1])
            r = h_last / h
            d_mix = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * old
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * d_mix
        old = d
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(denoise, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(3M) SDE as in k-diffusion, with seeded Gaussian increments (k-diffusion uses a
    Brownian tree; the marginals are the same)."""
    d1 = d2 = None
    h1 = h2 = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            break
        t, s = -sigmas[i].log(), -sigmas[i + 1].log()
        h = s - t
        h_eta = h * (eta + 1)
        x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
        if h2 is not None:
            r0, r1 = h1 / h, h2 / h
            d1_0 = (denoised - d1) / r0
            d1_1 = (d1 - d2) / r1
            d1_ = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2_ = (d1_0 - d1_1) / (r0 + r1)
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            phi_3 = phi_2 / h_eta - 0.5
            x = x + phi_2 * d1_ - phi_3 * d2_
        elif h1 is not None:
            r = h1 / h
            d_ = (denoised - d1) / r
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            x = x + phi_2 * d_
        if eta:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        d1, d2 = denoised, d1
        h1, h2 = h, h1
    return x


SAMPLERS = {"dpmpp-2m": sample_dpmpp_2m, "dpmpp-3m-sde": sample_dpmpp_3m_sde}


@torch.no_grad()
def generate(model, prompts: list[str], *, seconds_total: float, seconds_start: float = 0.0, steps: int = 100,
             cfg_scale: float = 7.0, sampler: str = "dpmpp-3m-sde", sigma_min: float = 0.3, sigma_max: float = 500.0,
             seed: int = 0, device=None, chunked_decode: bool = True) -> torch.Tensor:
    """Audio [B, 2, seconds_total * sr], trimmed: the model fills the rest of its window with silence."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r}: one of {', '.join(SAMPLERS)}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    g = torch.Generator(device=device).manual_seed(seed)
    batch = [{"prompt": p, "seconds_start": seconds_start, "seconds_total": seconds_total} for p in prompts]
    cross, glob = model.conditioning(batch, device)
    ae = model.pretransform.model
    n_lat = model.sample_size // ae.downsampling_ratio
    x = torch.randn(len(prompts), ae.latent_dim, n_lat, generator=g, device=device) * sigma_max
    sigmas = sigmas_loglinear(steps, sigma_min, sigma_max, device=device)
    den = CFGDenoiser(model.dit, cross, glob, cfg_scale)
    if sampler == "dpmpp-3m-sde":
        lat = sample_dpmpp_3m_sde(den, x, sigmas, generator=g)
    else:
        lat = sample_dpmpp_2m(den, x, sigmas)
    audio = ae.decode_chunked(lat) if chunked_decode else ae.decode(lat)
    return audio[..., : int(round(seconds_total * model.sample_rate))].float().cpu()
