"""Diffusion transformer (paper 2.2): blocks of self-attention with rotary embeddings on half of
each head's dimensions, cross-attention to the conditioning tokens, gated (GLU/SwiGLU) feed-forward,
bias-less LayerNorm; linear maps in and out; Fourier timestep features; the timestep + timing
embedding prepended as one token. Module names follow the released checkpoint's keys."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


class FourierFeatures(nn.Module):
    """f = 2*pi*t*W^T; out = [cos f, sin f] (cos first)."""

    def __init__(self, in_features: int, out_features: int, std: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features // 2, in_features) * std)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * t @ self.weight.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


class LayerNorm(nn.Module):
    """LayerNorm with a learned gain and a fixed zero bias (a buffer, as in the checkpoint)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta, self.eps)


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, dim, 2).float() / dim))

    def forward(self, seq_len: int, device) -> torch.Tensor:
        t = torch.arange(seq_len, device=device, dtype=torch.float32)
        freqs = torch.einsum("i,j->ij", t, self.inv_freq.float())
        return torch.cat([freqs, freqs], dim=-1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary_half(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``freqs.shape[-1]`` dims of each head (here half of them); the rest pass."""
    rot = freqs.shape[-1]
    tr, tp = t[..., :rot], t[..., rot:]
    dtype = t.dtype
    tr = tr.float() * freqs.cos() + rotate_half(tr.float()) * freqs.sin()
    return torch.cat([tr.to(dtype), tp], dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, dim_heads: int = 64, dim_context: int | None = None):
        super().__init__()
        self.dim_heads = dim_heads
        self.heads = dim // dim_heads
        self.cross = dim_context is not None
        if self.cross:
            self.kv_heads = dim_context // dim_heads
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_kv = nn.Linear(dim_context, dim_context * 2, bias=False)
        else:
            self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.to_out.weight)

    def forward(self, x, context=None, rotary=None):
        b, n, _ = x.shape
        split = lambda t, h: t.view(b, t.shape[1], h, self.dim_heads).transpose(1, 2)  # noqa: E731
        if self.cross:
            q = split(self.to_q(x), self.heads)
            k, v = self.to_kv(context).chunk(2, dim=-1)
            k, v = split(k, self.kv_heads), split(v, self.kv_heads)
            if self.kv_heads != self.heads:            # grouped-query attention
                k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
                v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        else:
            q, k, v = (split(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
            if rotary is not None:
                q, k = apply_rotary_half(q, rotary), apply_rotary_half(k, rotary)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.silu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        out = nn.Linear(inner, dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.ff = nn.Sequential(GLU(dim, inner), nn.Identity(), out, nn.Identity())

    def forward(self, x):
        return self.ff(x)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, dim_heads: int, cond_dim: int):
        super().__init__()
        self.pre_norm = LayerNorm(dim)
        self.self_attn = Attention(dim, dim_heads)
        self.cross_attend_norm = LayerNorm(dim)
        self.cross_attn = Attention(dim, dim_heads, dim_context=cond_dim)
        self.ff_norm = LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, context, rotary):
        x = x + self.self_attn(self.pre_norm(x), rotary=rotary)
        x = x + self.cross_attn(self.cross_attend_norm(x), context=context)
        return x + self.ff(self.ff_norm(x))


class ContinuousTransformer(nn.Module):
    def __init__(self, dim: int, depth: int, dim_in: int, dim_out: int, dim_heads: int, cond_dim: int,
                 checkpointing: bool = False):
        super().__init__()
        self.project_in = nn.Linear(dim_in, dim, bias=False)
        self.project_out = nn.Linear(dim, dim_out, bias=False)
        self.rotary_pos_emb = RotaryEmbedding(max(dim_heads // 2, 32))
        self.layers = nn.ModuleList([TransformerBlock(dim, dim_heads, cond_dim) for _ in range(depth)])
        self.checkpointing = checkpointing

    def forward(self, x, context, prepend):
        x = torch.cat([prepend, self.project_in(x)], dim=1)
        rotary = self.rotary_pos_emb(x.shape[1], x.device)
        for layer in self.layers:
            if self.checkpointing and self.training:
                x = checkpoint(layer, x, context, rotary, use_reentrant=False)
            else:
                x = layer(x, context, rotary)
        return self.project_out(x)


class DiffusionTransformer(nn.Module):
    def __init__(self, io_channels=64, embed_dim=1536, depth=24, num_heads=24, cond_token_dim=768,
                 global_cond_dim=1536, project_cond_tokens=False, transformer_type="continuous_transformer",
                 checkpointing: bool = False):
        super().__init__()
        if transformer_type != "continuous_transformer":
            raise ValueError(f"transformer_type {transformer_type!r} is not supported")
        dim_heads = embed_dim // num_heads
        cond_embed = embed_dim if project_cond_tokens else cond_token_dim
        self.timestep_features = FourierFeatures(1, 256)
        self.to_timestep_embed = nn.Sequential(nn.Linear(256, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.to_cond_embed = nn.Sequential(nn.Linear(cond_token_dim, cond_embed, bias=False), nn.SiLU(),
                                           nn.Linear(cond_embed, cond_embed, bias=False))
        self.to_global_embed = nn.Sequential(nn.Linear(global_cond_dim, embed_dim, bias=False), nn.SiLU(),
                                             nn.Linear(embed_dim, embed_dim, bias=False))
        self.transformer = ContinuousTransformer(embed_dim, depth, io_channels, io_channels, dim_heads, cond_embed,
                                                 checkpointing)
        self.preprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        nn.init.zeros_(self.preprocess_conv.weight)
        nn.init.zeros_(self.postprocess_conv.weight)

    def forward(self, x, t, cross_attn_cond, global_cond):
        """x [B, C, T] latents, t [B] in [0, 1], cross_attn_cond [B, S, cond], global_cond [B, global]."""
        dtype = self.preprocess_conv.weight.dtype
        x, t = x.to(dtype), t.to(dtype)
        context = self.to_cond_embed(cross_attn_cond.to(dtype))
        g = self.to_global_embed(global_cond.to(dtype))
        g = g + self.to_timestep_embed(self.timestep_features(t[:, None]))
        x = self.preprocess_conv(x) + x
        out = self.transformer(x.transpose(1, 2), context, g[:, None, :])[:, 1:].transpose(1, 2)
        return self.postprocess_conv(out) + out
