"""Building blocks of the CQT U-Net: noise embedding, FiLM, frequency-dilated residual blocks.

All blocks work on CQT feature maps shaped ``(B, C, F, T)``: channels, frequency bins
(low to high), time frames. Frequency dilation lets a 3-tap kernel see harmonics a few
bins apart without pooling the frequency axis (CQTdiff, Moliner et al. 2023).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FourierFeatures",
    "NoiseEmbedding",
    "DilatedResBlock",
    "group_norm",
    "downsample_time",
    "upsample_time",
]


def group_norm(channels: int, group_size: int = 4) -> nn.GroupNorm:
    """GroupNorm with ``group_size`` channels per group (fewer groups when channels are few)."""
    n_groups = max(1, channels // group_size)
    while channels % n_groups:
        n_groups -= 1
    return nn.GroupNorm(n_groups, channels, eps=1e-5)


class FourierFeatures(nn.Module):
    """Random Fourier features of the noise conditioning: [cos 2 pi f c, sin 2 pi f c].

    The frequencies ``f ~ N(0, scale^2)`` are drawn once from ``seed`` and kept as a
    persistent buffer, so a checkpoint carries them (Tancik et al. 2020; EDM's NCSN++
    uses the same embedding of c_noise with scale 16).
    """

    def __init__(self, n_features: int, scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        if n_features % 2:
            raise ValueError("n_features must be even (one cosine and one sine per frequency)")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        freqs = torch.randn(n_features // 2, generator=generator, device="cpu") * scale
        self.register_buffer("freqs", freqs)

    def forward(self, c_noise: Tensor) -> Tensor:
        """``c_noise (B,)`` -> features ``(B, n_features)``."""
        phase = (2 * math.pi) * c_noise.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([phase.cos(), phase.sin()], dim=1)


class NoiseEmbedding(nn.Module):
    """c_noise -> random Fourier features -> 2-layer MLP -> embedding ``(B, emb_dim)``."""

    def __init__(self, n_fourier: int, emb_dim: int, *, scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        self.fourier = FourierFeatures(n_fourier, scale=scale, seed=seed)
        self.mlp = nn.Sequential(
            nn.Linear(n_fourier, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
            nn.SiLU(),
        )

    def forward(self, c_noise: Tensor) -> Tensor:
        return self.mlp(self.fourier(c_noise))


class DilatedResBlock(nn.Module):
    """Stack of residual units with growing frequency dilation, conditioned by FiLM.

    Each unit computes ``h <- h + conv_d(SiLU(GN(h) * (1 + gamma) + beta))`` where
    ``(gamma, beta)`` is a per-channel affine map of the noise embedding (FiLM, Perez
    et al. 2018) and ``conv_d`` is a 2-D convolution dilated by ``d`` along frequency
    only, so the receptive field in frequency grows as sum(d) while time stays local.
    A 1x1 convolution first maps ``in_channels`` to ``out_channels`` when they differ.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        dilations: tuple[int, ...] = (1, 2, 4),
        *,
        kernel_size: tuple[int, int] = (3, 3),
        group_size: int = 4,
    ) -> None:
        super().__init__()
        k_freq, k_time = kernel_size
        if k_freq % 2 == 0 or k_time % 2 == 0:
            raise ValueError("kernel sizes must be odd so 'same' padding keeps the shape")
        self.proj = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        self.norms = nn.ModuleList(group_norm(out_channels, group_size) for _ in dilations)
        self.films = nn.ModuleList(nn.Linear(emb_dim, 2 * out_channels) for _ in dilations)
        self.convs = nn.ModuleList(
            nn.Conv2d(
                out_channels,
                out_channels,
                kernel_size,
                dilation=(d, 1),
                padding=(d * (k_freq - 1) // 2, (k_time - 1) // 2),
            )
            for d in dilations
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``x (B, C_in, F, T)``, ``emb (B, emb_dim)`` -> ``(B, C_out, F, T)``."""
        h = self.proj(x)
        for norm, film, conv in zip(self.norms, self.films, self.convs):
            gamma, beta = film(emb)[:, :, None, None].chunk(2, dim=1)
            h = h + conv(F.silu(norm(h) * (1 + gamma) + beta))
        return h


def downsample_time(x: Tensor, factor: int) -> Tensor:
    """Average ``factor`` consecutive frames: ``(B, C, F, T) -> (B, C, F, T / factor)``."""
    return x if factor == 1 else F.avg_pool2d(x, kernel_size=(1, factor))


def upsample_time(x: Tensor, factor: int) -> Tensor:
    """Repeat each frame ``factor`` times: ``(B, C, F, T) -> (B, C, F, T * factor)``."""
    return x if factor == 1 else x.repeat_interleave(factor, dim=-1)
