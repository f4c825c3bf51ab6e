"""Offset refinement of a coarse candidate at the source's native rate (paper eq. 11).

After the coarse search at hop ``L_h``, the start ``t*`` is refined over offsets
``o in W = {-L_h/2, ..., +L_h/2}`` (converted to the source's rate) by a waveform
criterion at the gap boundaries. Two criteria (``SearchConfig.refine_mode``):

``"eq11"`` -- the paper's eq. 11 verbatim. With the gap ``[ts, te)`` (end exclusive) and a
    candidate starting at ``c = t* + o`` whose segment has ``L`` samples::

        o* = argmin_o |y[ts - 1] - s[c]| + |y[te] - s[c + L - 1]|

    i.e. the last observed sample before the gap against the first pasted sample, and
    the first observed sample after the gap against the last pasted one (the paper's
    ``y[te+1]`` and ``s[t* + te + o]`` with its inclusive ``te``). It is a continuity
    criterion on two samples: any zero crossing satisfies it, and a copy at another gain
    never matches, so it is fragile on real audio.

``"context"`` (default) -- the same absolute-difference criterion, but comparing the
    query's observed samples beside the gap with the candidate's *own* context at the
    aligned positions, over ``n = refine_boundary_ms`` of samples on each side, after a
    least-squares gain ``g`` (the candidate's context scaled to the query's)::

        q = [y[ts-n:ts], y[te:te+n]],   S(o) = [s[c-n:c], s[c+L:c+L+n]]
        g(o) = <q, S(o)> / <S(o), S(o)>,   o* = argmin_o sum |q - g(o) S(o)|

    A true repetition, at any gain, has zero mismatch at its exact sample. Note that with
    ``n = 1`` and no gain this would compare ``y[ts-1]`` with ``s[c-1]`` (aligned samples),
    which differs from eq. 11's pairing by one sample; hence the separate ``"eq11"`` mode.

A side of the gap with no observed query samples (a gap at the start or the end of the
query) takes no part in either criterion. Ties go to the smallest ``|o|``. When the
query's rate differs from the source's, the query's boundary neighbourhoods are resampled
to the source rate, each from its own side of the gap only (extended past the gap edge
by odd reflection, so the unknown gap never leaks into them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simdps.config import SearchConfig
from simdps.retrieval.candidate import read_window, resample_window

__all__ = ["Refinement", "refine_start", "refine_half_width", "refine_window", "MIN_RANKED"]

# eq. 11 moves a start by up to half a frame hop and J is evaluated again there, which can
# reorder the candidates: the best refined match may come from the 3rd best start on the frame
# grid. So a search ranks at least this many refined candidates and returns the best k of them:
# its list for any k up to MIN_RANKED is the first k of its list for MIN_RANKED (asked for 1,
# it gives the best of the 10, not the refinement of the best grid start).
MIN_RANKED = 10

_MODES = ("context", "eq11")


@dataclass(frozen=True)
class Refinement:
    """Result of eq. 11: refined start (source samples), offset from the coarse start, criterion value, gain."""

    start_sample: int
    offset_samples: int
    mismatch: float
    gain: float


def refine_half_width(coarse_hop_12k: int, sr_source: int, cfg: SearchConfig = SearchConfig()) -> int:
    """``L_h/2`` at the source's rate for a coarse grid of ``coarse_hop_12k`` search-rate samples, plus one sample.

    The extra sample covers rounding when a coarse start is converted to the source's rate.
    """
    return int(math.ceil(coarse_hop_12k / 2 * sr_source / cfg.sample_rate)) + 1


def refine_window(coarse: int, bounds: tuple[int, int] | None, sr_source: int,
                  cfg: SearchConfig = SearchConfig()) -> tuple[int, tuple[int, int] | None]:
    """``(half_width, bounds)`` for :func:`refine_start` around a start found on the frame grid
    (``coarse`` and ``bounds`` in samples at ``sr_source``).

    Offsets stay within half a frame hop (:func:`refine_half_width`), except towards a limit
    of ``bounds`` closer than one hop: the grid start beyond that limit was never scored (its
    segment would leave the source or enter an excluded stretch), so the best start may lie
    up to a whole hop away, and the window reaches the limit. Example: a gap running to the
    end of the query matched at the very end of a source.
    """
    half_width = refine_half_width(cfg.hop_length, sr_source, cfg)
    hop_width = refine_half_width(2 * cfg.hop_length, sr_source, cfg)
    if bounds is None:
        return half_width, None
    lo, hi = bounds
    down = hop_width if coarse - lo < hop_width else half_width
    up = hop_width if hi - coarse < hop_width else half_width
    near = (max(lo, coarse - down), min(hi, coarse + up))
    if near[0] > near[1]:  # the coarse start lies well outside the bounds: refine_start clamps to them
        return half_width, bounds
    return max(down, up), near


def _query_side(y: np.ndarray, sr_y: int, edge: int, side: str, n: int, sr_s: int) -> np.ndarray:
    """``n`` query samples at ``sr_s`` just before (``pre``) or from (``post``) the gap edge at sample ``edge``."""
    if sr_y == sr_s:
        return read_window(lambda lo, hi: y[lo:hi], len(y), edge - n if side == "pre" else edge,
                           edge if side == "pre" else edge + n)
    reach = int(math.ceil(n * sr_y / sr_s)) + int(0.05 * sr_y) + 64  # span plus resampler support
    if side == "pre":
        observed = read_window(lambda lo, hi: y[lo:hi], len(y), edge - reach, edge)
        # Odd reflection about the last observed sample: continuous value and slope at the edge.
        local = np.concatenate([observed, 2 * observed[-1] - observed[-2::-1]])
        return resample_window(local, None, sr_y, reach, -n, n, sr_s)
    observed = read_window(lambda lo, hi: y[lo:hi], len(y), edge, edge + reach)
    local = np.concatenate([2 * observed[0] - observed[:0:-1], observed])
    return resample_window(local, None, sr_y, reach - 1, 0, n, sr_s)


def refine_start(
    y: np.ndarray,
    sr_y: int,
    gap_start: int,
    gap_end: int,
    s: np.ndarray,
    sr_s: int,
    coarse_start: int,
    half_width: int,
    cfg: SearchConfig = SearchConfig(),
    *,
    bounds: tuple[int, int] | None = None,
) -> Refinement:
    """Refine a coarse start by eq. 11 (see the module docstring for both criteria).

    Parameters
    ----------
    y, sr_y : query audio (mono) and its rate; ``gap_start``/``gap_end`` index ``y`` (end exclusive).
    s, sr_s : source audio (mono) and its rate; zero outside ``s``. Pass a window of a long
        file and shift ``coarse_start`` and ``bounds`` into it yourself.
    coarse_start : coarse candidate start in ``s`` (samples at ``sr_s``).
    half_width : offsets ``o`` range over ``[-half_width, +half_width]`` samples at ``sr_s``.
    bounds : optional ``(lo, hi)`` limits on the refined start (inclusive), e.g. to keep the
        segment clear of the query's own context.

    Returns
    -------
    Refinement with the refined start ``coarse_start + o*``.
    """
    if cfg.refine_mode not in _MODES:
        raise ValueError(f"refine_mode must be one of {_MODES}, got {cfg.refine_mode!r}")
    y = np.asarray(y)  # only the spans read below are converted to float64 (read_window):
    s = np.asarray(s)  # a float32 track is not copied whole for a few hundred samples
    length = int(round((gap_end - gap_start) * sr_s / sr_y))  # gap length at the source rate
    offsets = np.arange(-half_width, half_width + 1)
    if bounds is not None:
        offsets = offsets[(coarse_start + offsets >= bounds[0]) & (coarse_start + offsets <= bounds[1])]
        if offsets.size == 0:
            return Refinement(int(np.clip(coarse_start, *bounds)), 0, float("nan"), 1.0)
    starts = coarse_start + offsets

    # Observed query samples beside each gap edge, at the source's rate: a gap at the start
    # (end) of the query has none before (after) it, and that side must not take part (its
    # zeros would favour candidates that are silent there).
    before = int(math.floor(gap_start * sr_s / sr_y))
    after = int(math.floor((len(y) - gap_end) * sr_s / sr_y))
    if cfg.refine_mode == "eq11":
        mismatch = np.zeros(len(starts))
        if before:
            y_before = _query_side(y, sr_y, gap_start, "pre", 1, sr_s)[0]
            mismatch += np.abs(y_before - read_window(lambda lo, hi: s[lo:hi], len(s), int(starts[0]),
                                                      int(starts[-1]) + 1))  # eq. 11, first term
        if after:
            y_after = _query_side(y, sr_y, gap_end, "post", 1, sr_s)[0]
            mismatch += np.abs(y_after - read_window(lambda lo, hi: s[lo:hi], len(s), int(starts[0]) + length - 1,
                                                     int(starts[-1]) + length))  # second term
        gains = np.ones_like(mismatch)
    else:
        n = max(1, int(round(cfg.refine_boundary_ms * 1e-3 * sr_s)))
        n_pre, n_post = min(n, before), min(n, after)
        lo = int(starts[0])
        span = read_window(lambda a, b: s[a:b], len(s), lo - n, int(starts[-1]) + length + n)
        windows = np.lib.stride_tricks.sliding_window_view(span, n)
        # Candidate at start c: context s[c-n:c] is window c-n-(lo-n) = c-lo; s[c+L:c+L+n] is window c-lo+L+n.
        idx = starts - lo
        q_parts, cand_parts = [], []
        if n_pre:
            q_parts.append(_query_side(y, sr_y, gap_start, "pre", n, sr_s)[n - n_pre:])
            cand_parts.append(windows[idx, n - n_pre:])
        if n_post:
            q_parts.append(_query_side(y, sr_y, gap_end, "post", n, sr_s)[:n_post])
            cand_parts.append(windows[idx + length + n, :n_post])
        if not q_parts:  # no observed sample on either side: nothing to refine against
            return Refinement(int(coarse_start if bounds is None else np.clip(coarse_start, *bounds)), 0,
                              float("nan"), 1.0)
        q = np.concatenate(q_parts)
        cand = np.concatenate(cand_parts, axis=1)
        energy = np.einsum("ij,ij->i", cand, cand)
        gains = np.where(energy > 0, cand @ q / np.where(energy > 0, energy, 1.0), 0.0)  # least squares
        mismatch = np.abs(q[None, :] - gains[:, None] * cand).sum(axis=1)
    best = int(np.lexsort((np.abs(offsets), mismatch))[0])
    return Refinement(int(starts[best]), int(offsets[best]), float(mismatch[best]), float(gains[best]))
