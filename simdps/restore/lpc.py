"""LPC inpainting, the paper's low anchor (sec. 5, ref. [7]): two-sided Burg extrapolation.

An autoregressive model ``x[n] = -sum_{k=1}^{p} a_k x[n-k]`` is fitted with Burg's method
(``librosa.lpc`` implements it) to the context left of the gap and run forward into the
gap; another is fitted to the time-reversed right context and run backward. The two
predictions are blended with a squared-cosine cross-fade, ``w_fwd = cos^2(pi t / 2L)``,
``w_bwd = sin^2(pi t / 2L)`` (they sum to 1), so the fill continues the left context at
the gap start and meets the right context at the gap end. Burg's estimate is always
minimum-phase, so the extrapolation is stable: it rings on and decays, which is why LPC
only produces stationary sound and cannot fill long musical gaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
import scipy.signal

__all__ = ["LPCConfig", "burg_extrapolate", "lpc_fill", "squared_cosine_fade"]


@dataclass(frozen=True)
class LPCConfig:
    """Two-sided Burg extrapolation settings (at the track's own sample rate)."""

    order: int = 128  # AR order p: ~3 ms at 44.1 kHz, enough poles for 64 spectral peaks
    fit_s: float = 0.5  # context fitted on each side of the gap
    min_fit_samples: int = 32  # a side with less context than this is not used


def burg_extrapolate(context: np.ndarray, n_out: int, order: int) -> np.ndarray:
    """Continue ``context`` (1-D) by ``n_out`` samples with a Burg AR(``order``) model.

    The AR filter ``1 / A(z)`` is run on zero input from the state given by the last
    ``order`` context samples, i.e. ``x[n] = -sum_k a_k x[n-k]`` for ``n >= len(context)``.
    Silence (or a context too short to fit) continues as silence.
    """
    context = np.asarray(context, dtype=np.float64)
    if n_out <= 0:
        return np.zeros(0)
    # A fit needs several samples per coefficient; p <= N/4 keeps short contexts well posed.
    a = stable_burg(context, int(min(order, len(context) // 4)))
    if a is None:  # silence, or too short a context to fit: continue as silence
        return np.zeros(n_out)
    # lfiltic wants past outputs most recent first: y[-1], y[-2], ..., y[-order].
    zi = scipy.signal.lfiltic([1.0], a, context[::-1][:len(a) - 1])
    out, _ = scipy.signal.lfilter([1.0], a, np.zeros(n_out), zi=zi)
    return out


def stable_burg(context: np.ndarray, order: int) -> np.ndarray | None:
    """Burg AR coefficients ``[1, a_1, ..., a_p]`` whose filter ``1/A(z)`` is stable.

    Burg's reflection coefficients satisfy ``|k| < 1`` in exact arithmetic, but librosa's
    recursive update of the error energy (Marple's eq. 17) loses precision once the
    prediction error vanishes (a noiseless sum of few sinusoids with ``p`` far above twice
    their number), which can put poles outside the unit circle. We check the poles and
    halve the order until the model is stable; ``None`` for silence or ``p < 1``.
    """
    if order < 1 or not np.any(context):
        return None
    while order >= 1:
        a = librosa.lpc(context, order=order)
        # 1e-6 of pole growth per sample keeps a 100k-sample extrapolation within 10 %.
        if np.all(np.isfinite(a)) and np.max(np.abs(np.roots(a))) <= 1.0 + 1e-6:
            return a
        order //= 2
    return None


def squared_cosine_fade(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fade_out, fade_in)`` of length ``n``: ``cos^2`` and ``sin^2`` of ``pi t / 2``, ``t`` in (0, 1)."""
    t = (np.arange(n) + 0.5) / max(n, 1)
    fade_out = np.cos(0.5 * np.pi * t) ** 2
    return fade_out, 1.0 - fade_out


def lpc_fill(x: np.ndarray, gap_start: int, gap_end: int, cfg: LPCConfig = LPCConfig(),
             *, sample_rate: int, left_limit: int = 0, right_limit: int | None = None) -> np.ndarray:
    """Fill ``x[gap_start:gap_end]`` by two-sided Burg extrapolation.

    Parameters
    ----------
    x : (frames,) or (frames, channels) float array; samples inside the gap are ignored.
    gap_start, gap_end : the gap ``[gap_start, gap_end)`` in samples.
    cfg : AR order and fitted context length.
    sample_rate : of ``x``, in Hz (converts ``cfg.fit_s``).
    left_limit, right_limit : the usable context is ``x[left_limit:gap_start]`` and
        ``x[gap_end:right_limit]`` (e.g. to stop at a neighbouring gap).

    Returns
    -------
    fill : (gap_end - gap_start,) or (gap_end - gap_start, channels)
    """
    x = np.asarray(x, dtype=np.float64)
    squeeze = x.ndim == 1
    x2 = x[:, None] if squeeze else x
    right_limit = x2.shape[0] if right_limit is None else right_limit
    n_gap = gap_end - gap_start
    fit = int(round(cfg.fit_s * sample_rate))
    left = x2[max(left_limit, gap_start - fit):gap_start]
    right = x2[gap_end:min(right_limit, gap_end + fit)]
    use_left = left.shape[0] >= cfg.min_fit_samples
    use_right = right.shape[0] >= cfg.min_fit_samples
    if use_left and use_right:
        fade_out, fade_in = squared_cosine_fade(n_gap)
    else:  # one-sided extrapolation at a track edge or next to another gap
        fade_out, fade_in = np.full(n_gap, float(use_left)), np.full(n_gap, float(use_right))
    out = np.zeros((n_gap, x2.shape[1]))
    for c in range(x2.shape[1]):
        if use_left:
            out[:, c] += fade_out * burg_extrapolate(left[:, c], n_gap, cfg.order)
        if use_right:
            # Backward prediction: extrapolate the time-reversed right context, then reverse.
            out[:, c] += fade_in * burg_extrapolate(right[::-1, c], n_gap, cfg.order)[::-1]
    return out[:, 0] if squeeze else out
