"""One gap filled by one method: LPC, Sim, or (Similarity-Guided) diffusion posterior sampling.

Each function reads what it needs from a :class:`~simdps.restore.trackview.TrackView`
(original samples, earlier fills of the same method, zeros in the gaps still missing) and
returns the float fill of ``[gap_start, gap_end)`` at the track's rate, ``(n_gap,
channels)``. Every channel is restored; the diffusion model sees the channels as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from simdps.errors import SimDPSError
from simdps.restore.auto import auto_guide_weight
from simdps.restore.config import RestoreConfig
from simdps.restore.guide import Guide
from simdps.restore.lpc import burg_extrapolate, lpc_fill
from simdps.restore.splice import crossfade_splice, residual_splice
from simdps.restore.trackview import TrackView
from simdps.restore.window import Window, model_mask, plan_window, to_model_rate, to_track_rate

__all__ = ["context_limits", "fill_lpc", "fill_sim", "ModelFill", "fill_model", "model_window", "MethodFill",
           "fill_gap"]


def context_limits(view: TrackView, gap_index: int) -> tuple[int, int]:
    """``(left, right)``: the usable context of a gap stops at the nearest gaps still missing."""
    g0, g1 = view.gaps[gap_index]
    left = max([b for a, b in view.missing() if b <= g0], default=0)
    right = min([a for a, b in view.missing() if a >= g1], default=view.frames)
    return left, right


def fill_lpc(view: TrackView, gap_index: int, cfg: RestoreConfig) -> np.ndarray:
    """Two-sided Burg extrapolation with a squared-cosine cross-fade (:mod:`simdps.restore.lpc`)."""
    g0, g1 = view.gaps[gap_index]
    left, right = context_limits(view, gap_index)
    fit = int(round(cfg.lpc.fit_s * view.sample_rate))
    lo, hi = max(left, g0 - fit), min(right, g1 + fit)
    x = view.read(lo, hi)
    return lpc_fill(x, g0 - lo, g1 - lo, cfg.lpc, sample_rate=view.sample_rate)


def _continuations(view: TrackView, gap_index: int, n: int, cfg: RestoreConfig
                   ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The recording continued ``n`` samples into the gap from each side (Burg), ``None`` without context."""
    g0, g1 = view.gaps[gap_index]
    left, right = context_limits(view, gap_index)
    fit = int(round(cfg.lpc.fit_s * view.sample_rate))
    before = view.read(max(left, g0 - fit), g0)
    after = view.read(g1, min(right, g1 + fit))
    fwd = bwd = None
    if before.shape[0] >= cfg.lpc.min_fit_samples:
        fwd = np.stack([burg_extrapolate(before[:, c], n, cfg.lpc.order) for c in range(view.channels)], axis=1)
    if after.shape[0] >= cfg.lpc.min_fit_samples:
        bwd = np.stack([burg_extrapolate(after[::-1, c], n, cfg.lpc.order)[::-1] for c in range(view.channels)],
                       axis=1)
    return fwd, bwd


def fill_sim(view: TrackView, gap_index: int, guide: Guide, cfg: RestoreConfig) -> np.ndarray:
    """The retrieved segment pasted in, with ``sim_fade_s`` equal-power cross-fades inside each edge.

    Paper sec. 5 ("Sim", after Perraudin et al.) cross-fades 10 ms at the mask boundary;
    here the fade partner is the recording's own short Burg continuation, so the audio
    outside the gap stays untouched (see :mod:`simdps.restore.splice`).
    """
    g0, g1 = view.gaps[gap_index]
    segment = guide.segment(0, g1 - g0, view.sample_rate)
    n_fade = int(round(cfg.sim_fade_s * view.sample_rate))
    fwd, bwd = _continuations(view, gap_index, min(n_fade, (g1 - g0) // 2), cfg)
    return crossfade_splice(segment, fwd, bwd, n_fade)


@dataclass
class ModelFill:
    """A diffusion fill and what produced it (for the report)."""

    fill: np.ndarray
    window: Window
    preset: str
    w_y: float
    w_guide: float


def model_window(view: TrackView, gap_index: int, info: dict, cfg: RestoreConfig) -> Window:
    """The gap's model window (raises :class:`~simdps.errors.GapError` if the gap is too long)."""
    g0, g1 = view.gaps[gap_index]
    return plan_window(g0, g1, view.frames, view.sample_rate, model_rate=int(info["sample_rate"]),
                       segment_samples=int(info["segment_samples"]), context_s=cfg.context_s,
                       max_window_factor=cfg.max_window_factor, valid_length=_valid_length(info))


def _valid_length(info: dict) -> Callable[[int], int] | None:
    """The network's accepted lengths, from the checkpoint's model configuration (if ``info`` has it)."""
    if not isinstance(info.get("model"), dict):
        return None
    from simdps.config import from_dict
    from simdps.diffusion.unet import UNetConfig, valid_length

    config = from_dict(UNetConfig, info["model"])
    return lambda n: valid_length(n, config)


def fill_model(view: TrackView, gap_index: int, denoiser: Any, info: dict, cfg: RestoreConfig, *,
               preset: str, w_guide: float, guide: Guide | None, seed: int,
               progress: bool = True) -> ModelFill:
    """Posterior sampling (eq. 5) or SimDPS (eq. 8) in the gap's window, spliced back at the track rate.

    Parameters
    ----------
    view : the track as this method has restored it so far.
    gap_index : which gap.
    denoiser, info : the model and :func:`~simdps.diffusion.checkpoint.load_model`'s facts.
    cfg : steps, w_y, window and splice settings.
    preset : sampler preset name (``"dps"``, ``"simdps-l"``, ``"simdps-h"``).
    w_guide : guide weight (0 runs plain DPS and ignores ``guide``).
    guide : the retrieved guide, read at the model rate and aligned with the gap.
    seed : sampler noise seed.
    """
    import torch

    from simdps.diffusion.sampler import inpaint

    g0, g1 = view.gaps[gap_index]
    window = model_window(view, gap_index, info, cfg)
    y = to_model_rate(view.read, window)  # (N, C) at the model rate, zero in missing gaps
    mask = model_mask(window, view.missing(), mask_margin_s=cfg.mask_margin_s)
    channels = y.shape[1]
    guide_t = None
    if w_guide > 0 and guide is not None:
        # Window sample j sits at track time start/sr + j/model_rate; the guide's start meets the gap's.
        first = int(round((window.start - g0) * window.model_rate / window.sample_rate))
        guide_t = torch.from_numpy(guide.segment(first, window.model_length, window.model_rate).T.copy()).float()
    else:
        preset, w_guide = "dps", 0.0
    y_t = torch.from_numpy(y.T.copy()).float()
    mask_t = torch.from_numpy(np.repeat(mask[None, :], channels, axis=0))
    x = inpaint(denoiser, y_t, mask_t, guide_t, preset=preset, w_y=cfg.w_y, w_guide=w_guide,
                steps=cfg.steps, seed=seed, progress=progress)
    x_est = to_track_rate(x.detach().cpu().double().numpy().T, window)  # (length, C) at the track rate
    observed = view.read(window.start, window.stop)
    fill = residual_splice(x_est, observed, window.gap_start, window.gap_end,
                           int(round(cfg.splice_fade_s * window.sample_rate)))
    return ModelFill(fill, window, preset, cfg.w_y, float(w_guide))


@dataclass
class MethodFill:
    """One gap filled by one method, and the facts a report records about it."""

    fill: np.ndarray
    preset: str | None = None  # the sampler preset that ran (None for lpc and sim)
    w_y: float | None = None
    w_guide: float | None = None
    match_ratio: float | None = None  # auto only: J* / J_0, which chose w_guide
    seed: int | None = None
    window: Window | None = None


def fill_gap(method: str, view: TrackView, gap_index: int, guide: Guide | None, denoiser: Any,
             info: dict | None, cfg: RestoreConfig, *, seed: int, progress: bool = False) -> MethodFill:
    """Fill gap ``gap_index`` of ``view`` with ``method`` (lpc, sim, dps, simdps-l, simdps-h, auto).

    The one dispatch that ``simdps-restore`` and ``simdps-eval`` share. ``auto`` takes the
    guide weight from the match confidence (:func:`~simdps.restore.auto.auto_guide_weight`)
    and runs plain DPS when it is 0. Does not modify ``view``; the caller splices the fill.
    """
    if method == "lpc":
        return MethodFill(fill_lpc(view, gap_index, cfg))
    if method in ("sim", "simdps-l", "simdps-h") and guide is None:
        raise SimDPSError(f"method {method} needs a guide candidate, and none was found")
    if method == "sim":
        return MethodFill(fill_sim(view, gap_index, guide, cfg))
    if denoiser is None or info is None:
        raise SimDPSError(f"method {method} needs the diffusion model, which was not loaded")
    match_ratio = None
    if method == "auto":
        best = guide.candidate.cost if guide is not None else None
        w_guide, match_ratio = auto_guide_weight(best, (guide.null_cost or 0.0) if guide is not None else 0.0,
                                                 cfg.auto)
        preset = "simdps-l" if w_guide > 0 else "dps"
    else:
        from simdps.diffusion.guidance import PRESETS

        if method not in PRESETS:
            raise SimDPSError(f"unknown method {method!r}; use lpc, sim, dps, simdps-l, simdps-h or auto")
        preset, w_guide = method, PRESETS[method].w_guide
    result = fill_model(view, gap_index, denoiser, info, cfg, preset=preset, w_guide=w_guide, guide=guide,
                        seed=seed, progress=progress)
    return MethodFill(result.fill, result.preset, result.w_y, result.w_guide, match_ratio, seed, result.window)
