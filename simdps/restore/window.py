"""The window around one gap that the diffusion model sees, and the trip to its sample rate and back.

Memory must not grow with the track: each gap is restored in a window of the model's
training segment length (or longer when the gap plus its context needs it, up to
``max_window_factor`` segments: the CQT U-Net is convolutional and generalises to longer
inputs, paper sec. 4.1), centred on the gap and shifted to stay inside the track.

Sample rates: the window is cut at the track's rate with a margin on each side, resampled
to the model's rate with soxr (linear phase, delay compensated, so time is preserved) and
cropped, so the resampler's edge transients fall in the discarded margin. The margin is a
whole number of periods of the two rates (``sr / gcd(sr, model_sr)`` track samples), so
the crop lands exactly on a model sample. The model's output goes back the same way.

The mask (paper eq. 1) is 0 on the gap and on every other gap inside the window, widened
by ``mask_margin_s`` so the resampling filter's ringing off the zeroed gap is not taken
as an observation. Samples outside the track count as observed silence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from simdps.audio import resample
from simdps.errors import GapError

__all__ = ["Window", "plan_window", "read_window", "to_model_rate", "to_track_rate", "model_mask"]


@dataclass(frozen=True)
class Window:
    """One gap's window, in track samples (``start`` may be negative: zero padding)."""

    start: int  # first track sample of the window
    length: int  # track samples in the window
    gap_start: int  # the gap, relative to ``start``
    gap_end: int
    sample_rate: int  # track rate
    model_rate: int
    model_length: int  # model samples in the window
    margin: int  # track samples read beyond each end for the resampler

    @property
    def stop(self) -> int:
        return self.start + self.length

    def to_model_samples(self, offset: float) -> float:
        """A position relative to the window start, track samples -> model samples."""
        return offset * self.model_rate / self.sample_rate


def plan_window(gap_start: int, gap_end: int, n_frames: int, sample_rate: int, *,
                model_rate: int, segment_samples: int, context_s: float = 1.0,
                max_window_factor: float = 2.0,
                valid_length: Callable[[int], int] | None = None) -> Window:
    """Place the window for the gap ``[gap_start, gap_end)`` (track samples).

    The window holds ``max(segment, gap + 2 context)`` model samples, rounded up to a
    length the network accepts (``valid_length``; the CQT U-Net takes powers of two) so
    that the model sees more real context rather than padding, centred on the gap and
    shifted to lie inside the track when the track is long enough.

    Raises
    ------
    GapError
        If the gap plus ``context_s`` on each side needs more than ``max_window_factor``
        model segments.
    """
    gap_model = (gap_end - gap_start) * model_rate / sample_rate
    need = int(math.ceil(gap_model + 2 * context_s * model_rate))
    limit = int(max_window_factor * segment_samples)
    if need > limit:
        max_gap_s = (limit - 2 * context_s * model_rate) / model_rate
        raise GapError(
            f"the gap of {(gap_end - gap_start) / sample_rate:.3f} s is longer than the model "
            f"window allows: at most {max_gap_s:.3f} s with {context_s:g} s of context on each side "
            f"({max_window_factor:g} x the checkpoint's {segment_samples / model_rate:g}-s segment); "
            "split it into shorter gaps, or use --method lpc or sim"
        )
    model_length = max(segment_samples, need)
    if valid_length is not None:
        model_length = int(valid_length(model_length))
    length = int(math.ceil(model_length * sample_rate / model_rate))
    start = gap_start - (length - (gap_end - gap_start)) // 2
    if n_frames >= length:
        start = min(max(start, 0), n_frames - length)
    else:
        start = 0
    period = sample_rate // math.gcd(sample_rate, model_rate)
    margin = 0 if sample_rate == model_rate else period * int(math.ceil(0.05 * sample_rate / period))
    return Window(start, length, gap_start - start, gap_end - start, sample_rate, model_rate,
                  model_length, margin)


def read_window(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``x[start:stop]`` along axis 0 with zeros where the range leaves ``x``."""
    out = np.zeros((stop - start,) + x.shape[1:], dtype=np.float64)
    lo, hi = max(start, 0), min(stop, x.shape[0])
    if hi > lo:
        out[lo - start:hi - start] = x[lo:hi]
    return out


def to_model_rate(x: np.ndarray | Callable[[int, int], np.ndarray], window: Window) -> np.ndarray:
    """The window at the model rate, ``(model_length, channels)``.

    ``x`` is the track ``(frames, channels)`` or a reader ``read(start, stop)`` returning
    track samples ``[start, stop)`` (zero outside the track), e.g. :meth:`TrackView.read`.
    """
    read = (lambda a, b: read_window(x, a, b)) if isinstance(x, np.ndarray) else x
    if window.sample_rate == window.model_rate:
        return np.asarray(read(window.start, window.stop), dtype=np.float64)
    padded = read(window.start - window.margin, window.stop + window.margin)
    y = resample(padded, window.sample_rate, window.model_rate, quality="VHQ")
    first = window.margin * window.model_rate // window.sample_rate  # exact: margin is whole periods
    out = np.zeros((window.model_length,) + y.shape[1:])
    take = y[first:first + window.model_length]
    out[:take.shape[0]] = take
    return out


def to_track_rate(x_model: np.ndarray, window: Window) -> np.ndarray:
    """Model-rate window samples back at the track rate: ``(length, channels)`` aligned with the window."""
    if window.sample_rate == window.model_rate:
        return np.asarray(x_model, dtype=np.float64)[:window.length]
    y = resample(np.asarray(x_model, dtype=np.float64), window.model_rate, window.sample_rate, quality="VHQ")
    out = np.zeros((window.length,) + y.shape[1:])
    out[:min(window.length, y.shape[0])] = y[:window.length]
    return out


def model_mask(window: Window, gaps: Sequence[tuple[int, int]], *, mask_margin_s: float = 5e-4) -> np.ndarray:
    """Eq. 1 mask over the window at the model rate: 0 on every gap (track samples) it meets, widened.

    Parameters
    ----------
    window : from :func:`plan_window`.
    gaps : all still-missing gaps ``[start, end)`` of the track, in track samples.
    mask_margin_s : widening on each side, seconds.
    """
    mask = np.ones(window.model_length, dtype=np.float32)
    pad = mask_margin_s * window.model_rate
    for g0, g1 in gaps:
        if g1 <= window.start or g0 >= window.stop:
            continue
        a = int(math.floor(window.to_model_samples(g0 - window.start) - pad))
        b = int(math.ceil(window.to_model_samples(g1 - window.start) + pad))
        mask[max(a, 0):max(min(b, window.model_length), 0)] = 0.0
    return mask
