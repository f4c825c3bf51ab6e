"""Invertible multi-resolution constant-Q transform (a painless non-stationary Gabor frame).

One transform with a different number of bins per octave (MR-CQTdiff's default is 9
octaves with 8, 8, 8, 16, 16, 16, 16, 32, 32 bins), built as in Velasco et al. (2011)
and Holighaus et al. (2013), "A framework for invertible, real-time constant-Q
transforms":

* Work on the one-sided spectrum ``X = rfft(x)`` of the whole signal (N samples).
* Every bin k has a real frequency window g_k, compactly supported on the FFT grid of
  the actual N. Octave o covers ``[f_min 2^o, f_min 2^(o+1)]`` with
  ``f_min = (sr/2) / 2^n_octaves``, so the top octave ends at Nyquist. Bin centres lie
  at log2-positions ``u = o + (k + 1/2) / B_o``; each window rises from its lower
  neighbour's centre to its own and falls to its upper neighbour's centre with

      rise(t) = sin(pi/2 * sin^2(pi t / 2)),   fall(t) = cos(pi/2 * sin^2(pi t / 2)),

  so that on every frequency exactly two windows overlap and ``sum_k g_k^2 = 1``
  (the windows are smooth, and neighbouring half-power points coincide).
* Row 0 of octave 0 is a low-pass band: flat from DC up to the centre mirrored
  below f_min, then falling to the first bin's centre, so nothing below the lowest
  octave is lost (at 44.1 kHz f_min = 43 Hz, and A0 = 27.5 Hz lands in this row). The
  top bin stays flat from its centre up to Nyquist.
* Coefficients (the "painless" case): X g_k is placed, centred on the bin, into a
  buffer of M_o >= support length samples and transformed by an M_o-point inverse
  FFT, scaled by ``alpha_o = sqrt(2 M_o / N)``. All bins of an octave share M_o, the
  power of two above the octave's widest support (kept non-decreasing over octaves),
  so one octave is one batched IFFT giving a ``(K_o, M_o)`` tensor: ``T_o = M_o``.
* The frame operator is diagonal in frequency: since ``sum_m |c_k[m]|^2 =
  (alpha_k^2 / M_k) sum_j |X_j g_k(j)|^2`` and ``||x||^2 = (1/N) sum_j rho_j |X_j|^2``
  (``rho_j`` = 1 at DC and Nyquist, 2 elsewhere: Parseval for a one-sided spectrum),
  ``S_j = (2 / rho_j) sum_k g_k(j)^2``. Scaling the windows by 1/sqrt(2) at DC and
  Nyquist makes S = 1 everywhere: the analysis is a Parseval frame
  (``sum |c|^2 = sum x^2``), the dual windows are ``g_k / sum_k g_k^2`` and the exact
  inverse is also the adjoint of the analysis.

Real signals: only the positive-frequency half is analysed, so each row holds samples
of the analytic (one-sided) band signal, demodulated to the middle of the bin's
support; the inverse rebuilds the one-sided spectrum and applies ``irfft``, which
round-trips real signals exactly. White noise of variance sigma^2 gives coefficients
of variance ``2 sigma^2 sum_j g_k(j)^2 / M_o``: about 0.35-0.7 sigma^2 in most rows
(0.1-1 sigma^2 in octaves 0-1, whose M_o the wide low-pass band enlarges), which suits
a diffusion network working on the coefficients. Redundancy: about 2 complex
coefficients per sample with the default layout.

Any length N >= 1 works: the windows are evaluated on N's own FFT grid, and bins whose
support holds no FFT bin simply give zero rows (their band is covered by the
neighbours, because the squared windows sum to one pointwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

from simdps.errors import SimDPSError

__all__ = ["CQT", "get_cqt", "DEFAULT_BINS_PER_OCTAVE"]

#: MR-CQTdiff's bins per octave, lowest octave first.
DEFAULT_BINS_PER_OCTAVE: tuple[int, ...] = (8, 8, 8, 16, 16, 16, 16, 32, 32)


def _rise(t: np.ndarray) -> np.ndarray:
    """Smooth rising half-window on t in [0, 1]; ``rise(t)^2 + rise(1 - t)^2 = 1``."""
    return np.sin(0.5 * np.pi * np.sin(0.5 * np.pi * t) ** 2)


def _fall(t: np.ndarray) -> np.ndarray:
    """Falling half-window on t in [0, 1]; ``fall(t)^2 + rise(t)^2 = 1``."""
    return np.cos(0.5 * np.pi * np.sin(0.5 * np.pi * t) ** 2)


@dataclass(frozen=True)
class _Tables:
    """Window tables of one transform, in float64 numpy (device-free, cached)."""

    bins: tuple[int, ...]            # K_o
    frames: tuple[int, ...]          # T_o = M_o
    index: tuple[np.ndarray, ...]    # per octave (K_o * M_o,) rfft index feeding each buffer slot
    window: tuple[np.ndarray, ...]   # per octave (K_o, M_o) alpha_o * g_k at each slot
    inv_index: np.ndarray            # (2 * F,) slot (flat over all octaves) of the two windows at f_j
    inv_dual: np.ndarray             # (2, F) g_k(j) / (S_j alpha_k): dual window at those slots
    centre_u: np.ndarray             # log2(f / f_min) of every window centre (low-pass first)
    edge_u: np.ndarray               # half-power band edges in the same units (len = windows + 1)


def _window_centres(n_octaves: int, bins_per_octave: tuple[int, ...]) -> np.ndarray:
    """Log2-frequency centres ``u = o + (k + 1/2) / B_o``, preceded by the low-pass centre."""
    centres = [-0.5 / bins_per_octave[0]]  # low-pass: mirror of the first bin about f_min
    for o, b in enumerate(bins_per_octave):
        centres.extend(o + (np.arange(b) + 0.5) / b)
    return np.asarray(centres, dtype=np.float64)


@lru_cache(maxsize=64)
def _cqt_tables(n_samples: int, n_octaves: int, bins_per_octave: tuple[int, ...]) -> _Tables:
    """Build the analysis and dual windows of the frame on the rfft grid of ``n_samples``."""
    n_freqs = n_samples // 2 + 1
    u_c = _window_centres(n_octaves, bins_per_octave)
    n_win = len(u_c)

    # log2(f_j / f_min) with f_min = Nyquist / 2^n_octaves; the sample rate cancels.
    j = np.arange(n_freqs)
    with np.errstate(divide="ignore"):
        u_j = n_octaves + np.log2(2.0 * j / n_samples)

    # Each frequency lies between centres (upper - 1) and (upper): the lower window
    # falls there and the upper one rises; below the first / above the last centre
    # the low-pass / top window is flat (= 1) and alone.
    upper = np.searchsorted(u_c, u_j, side="right")
    lower = upper - 1
    inner = (upper > 0) & (upper < n_win)
    t = np.zeros(n_freqs)
    lo_c = u_c[np.clip(lower, 0, n_win - 1)]
    hi_c = u_c[np.clip(upper, 0, n_win - 1)]
    t[inner] = (u_j[inner] - lo_c[inner]) / (hi_c[inner] - lo_c[inner])
    g_lower = np.where(inner, _fall(t), np.where(upper == n_win, 1.0, 0.0))
    g_upper = np.where(inner, _rise(t), np.where(upper == 0, 1.0, 0.0))
    lower = np.clip(lower, 0, n_win - 1)
    upper = np.clip(upper, 0, n_win - 1)
    # Parseval for real signals: DC and Nyquist count once, the other bins twice.
    half = np.zeros(n_freqs, dtype=bool)
    half[0] = True
    if n_samples % 2 == 0:
        half[-1] = True
    g_lower[half] *= np.sqrt(0.5)
    g_upper[half] *= np.sqrt(0.5)

    # Support [a_k, b_k] of window k: the FFT bins where it is one of the two windows.
    owner = np.concatenate([lower[g_lower > 0], upper[g_upper > 0]])
    where = np.concatenate([j[g_lower > 0], j[g_upper > 0]])
    first = np.full(n_win, n_freqs, dtype=np.int64)
    last = np.full(n_win, -1, dtype=np.int64)
    np.minimum.at(first, owner, where)
    np.maximum.at(last, owner, where)
    length = np.maximum(last - first + 1, 0)

    # Octave of every window (the low-pass band joins octave 0) and its buffer size.
    octave = np.concatenate([[0], np.repeat(np.arange(n_octaves), bins_per_octave)])
    frames = []
    for o in range(n_octaves):
        widest = int(length[octave == o].max())
        m = 1 << max(widest - 1, 0).bit_length()  # smallest power of two >= widest
        frames.append(max(m, frames[-1] if frames else 1))  # T_o non-decreasing
    frames_w = np.asarray(frames)[octave]
    alpha = np.sqrt(2.0 * frames_w / n_samples)

    # Buffer slot p of window k holds f_j with j = c_k + d, d = p for p < M/2 and
    # p - M otherwise: the support, centred at c_k = a_k + L_k // 2, fits in [-M/2, M/2).
    # Slots outside the support get weight 0 (their index is clamped, value unused).
    windex, wvalue, slot = [], [], np.zeros((n_freqs, 2), dtype=np.int64)
    centre = np.where(length > 0, first + length // 2, 0)
    offset = 0
    win_ids = np.arange(n_win)
    for o in range(n_octaves):
        ks = win_ids[octave == o]
        m = frames[o]
        p = np.arange(m)
        d = np.where(p < m // 2, p, p - m) if m > 1 else np.zeros(1, dtype=np.int64)
        jj = centre[ks, None] + d[None, :]
        inside = (jj >= first[ks, None]) & (jj <= last[ks, None])
        jj_c = np.clip(jj, 0, n_freqs - 1)
        g = np.zeros(jj.shape)
        for g_side, w_side in ((g_lower, lower), (g_upper, upper)):
            g += np.where(inside & (w_side[jj_c] == ks[:, None]), g_side[jj_c], 0.0)
        windex.append(jj_c.reshape(-1).astype(np.int64))
        wvalue.append(alpha[ks, None] * g)
        # Flat slot of (window, f_j) for the inverse: row within the octave, then d mod M.
        row = np.empty(n_win, dtype=np.int64)
        row[ks] = np.arange(len(ks))
        for side, w_side in enumerate((lower, upper)):
            mine = octave[w_side] == o
            d_j = (j[mine] - centre[w_side[mine]]) % m
            slot[mine, side] = offset + row[w_side[mine]] * m + d_j
        offset += len(ks) * m

    # sum_k g_k(j)^2 = 1 (1/2 at DC/Nyquist), i.e. frame operator S_j = 1, up to rounding;
    # dual windows g_k / sum_k g_k^2, divided by alpha_k to undo the analysis scaling.
    s = g_lower**2 + g_upper**2
    dual = np.stack([g_lower / (s * alpha[lower]), g_upper / (s * alpha[upper])])
    dual[np.stack([g_lower, g_upper]) == 0] = 0.0

    edges = np.concatenate([[-np.inf], 0.5 * (u_c[1:] + u_c[:-1]), [n_octaves]])
    return _Tables(
        bins=tuple(int((octave == o).sum()) for o in range(n_octaves)),
        frames=tuple(frames),
        index=tuple(windex),
        window=tuple(wvalue),
        inv_index=slot.T.reshape(-1),
        inv_dual=dual,
        centre_u=u_c,
        edge_u=edges,
    )


def _check_config(n_samples: int, sample_rate: int, n_octaves: int,
                  bins_per_octave: tuple[int, ...]) -> tuple[int, ...]:
    if int(n_samples) != n_samples or n_samples < 1:
        raise SimDPSError(f"CQT needs n_samples >= 1, got {n_samples!r}")
    if sample_rate <= 0:
        raise SimDPSError(f"CQT needs a positive sample rate, got {sample_rate!r}")
    if n_octaves < 1:
        raise SimDPSError(f"CQT needs n_octaves >= 1, got {n_octaves!r}")
    bpo = tuple(int(b) for b in bins_per_octave)
    if len(bpo) != n_octaves or min(bpo) < 1:
        raise SimDPSError(
            f"bins_per_octave must give one positive count per octave (n_octaves={n_octaves}), "
            f"got {tuple(bins_per_octave)!r}; pass e.g. bins_per_octave=(16,) * {n_octaves}"
        )
    return bpo


class CQT(nn.Module):
    """Invertible multi-resolution constant-Q transform of real signals of fixed length.

    Parameters
    ----------
    n_samples : int
        Signal length N (any N >= 1).
    sample_rate : int
        Sample rate in Hz; only used for the Hz labels (the frame is defined relative
        to Nyquist: the top octave ends there, the lowest starts at
        ``f_min_hz = sample_rate / 2 / 2**n_octaves``).
    n_octaves : int, default 9
    bins_per_octave : tuple of int, default (8, 8, 8, 16, 16, 16, 16, 32, 32)
        Bins per octave, lowest octave first.
    dtype : torch.dtype, optional
        Real dtype of the window tables (default: torch's default dtype). Inputs of
        another dtype are handled exactly, from float64 tables rebuilt per call.

    Attributes
    ----------
    bins : list of int
        K_o, rows per octave; ``bins[0] = bins_per_octave[0] + 1`` (row 0 is the
        low-pass band from DC to f_min).
    frames : list of int
        T_o, coefficients per row: powers of two, non-decreasing with o; they depend on
        N (the widest window support in each octave, in FFT bins).
    centre_hz, bandwidth_hz : list of numpy arrays
        Per octave, the centre frequency and half-power bandwidth of every row, in Hz
        (low-pass row: centre 0, bandwidth f_min). Neighbouring half-power bands tile
        the axis from DC to Nyquist.
    """

    def __init__(self, n_samples: int, sample_rate: int, *, n_octaves: int = 9,
                 bins_per_octave: tuple[int, ...] = DEFAULT_BINS_PER_OCTAVE,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        bpo = _check_config(n_samples, sample_rate, n_octaves, bins_per_octave)
        tables = _cqt_tables(int(n_samples), int(n_octaves), bpo)
        self._tables = tables
        self.n_samples = int(n_samples)
        self.sample_rate = int(sample_rate)
        self.n_octaves = int(n_octaves)
        self.bins_per_octave = bpo
        self.bins = list(tables.bins)
        self.frames = list(tables.frames)
        self.f_min_hz = sample_rate / 2 / 2**n_octaves

        dtype = dtype or torch.get_default_dtype()
        for o in range(n_octaves):
            self.register_buffer(f"index_{o}", torch.from_numpy(tables.index[o]), persistent=False)
            self.register_buffer(f"window_{o}", torch.from_numpy(tables.window[o]).to(dtype),
                                 persistent=False)
        self.register_buffer("inv_index", torch.from_numpy(tables.inv_index), persistent=False)
        self.register_buffer("inv_dual", torch.from_numpy(tables.inv_dual).to(dtype), persistent=False)

        hz = self.f_min_hz * np.exp2(tables.centre_u)
        edges = self.f_min_hz * np.exp2(tables.edge_u)
        hz[0] = 0.0  # the low-pass band is centred on DC
        width = np.diff(edges)
        split = np.cumsum(self.bins)[:-1]
        self.centre_hz = np.split(hz, split)
        self.bandwidth_hz = np.split(width, split)

    def extra_repr(self) -> str:
        return (f"n_samples={self.n_samples}, sample_rate={self.sample_rate}, "
                f"bins={self.bins}, frames={self.frames}")

    def _table(self, name: str, table: np.ndarray, dtype: torch.dtype) -> Tensor:
        """A real window table in ``dtype``: the buffer, or (other dtype) from the float64 master."""
        buffer = getattr(self, name)
        if buffer.dtype == dtype:
            return buffer
        return torch.from_numpy(table).to(device=buffer.device, dtype=dtype)

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        # After .to()/.double()/.cuda(), refill the real tables from the float64 masters,
        # so that converting a float32 transform to float64 stays exact to 1e-16.
        super()._apply(fn, recurse)
        masters = {f"window_{o}": w for o, w in enumerate(self._tables.window)}
        masters["inv_dual"] = self._tables.inv_dual
        for name, table in masters.items():
            buffer = self._buffers[name]
            self._buffers[name] = torch.from_numpy(table).to(device=buffer.device, dtype=buffer.dtype)
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        """Analysis: real ``(*, N)`` -> per octave, lowest first, complex ``(*, K_o, T_o)``."""
        if x.is_complex() or not x.is_floating_point():
            raise ValueError(f"CQT expects a real floating-point signal, got dtype {x.dtype}")
        if x.shape[-1] != self.n_samples:
            raise ValueError(f"CQT built for {self.n_samples} samples, got shape {tuple(x.shape)}")
        spectrum = torch.fft.rfft(x, dim=-1)
        out = []
        for o in range(self.n_octaves):
            index = getattr(self, f"index_{o}")
            window = self._table(f"window_{o}", self._tables.window[o], x.dtype)
            # Place alpha_o * X g_k, centred on the bin, in an M_o-slot buffer; M_o-point IFFT.
            # (complex * real through view_as_real: avoids promoting the window to complex)
            buf = torch.view_as_real(spectrum.index_select(-1, index).unflatten(-1, window.shape))
            out.append(torch.fft.ifft(torch.view_as_complex(buf * window[..., None]), dim=-1))
        return out

    def inverse(self, coeffs: list[Tensor]) -> Tensor:
        """Synthesis with the dual frame: per-octave ``(*, K_o, T_o)`` -> real ``(*, N)``.

        Exact inverse of :meth:`forward` (and, the frame being Parseval, its adjoint).
        """
        if len(coeffs) != self.n_octaves:
            raise ValueError(f"expected {self.n_octaves} octaves of coefficients, got {len(coeffs)}")
        for o, c in enumerate(coeffs):
            if tuple(c.shape[-2:]) != (self.bins[o], self.frames[o]):
                raise ValueError(f"octave {o}: expected (..., {self.bins[o]}, {self.frames[o]}), "
                                 f"got {tuple(c.shape)}")
        # Back to each window's frequency buffer, then read f_j from the (at most) two
        # windows covering it, weighted by the dual windows g_k / (S alpha_k).
        slots = torch.cat([torch.fft.fft(c, dim=-1).flatten(-2) for c in coeffs], dim=-1)
        real_dtype = slots.real.dtype
        dual = self._table("inv_dual", self._tables.inv_dual, real_dtype)
        picked = torch.view_as_real(slots.index_select(-1, self.inv_index).unflatten(-1, dual.shape))
        spectrum = torch.view_as_complex((picked * dual[..., None]).sum(-3))
        return torch.fft.irfft(spectrum, n=self.n_samples, dim=-1)


@lru_cache(maxsize=32)
def _get_cqt(n_samples: int, sample_rate: int, n_octaves: int, bins_per_octave: tuple[int, ...],
             device: torch.device, dtype: torch.dtype) -> CQT:
    return CQT(n_samples, sample_rate, n_octaves=n_octaves, bins_per_octave=bins_per_octave,
               dtype=dtype).to(device=device)


def get_cqt(n_samples: int, sample_rate: int, n_octaves: int = 9,
            bins_per_octave: tuple[int, ...] = DEFAULT_BINS_PER_OCTAVE,
            device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> CQT:
    """A cached :class:`CQT` with its tables on ``device`` in ``dtype``.

    The same instance is returned for the same arguments: treat it as read-only.
    """
    return _get_cqt(int(n_samples), int(sample_rate), int(n_octaves),
                    tuple(int(b) for b in bins_per_octave), torch.device(device), dtype)
