"""A float view of the track as one method sees it while restoring: original, fills so far, holes.

The native samples (see :mod:`simdps.restore.samples`) are held once. Each method keeps
its own fills ("patches", already quantised to the file's sample format, exactly what
will be written) and reads windows through :meth:`TrackView.read`: the original samples,
overlaid with that method's fills of earlier gaps, with every gap not yet filled set to
zero (``y = M x``, eq. 1). Windows are converted to float on demand, so memory holds one
copy of the track whatever the number of methods.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from simdps.audio import to_mono
from simdps.restore.samples import NativeAudio, from_float, to_float

__all__ = ["TrackView"]


class TrackView:
    """The track with some gaps filled (``patches``) and the others zeroed."""

    def __init__(self, native: NativeAudio, gaps: Sequence[tuple[int, int]]):
        self.native = native
        self.gaps = list(gaps)
        self.patches: dict[int, np.ndarray] = {}  # gap index -> native samples of its fill

    @property
    def frames(self) -> int:
        return self.native.frames

    @property
    def channels(self) -> int:
        return self.native.channels

    @property
    def sample_rate(self) -> int:
        return self.native.sample_rate

    def missing(self) -> list[tuple[int, int]]:
        """Gaps not filled yet."""
        return [g for i, g in enumerate(self.gaps) if i not in self.patches]

    def fill(self, gap_index: int, fill: np.ndarray) -> None:
        """Store the float fill of gap ``gap_index``, quantised to the file's sample format."""
        g0, g1 = self.gaps[gap_index]
        fill = np.asarray(fill, dtype=np.float64).reshape(g1 - g0, self.channels)
        self.patches[gap_index] = from_float(fill, self.native.data, self.native.info.subtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Float64 ``(stop - start, channels)``: zero outside the track and in unfilled gaps."""
        out = np.zeros((stop - start, self.channels))
        lo, hi = max(start, 0), min(stop, self.frames)
        if hi <= lo:
            return out
        out[lo - start:hi - start] = to_float(self.native.data[lo:hi])
        for i, (g0, g1) in enumerate(self.gaps):
            a, b = max(g0, lo), min(g1, hi)
            if a >= b:
                continue
            if i in self.patches:
                out[a - start:b - start] = to_float(self.patches[i][a - g0:b - g0])
            else:
                out[a - start:b - start] = 0.0
        return out

    def mono(self, *, block: int = 1 << 20) -> np.ndarray:
        """The whole view's mono mix (float64), computed block by block."""
        out = np.empty(self.frames)
        for lo in range(0, self.frames, block):
            hi = min(lo + block, self.frames)
            out[lo:hi] = to_mono(self.read(lo, hi))  # the channel mean, column by column
        return out

    def assembled(self) -> np.ndarray:
        """The native samples with every patch written in: what the output file holds."""
        out = self.native.data.copy()
        for i, patch in self.patches.items():
            g0, g1 = self.gaps[i]
            out[g0:g1] = patch
        return out
