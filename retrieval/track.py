"""Retrieval from the query's own track (paper sec. 4.3): exhaustive eq. 10 search, eq. 11 refinement.

The corpus is the paper's two separate signals: the track before the gap and the track
after it. A candidate segment and the context it is compared with lie inside one part,
and the segment never overlaps the query gap's own context window
``[ts - Lc, te + Lc)`` (so it can never "find" the audio around the gap itself).

Steps, all on the 12 kHz mono search signal except the last:

1. the query context of eq. 10 around the gap (:func:`~simdps.retrieval.cost.query_context`);
   gaps near a track edge use the context that exists;
2. the exact ``J`` at every start on the 256-sample frame grid of each part
   (:func:`~simdps.retrieval.cost.grid_costs`);
3. the best ``k`` starts, where a start within one analysis window (``n_fft`` samples) of
   a better one is the same match and is skipped;
4. each start refined to the sample at the track's native rate by eq. 11 over offsets
   ``[-hop/2, +hop/2]`` (the coarse grid here is the frame hop), kept clear of the query's
   context window.

``J`` reported on each candidate (and the final ranking) is eq. 10 evaluated again at the
refined start, rounded to the nearest 12 kHz sample.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple

import numpy as np

from simdps.audio import as_float, audio_input, check_samples, to_mono
from simdps.config import SearchConfig
from simdps.errors import GapError
from simdps.gaps import Gap, as_gap, validate_gaps
from simdps.retrieval.candidate import Candidate, check_k
from simdps.retrieval.cost import CandidateCosts, costs_at, grid_costs, query_context
from simdps.retrieval.features import search_signal
from simdps.retrieval.refine import MIN_RANKED, refine_start, refine_window
from simdps.threads import default_threads

__all__ = ["search_track"]


def _select(costs: CandidateCosts, k: int, radius_samples: int) -> list[int]:
    """Indices of the ``k`` lowest costs, skipping any start within ``radius_samples`` of a better one."""
    order = np.argsort(costs.total, kind="stable")
    taken: list[int] = []
    for i in order:
        start = costs.starts[i]
        if all(abs(int(start) - int(costs.starts[t])) > radius_samples for t in taken):
            taken.append(int(i))
            if len(taken) == k:
                break
    return taken


def search_track(
    audio: np.ndarray,
    sr: int,
    gap: Gap | tuple[float, float],
    *,
    k: int = 10,
    cfg: SearchConfig = SearchConfig(),
    path: str = "<query>",
    workers: int | None = None,
) -> list[Candidate]:
    """Best ``k`` segments of the track itself to fill ``gap``, sorted by eq. 10 cost.

    Parameters
    ----------
    audio : ``(n,)`` or ``(n, channels)`` samples at ``sr`` (channels are averaged). The
        samples inside the gap are never read.
    sr : native sample rate; candidate starts are refined to the sample at this rate.
    gap : ``(start_s, end_s)`` in seconds or a :class:`~simdps.gaps.Gap`.
    k : how many candidates at most.
    cfg : search settings (paper defaults).
    path : name recorded on the candidates (their ``audio`` holds the mono track).
    workers : threads for a long track (both sides' resampling, blocks of candidate starts);
        default the CPU count, at most 4. The result does not depend on it.

    Returns
    -------
    list of :class:`Candidate` with ``source="track"``, best (lowest ``J``) first.

    Raises
    ------
    GapError if the gap lies outside the track or the track leaves no room for a
    candidate with its context.
    """
    k = check_k(k)
    audio, sr = audio_input(audio, sr, what="the track")
    # float32 audio stays float32, anything else is searched in float64; the mono mix is the
    # only whole-track copy (or the caller's own array, when it is float32 or float64 mono).
    x = to_mono(as_float(audio))
    gap = validate_gaps([as_gap(gap)], len(x) / sr)[0]
    gap_start, gap_end = gap.to_samples(sr)
    gap_end = min(gap_end, len(x))
    if gap_end <= gap_start:
        raise GapError(f"gap {gap} is shorter than one sample at {sr} Hz; give a longer gap")
    check_samples(x[:gap_start], path)  # the gap itself may hold anything (NaN included)
    check_samples(x[gap_end:], path)

    rate = cfg.sample_rate
    workers = default_threads(workers)
    # Each side of the gap is resampled on its own, so gap samples never leak into the context.
    sides = (x[:gap_start], x[gap_end:])
    if workers > 1 and min(len(s) for s in sides) > sr * 60:  # two long sides: both at once
        with ThreadPoolExecutor(2) as pool:
            before12, after12 = pool.map(lambda side: search_signal(side, sr, cfg), sides)
    else:
        before12, after12 = (search_signal(side, sr, cfg) if len(side) else np.zeros(0, np.float32)
                             for side in sides)
    gs12 = len(before12)
    ge12 = gs12 + max(1, int(round((gap_end - gap_start) * rate / sr)))
    y12 = np.concatenate([before12, np.zeros(ge12 - gs12, np.float32), after12])

    def to_native(t12: int) -> int:
        return int(round(t12 * sr / rate)) if t12 < gs12 else gap_end + int(round((t12 - ge12) * sr / rate))

    def to_search(t: int) -> int:
        return int(round(t * rate / sr)) if t < gap_start else ge12 + int(round((t - gap_end) * rate / sr))

    query = query_context(y12, gs12, ge12, cfg)
    if query.pre_extent == 0 and query.post_extent == 0:
        raise GapError(
            f"gap {gap} leaves under {cfg.n_fft / rate:.3f} s of audio on both sides, so there is "
            "no context to match; use a longer recording or a guide"
        )
    length12 = ge12 - gs12
    context12 = cfg.context_samples
    # The paper's corpus: the track before the gap and the track after it, searched apart.
    # A segment must end before the query's pre-context / start after its post-context.
    parts = []
    for lo, hi in ((0, gs12), (ge12, len(y12))):
        costs = grid_costs(query, y12[lo:hi], cfg, workers=workers)
        starts = costs.starts + lo
        clear = (starts + length12 <= gs12 - context12) | (starts >= ge12 + context12)
        parts.append(CandidateCosts(starts[clear], costs.total[clear], costs.stft[clear], costs.chroma[clear]))
    costs = CandidateCosts(*(np.concatenate([getattr(p, f) for p in parts])
                             for f in ("starts", "total", "stft", "chroma")))
    if len(costs) == 0:
        need = (length12 + 2 * context12) / rate
        raise GapError(
            f"the track ({len(x) / sr:.2f} s) leaves no room for a {gap.length_s:.2f} s candidate "
            f"outside the gap's {cfg.context_s:g} s context: a candidate needs about {need:.1f} s "
            "of audio before or after the gap's context; search an index (--index) instead"
        )

    # eq. 11 at the native rate, offsets within half a coarse (frame) hop (a whole hop towards
    # a limit the next grid start would have crossed).
    length = gap_end - gap_start
    context = int(round(cfg.context_s * sr))
    refined_starts: list[int] = []
    for i in _select(costs, max(k, MIN_RANKED), cfg.n_fft):  # re-ranked below, then the best k
        t12 = int(costs.starts[i])
        coarse = to_native(t12)
        if t12 < gs12:
            bounds = (0, gap_start - context - length)
        else:
            bounds = (gap_end + context, len(x) - length)
        width, bounds = refine_window(coarse, bounds, sr, cfg)
        refined = refine_start(x, sr, gap_start, gap_end, x, sr, coarse, width, cfg, bounds=bounds)
        if refined.start_sample not in refined_starts:  # two coarse starts can refine to one sample
            refined_starts.append(refined.start_sample)

    # J of eq. 10 re-evaluated at each refined start (nearest 12 kHz sample), which ranks them.
    final = costs_at(query, y12, [to_search(t) for t in refined_starts], cfg)
    mono = x.astype(np.float32, copy=False)
    candidates = [
        Candidate(path, start / sr, start, sr, *astuple(final.parts(i)), source="track", audio=mono)
        for i, start in enumerate(refined_starts)
    ]
    return sorted(candidates, key=lambda c: (c.cost, c.start_sample))[:k]
