"""One excerpt restored by one method, as the paper's protocol has it (sec. 4-5).

The guide is retrieved from the *whole track* around the excerpt's gap (the track before
and after it, minus the gap's own context, :class:`simdps.restore.guide.GuideFinder`;
plus the index when one is given), while the method restores the gap of the *excerpt
window alone*: the excerpt is all the method observes, as in the paper's 6-s test
signals. The fills are those of ``simdps-restore`` (:mod:`simdps.restore.fill`: LPC,
Sim with its 10-ms cross-fades, DPS and SimDPS with the sampler presets, ``auto`` with
its match-ratio weight), and the samples outside the gap are the original's, bit-exact.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np

from simdps.errors import SimDPSError
from simdps.evaluation.excerpts import Excerpt
from simdps.restore.config import GUIDED_METHODS, RestoreConfig
from simdps.restore.fill import fill_gap, model_window
from simdps.restore.guide import Guide, GuideFinder
from simdps.restore.samples import NativeAudio, to_float
from simdps.restore.trackview import TrackView

__all__ = ["ExcerptRestorer"]


class ExcerptRestorer:
    """Holds the model (loaded once) and restores excerpts.

    Parameters
    ----------
    restore_config : fill settings (steps, seed, k, w_y, splice and LPC settings).
    index : an index folder to search besides the track, or ``None``.
    checkpoint, device : the diffusion model (``None``: the shipped default) and its device.
    need_model : load the model now (any of dps, simdps-l, simdps-h, auto will run).
    """

    def __init__(self, restore_config: RestoreConfig, *, index: str | None = None,
                 checkpoint: str | None = None, device: str | None = None, need_model: bool = True):
        self.cfg = restore_config
        self.index = index
        self._open_index = None
        self.denoiser: Any = None
        self.model_info: dict | None = None
        if need_model:
            from simdps.restore.model import load_restore_model

            self.denoiser, self.model_info = load_restore_model(checkpoint, device or "auto")

    def find_guide(self, track: NativeAudio, excerpt: Excerpt, methods: Sequence[str]
                   ) -> tuple[Guide | None, float]:
        """The best candidate for the excerpt's gap in the whole track (and index), and the search time."""
        if not any(m in GUIDED_METHODS for m in methods):
            return None, 0.0
        t0 = time.perf_counter()
        view = TrackView(track, [excerpt.gap_in_track_samples])  # y = M x over the whole track
        if self.index is not None and self._open_index is None:
            from simdps.retrieval.api import Index

            self._open_index = Index.open(self.index)  # once for all excerpts
        finder = GuideFinder(view, excerpt.track, index_dir=self._open_index, k=self.cfg.k, cfg=self.cfg.search)
        guide = finder.find(0)
        return guide, time.perf_counter() - t0

    def check_window(self, track: NativeAudio, excerpt: Excerpt) -> None:
        """Raise :class:`~simdps.errors.GapError` if the model window cannot hold the excerpt's gap."""
        if self.model_info is not None:
            model_window(self._excerpt_view(track, excerpt), 0, self.model_info, self.cfg)

    def restore(self, track: NativeAudio, excerpt: Excerpt, method: str, guide: Guide | None,
                seed_offset: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
        """``(restored excerpt as float64 (frames, channels), facts for the result file)``."""
        view = self._excerpt_view(track, excerpt)
        facts: dict[str, Any] = {"guide": None, "preset": None, "w_y": None, "w_guide": None,
                                 "match_ratio": None, "seed": None, "timings_s": {}}
        if method in ("sim", "simdps-l", "simdps-h") and guide is None:
            raise SimDPSError(f"no guide candidate was found for {excerpt.excerpt_id} in its track"
                              + (" or the index" if self.index else ""))
        t0 = time.perf_counter()
        done = fill_gap(method, view, 0, guide, self.denoiser, self.model_info, self.cfg,
                        seed=self.cfg.seed + seed_offset)
        fill = done.fill
        if done.preset is not None:
            facts.update(preset=done.preset, w_y=done.w_y, w_guide=done.w_guide, seed=done.seed)
        if method == "auto":
            facts["match_ratio"] = done.match_ratio
        view.fill(0, fill)
        facts["timings_s"]["restore"] = round(time.perf_counter() - t0, 4)
        if guide is not None and method in GUIDED_METHODS:
            facts["guide"] = dataclasses.asdict(guide.record)
        return to_float(view.assembled()), facts

    @staticmethod
    def _excerpt_view(track: NativeAudio, excerpt: Excerpt) -> TrackView:
        """The excerpt as a recording of its own, its gap still missing."""
        data = excerpt.cut(track.data).copy()
        info = dataclasses.replace(track.info, frames=data.shape[0])
        return TrackView(NativeAudio(data, info), [excerpt.gap_in_excerpt])
