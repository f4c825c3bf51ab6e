"""Joining a fill to the untouched recording without a click, entirely inside the gap.

The samples outside a gap are written back bit-exact, so every boundary treatment has to
live inside ``[gap_start, gap_end)``. Two treatments, both C1-smooth at the splice:

* :func:`residual_splice`, for estimates that cover the whole window (the diffusion
  output): the estimate never equals the recording outside the gap, so at each edge the
  boundary residual ``r = x[edge] - x_est[edge]`` (one sample outside the gap) is added
  back inside the gap and faded out with a ``cos^2`` window over ``fade`` samples. The
  first spliced sample is then ``x[s-1] + (x_est[s] - x_est[s-1])``: the step across the
  splice is the estimate's own first difference, never a jump; the window's zero slope at
  the edge keeps the derivative continuous too.
* :func:`crossfade_splice`, for a fill that knows nothing of the recording (the retrieved
  candidate in the Sim method): an equal-power (``cos``/``sin``) cross-fade over ``fade``
  samples at each edge from the recording's own continuation (a short Burg extrapolation
  of the context) into the fill. This is the paper's 10-ms cross-fade (sec. 5) moved
  inside the gap.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fade_window", "residual_splice", "crossfade_splice"]


def fade_window(n_fade: int) -> np.ndarray:
    """``cos^2(pi k / 2F)`` for ``k = 0..F-1``: 1 with zero slope at the edge, falling to 0 at ``F``."""
    k = np.arange(n_fade)
    return np.cos(0.5 * np.pi * k / max(n_fade, 1)) ** 2


def residual_splice(x_est: np.ndarray, x: np.ndarray, gap_start: int, gap_end: int,
                    fade: int) -> np.ndarray:
    """Gap fill from a window-wide estimate plus the decaying boundary residual.

    Parameters
    ----------
    x_est : (frames, channels) estimate aligned with ``x`` over the whole window.
    x : (frames, channels) recording; only the samples just outside the gap are read.
    gap_start, gap_end : the gap ``[gap_start, gap_end)`` in samples of ``x``.
    fade : residual fade length in samples (capped at half the gap).

    Returns
    -------
    fill : (gap_end - gap_start, channels)
        ``x_est[gap] + r_left w(k) + r_right w(L-1-k)`` with ``w`` from :func:`fade_window`.
    """
    n_gap = gap_end - gap_start
    fill = np.array(x_est[gap_start:gap_end], dtype=np.float64, copy=True)
    n_fade = int(min(fade, n_gap // 2 if n_gap > 1 else n_gap))
    w = fade_window(n_fade)[:, None]
    if gap_start > 0:
        r_left = x[gap_start - 1] - x_est[gap_start - 1]
        fill[:n_fade] += w * r_left
    if gap_end < x.shape[0]:
        r_right = x[gap_end] - x_est[gap_end]
        fill[n_gap - n_fade:] += w[::-1] * r_right
    return fill


def crossfade_splice(fill: np.ndarray, left_continuation: np.ndarray | None,
                     right_continuation: np.ndarray | None, fade: int) -> np.ndarray:
    """Equal-power cross-fades inside the gap edges between the recording's continuations and ``fill``.

    Parameters
    ----------
    fill : (n_gap, channels) the new content (e.g. the retrieved candidate).
    left_continuation : (>= fade, channels) the left context continued into the gap
        (forward prediction), or ``None`` at the start of the track.
    right_continuation : (>= fade, channels) the right context continued backward into the
        gap, ending at the gap end, or ``None`` at the end of the track.
    fade : cross-fade length in samples (capped at half the gap).
    """
    out = np.array(fill, dtype=np.float64, copy=True)
    n_gap = out.shape[0]
    n_fade = int(min(fade, n_gap // 2))
    if n_fade == 0:
        return out
    # Equal power: g_out^2 + g_in^2 = 1, for signals that are uncorrelated across the edge.
    theta = 0.5 * np.pi * (np.arange(n_fade) + 0.5) / n_fade
    g_out, g_in = np.cos(theta)[:, None], np.sin(theta)[:, None]
    if left_continuation is not None:
        out[:n_fade] = g_out * left_continuation[:n_fade] + g_in * out[:n_fade]
    if right_continuation is not None:
        tail = right_continuation[-n_fade:]
        out[n_gap - n_fade:] = g_in[::-1] * out[n_gap - n_fade:] + g_out[::-1] * tail
    return out
