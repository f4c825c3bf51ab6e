"""MR-CQTdiff-style score network: a U-Net with one level per CQT octave, waveform in and out.

The network (da Costa & Moliner 2025, paper ref. [26]) sees the waveform through the
invertible multi-resolution CQT of :mod:`simdps.diffusion.cqt`: octave ``o`` has ``K_o``
bins and ``T_o`` frames, ``T_o`` a power of two that does not decrease with ``o``. Each
U-Net level works at one octave's own time resolution. Channels: ``C_o = base_channels
* channel_mults[o]``; every ``[blocks]`` is ``blocks_per_level`` frequency-dilated
residual blocks with FiLM noise conditioning (:class:`~simdps.diffusion.layers.DilatedResBlock`)::

    x (B, N) --CQT--> c_8 ... c_0  (complex, as 2 real channels)

    encoder (highest octave first)                 decoder (mirror)
    c_8 -> in_8 ------------------> [blocks] ===skip_8===> [blocks] -> head_8 -> c_8'
                                        |                     ^  (rows K_7.. left after emitting)
                      avg-pool time T_8/T_7, 1x1 conv         |  repeat time T_8/T_7, 1x1 conv
                                        v                     |
    c_7 -> in_7 -> concat on frequency [K_7 | F_8] -> [blocks] ===skip_7===> [blocks] -> head_7 -> c_7'
      ...            (lower octave's rows first)                ...
    c_0 -> in_0 -> concat [K_0 | F_1] -> [blocks] -> [mid blocks] -> [blocks] -> head_0 -> c_0'

    c_0' ... c_8' --inverse CQT--> output (B, N)

Going down, each level prepends its octave's bins to the frequency axis, so level ``o``
holds ``F_o = K_o + ... + K_8`` rows and the bottom level sees every octave at the
coarsest time resolution. Going up, level ``o`` emits its own octave's ``K_o`` rows
through a small head and passes the remaining rows up. Skips are concatenated along
channels. The noise level enters as random Fourier features of ``c_noise`` -> MLP ->
per-unit scale/shift (FiLM). A learned per-bin bias tells the convolutions which bin of
which octave they look at (the bin spacing differs between octaves). No attention.

Time patching: with ``time_patch = p > 1`` the input convolution of each octave folds
``p`` frames of a row into channels (stride ``p`` in time) and each head unfolds ``2 p``
output channels back into ``p`` complex frames, so every level runs on ``T_o / p`` frames
(the CPU preset uses ``p = 8``; ``p = 1`` is MR-CQTdiff's layout, used by the full preset).

Lengths: ``N`` must be a power of two, at least ``hop_0 * time_patch`` (512 * 8 = 4096
samples for the CPU preset): only then is the CQT's time grid the same at every length.
:meth:`CQTUNet.valid_length` gives the next valid length; zero-pad to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

from simdps.diffusion.cqt import CQT, get_cqt
from simdps.diffusion.layers import DilatedResBlock, NoiseEmbedding, downsample_time, group_norm, upsample_time
from simdps.errors import SimDPSError

__all__ = ["UNetConfig", "CQTUNet", "valid_length"]

_MR_CQTDIFF_BINS = (8, 8, 8, 16, 16, 16, 16, 32, 32)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`CQTUNet`; JSON-serialisable with :func:`dataclasses.asdict`.

    The defaults are the CPU preset (:meth:`small`); :meth:`full` is the MR-CQTdiff size
    (about 43 M parameters, paper sec. 4.1). ``base_channels`` is the width multiplier
    and ``blocks_per_level`` the depth multiplier.

    Parameters
    ----------
    sample_rate : int
        Audio rate in Hz the model is trained for.
    segment_s : float
        Training crop length in seconds. Valid lengths are powers of two (see
        :meth:`CQTUNet.valid_length`), so the presets use exactly 2^16 samples at
        22.05 kHz (2.97 s) and 2^18 at 44.1 kHz (5.94 s, MR-CQTdiff's "6-s" crops).
    n_octaves, bins_per_octave : int, tuple of int
        CQT layout, lowest octave first (MR-CQTdiff: 9 octaves, 8,8,8,16,16,16,16,32,32).
    base_channels : int
        Width: channels of level ``o`` are ``base_channels * channel_mults[o]``.
    channel_mults : tuple of int
        Per-octave channel multipliers, lowest octave first (one per octave).
    blocks_per_level : int
        Depth: residual blocks per level in the encoder and again in the decoder.
    mid_blocks : int
        Residual blocks at the bottom level between encoder and decoder.
    dilations : tuple of int
        Frequency dilations of the residual units inside one block.
    kernel_size : tuple of int
        Convolution kernel (frequency, time); both odd.
    emb_dim, n_fourier, fourier_scale : int, int, float
        Noise embedding width, number of random Fourier features and their std.
    group_size : int
        Channels per GroupNorm group.
    time_patch : int
        Frames of one CQT row folded into channels by the input convolution (and
        unfolded by the output heads), a power of two. 1 is MR-CQTdiff's layout; the CPU
        preset uses 8, which divides every level's positions by 8 (the painless CQT
        oversamples each row about 2x in time, so little is lost) for a ~6x speed-up.
    seed : int
        Seed of the random Fourier frequencies (also stored in the state dict).
    """

    sample_rate: int = 22_050
    segment_s: float = 2**16 / 22_050
    n_octaves: int = 9
    bins_per_octave: tuple[int, ...] = _MR_CQTDIFF_BINS
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (4, 4, 4, 4, 2, 2, 2, 1, 1)
    blocks_per_level: int = 1
    mid_blocks: int = 1
    dilations: tuple[int, ...] = (1, 2, 4)
    kernel_size: tuple[int, int] = (3, 3)
    emb_dim: int = 128
    n_fourier: int = 64
    fourier_scale: float = 16.0
    group_size: int = 4
    time_patch: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; store tuples so the config stays hashable.
        for name in ("bins_per_octave", "channel_mults", "dilations", "kernel_size"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        problems = []
        if len(self.bins_per_octave) != self.n_octaves:
            problems.append(f"bins_per_octave has {len(self.bins_per_octave)} entries for {self.n_octaves} octaves")
        if len(self.channel_mults) != self.n_octaves:
            problems.append(f"channel_mults has {len(self.channel_mults)} entries for {self.n_octaves} octaves")
        if min(self.channel_mults, default=1) < 1 or self.base_channels < 1 or self.blocks_per_level < 1:
            problems.append("base_channels, channel_mults and blocks_per_level must be >= 1")
        if self.mid_blocks < 0:
            problems.append("mid_blocks must be >= 0")
        if len(self.kernel_size) != 2 or any(k % 2 == 0 for k in self.kernel_size):
            problems.append(f"kernel_size must be two odd numbers, got {self.kernel_size}")
        if not self.dilations or min(self.dilations) < 1:
            problems.append("dilations must be a non-empty tuple of positive integers")
        if self.n_fourier < 2 or self.n_fourier % 2:
            problems.append("n_fourier must be even and >= 2")
        if self.time_patch < 1 or self.time_patch & (self.time_patch - 1):
            problems.append(f"time_patch must be a power of two, got {self.time_patch}")
        if problems:
            raise SimDPSError("invalid UNetConfig: " + "; ".join(problems) + ". Fix the model configuration.")

    @classmethod
    def small(cls) -> UNetConfig:
        """CPU preset: about 2.0 M parameters at 22.05 kHz (timings in docs/PERFORMANCE.md)."""
        return cls()

    @classmethod
    def full(cls) -> UNetConfig:
        """GPU preset at the MR-CQTdiff size: about 43 M parameters at 44.1 kHz, 2^18-sample crops."""
        return cls(
            sample_rate=44_100,
            segment_s=2**18 / 44_100,
            base_channels=32,
            channel_mults=(8, 8, 4, 4, 4, 2, 2, 1, 1),
            blocks_per_level=2,
            mid_blocks=2,
            dilations=(1, 2, 4, 8),
            emb_dim=256,
            n_fourier=256,
            time_patch=1,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def channels(self, octave: int) -> int:
        return self.base_channels * self.channel_mults[octave]


@lru_cache(maxsize=16)
def _reference_hops(n_octaves: int, bins_per_octave: tuple[int, ...]) -> tuple[int, ...]:
    """Samples per CQT frame, ``N / T_o``, per octave, read at a power-of-two reference length."""
    n_ref = 1 << 16
    frames = get_cqt(n_ref, 1, n_octaves, bins_per_octave).frames
    return tuple(n_ref // t for t in frames)


def valid_length(n_samples: int, config: UNetConfig) -> int:
    """Smallest length ``>= n_samples`` the network accepts: a power of two, at least ``hop_0 * time_patch``.

    The painless CQT sizes octave ``o``'s buffer as the power of two above its widest
    window support (which grows with N), so only for power-of-two N is its time grid,
    ``N / T_o`` samples per frame, the same at every length. A convolutional network must
    always see the same grid (the one it was trained on), hence powers of two; the
    lowest octave must also keep at least one frame after folding ``time_patch`` frames.
    """
    hops = _reference_hops(config.n_octaves, config.bins_per_octave)
    n = max(int(n_samples), max(hops) * config.time_patch, 1)
    n = 1 << (n - 1).bit_length()
    frames = get_cqt(n, config.sample_rate, config.n_octaves, config.bins_per_octave).frames
    if list(frames) != [n // h for h in hops]:
        raise SimDPSError(
            f"the CQT of {n} samples has frames {frames}, not the reference grid {[n // h for h in hops]}; "
            "this CQT layout is not supported by the score model"
        )
    return n


class CQTUNet(nn.Module):
    """Score network ``F_theta(x, c_noise)``: waveform ``(B, N)`` in, waveform ``(B, N)`` out.

    Used inside EDM preconditioning, ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)``
    (Karras et al. 2022, eq. 7 and Table 1). See the module docstring for the layout.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig.small()
        n = config.n_octaves
        bins = [config.bins_per_octave[0] + 1, *config.bins_per_octave[1:]]  # row 0: low-pass band
        ch = [config.channels(o) for o in range(n)]
        block = dict(emb_dim=config.emb_dim, dilations=config.dilations,
                     kernel_size=config.kernel_size, group_size=config.group_size)
        same = (config.kernel_size[0] // 2, config.kernel_size[1] // 2)

        self.embed = NoiseEmbedding(config.n_fourier, config.emb_dim, scale=config.fourier_scale, seed=config.seed)
        # Per octave: input conv folding (real, imag) x time_patch frames of a bin into C_o channels,
        # learned per-bin bias, encoder and decoder blocks, output head.
        p = config.time_patch
        self.inputs = nn.ModuleList(
            nn.Conv2d(2, ch[o], (config.kernel_size[0], p), stride=(1, p), padding=(same[0], 0)) for o in range(n)
        )
        self.bin_bias = nn.ParameterList(nn.Parameter(torch.zeros(ch[o], bins[o], 1)) for o in range(n))
        # down[o] maps level o+1's channels to level o's before the frequency concat (unused for the top).
        self.down = nn.ModuleList(
            nn.Conv2d(ch[o + 1], ch[o], 1) if o + 1 < n else nn.Identity() for o in range(n)
        )
        self.encoder = nn.ModuleList(
            nn.ModuleList(DilatedResBlock(ch[o], ch[o], **block) for _ in range(config.blocks_per_level))
            for o in range(n)
        )
        self.mid = nn.ModuleList(DilatedResBlock(ch[0], ch[0], **block) for _ in range(config.mid_blocks))
        # up[o] maps level o-1's channels to level o's after the time upsampling (unused for the bottom).
        self.up = nn.ModuleList(nn.Conv2d(ch[o - 1], ch[o], 1) if o > 0 else nn.Identity() for o in range(n))
        self.decoder = nn.ModuleList(
            nn.ModuleList(
                DilatedResBlock(2 * ch[o] if i == 0 else ch[o], ch[o], **block)
                for i in range(config.blocks_per_level)
            )
            for o in range(n)
        )
        self.heads = nn.ModuleList(
            nn.Sequential(group_norm(ch[o], config.group_size), nn.SiLU(),
                          nn.Conv2d(ch[o], 2 * p, config.kernel_size, padding=same))
            for o in range(n)
        )

    # ------------------------------------------------------------------ lengths
    def valid_length(self, n_samples: int) -> int:
        """Smallest input length ``>= n_samples`` the network accepts (a power of two; see :func:`valid_length`)."""
        return valid_length(n_samples, self.config)

    def _cqt(self, x: Tensor) -> CQT:
        cfg = self.config
        n_samples = x.shape[-1]
        if valid_length(n_samples, cfg) != n_samples:
            raise SimDPSError(
                f"the score model cannot take {n_samples} samples; zero-pad the input to "
                f"CQTUNet.valid_length({n_samples}) = {valid_length(n_samples, cfg)} samples"
            )
        return get_cqt(n_samples, cfg.sample_rate, cfg.n_octaves, cfg.bins_per_octave, x.device, x.dtype)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        """Network output for the (preconditioned) input.

        Parameters
        ----------
        x : Tensor, shape (B, N)
            Waveform, already scaled by c_in; ``N`` must equal :meth:`valid_length` of itself.
        c_noise : Tensor, shape (B,) or scalar
            Noise conditioning, ``ln(sigma) / 4`` under EDM preconditioning.

        Returns
        -------
        Tensor, shape (B, N)
        """
        if x.ndim != 2:
            raise SimDPSError(f"the score model takes a batch of mono waveforms (B, N), got shape {tuple(x.shape)}")
        cqt = self._cqt(x)
        emb = self.embed(c_noise.reshape(-1).expand(x.shape[0]))
        coeffs = cqt(x)
        frames = [c.shape[-1] for c in coeffs]
        n = self.config.n_octaves

        # Encoder: highest octave first; each lower octave is prepended along frequency.
        skips: list[Tensor] = [None] * n  # type: ignore[list-item]
        h = None
        for o in reversed(range(n)):
            z = self.inputs[o](torch.stack([coeffs[o].real, coeffs[o].imag], dim=1)) + self.bin_bias[o]
            if h is not None:
                h = self.down[o](downsample_time(h, frames[o + 1] // frames[o]))
                z = torch.cat([z, h], dim=2)
            h = z
            for blk in self.encoder[o]:
                h = blk(h, emb)
            skips[o] = h

        for blk in self.mid:
            h = blk(h, emb)

        # Decoder: lowest octave first; each level emits its own octave's rows.
        outputs = []
        for o in range(n):
            if o > 0:
                h = self.up[o](upsample_time(h, frames[o] // frames[o - 1]))
            h = torch.cat([h, skips[o]], dim=1)
            for blk in self.decoder[o]:
                h = blk(h, emb)
            k_o = coeffs[o].shape[1]
            y = self.heads[o](h[:, :, :k_o])  # (B, 2 p, K_o, T_o / p)
            y = y.unflatten(1, (2, -1)).permute(0, 1, 3, 4, 2).flatten(-2)  # un-patch time -> (B, 2, K_o, T_o)
            y = y.float()  # torch.complex has no bf16 kernel (CUDA autocast); the CQT runs in float32
            outputs.append(torch.complex(y[:, 0], y[:, 1]))
            h = h[:, :, k_o:]
        return cqt.inverse(outputs)
