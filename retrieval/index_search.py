"""Retrieval from a corpus index: ANN on both context sides, merge, exact J, eq. 11.

For a query gap ``[ts, te)`` of ``L`` samples (12 kHz):

1. **ANN.** The query's pre-context block (ending at ``ts``) and post-context block
   (starting at ``te``) are embedded like the corpus (``indexer/embed.py``) and each
   searched in its FAISS index: a pre hit at position ``p`` proposes the start
   ``t_hat = p``, a post hit at ``q`` proposes ``t_hat = q - L``.
2. **Merge.** The ANN query is aligned to the index grid (:class:`AnnQuery`), so a pre
   hit and a post hit of one candidate meet exactly. A side's approximate cost is
   ``D = N_q + a_1 + a_2 - 2 <e_q, e_x>`` (:func:`side_distances`), the side part of
   ``a_1 d_1^2 + a_2 d_2^2`` for unit-norm blocks with the part outside the PCA dropped;
   a candidate's is ``D_pre + D_post``. A side with no hit is bounded below by the
   largest ``D`` FAISS returned for that side (anything not returned is at least that
   far). The best ``n_complete`` candidates by that bound then get their missing side
   from the vector the index stores for it (:func:`complete_sides`) and are ranked by
   the completed sum.
3. **Exact re-score.** The best ``n_rescore`` distinct candidates (one within ``2 Lh`` of a
   better one in the same file joins its window without taking a slot) are re-scored with ``J`` of
   eq. 10 at full frame resolution: every start on the source's 256-sample frame grid
   within ``reach_hops * Lh``, from features recomputed on a window of the source decoded
   around the candidates (soundfile seek; only ``Lc + L + Lc`` plus margins are read;
   neighbouring candidates share one window). All re-scored starts then compete together,
   a start within ``Lh`` of a better one in the same file being the same match (the
   exhaustive search's rule). **Adaptive extension:** the estimates err, and where the
   ``k`` best exact matches came from windows whose estimates reach up to ``E``, a
   candidate not re-scored yet with an estimate up to ``E + rescore_margin |E|`` may still
   belong in the top ``k``; such candidates are re-scored too, in rounds (each round may
   raise ``E``), up to ``max_rescore`` windows in all. Queries whose estimates separate
   the matches clearly stop at ``n_rescore``; ambiguous ones spend more.
4. **eq. 11.** The ``k`` best (distinct: a start within ``Lh`` of a better one in the same
   file is the same match) are refined to the sample at the source's native rate by
   eq. 11 (``retrieval/refine.py``), and ``J`` is evaluated again at the refined start,
   which ranks the final list. (``Index.search`` asks for at least ``refine.MIN_RANKED``
   and returns the best ``k`` of them, as the refinement can reorder the list.) Step 3
   already located the optimum on the frame grid, so the coarse hop eq. 11 refines is the
   frame hop: offsets within ``+-hop/2`` (as in the in-track search), not ``+-Lh/2`` of the
   ANN grid, whose wider window lets the waveform boundary criterion wander to starts of
   clearly worse ``J``. (Refining only these ``k``
   keeps the latency down: a refinement costs about as much as a re-score.)

When the query's own file is in the corpus (:func:`is_query_track`), or its recording at another
rate or through a lossy codec (:func:`same_recording`, asked when a candidate comes near the
gap's time), its candidates obey the in-track rule (``retrieval/track.py``): no segment
overlapping the gap or its ``Lc`` context.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.fft

from simdps.audio import (KeptHandles, audio_input, check_samples, content_hash, read_audio, read_audio_ranges,
                          resample, to_mono)
from simdps.config import SearchConfig
from simdps.errors import AudioError, GapError, SimDPSError
from simdps.gaps import Gap, as_gap, validate_gaps
from simdps.indexer.embed import side_extent
from simdps.indexer.layout import read_signal
from simdps.retrieval.candidate import Candidate, resample_window
from simdps.retrieval.cost import QueryContext, costs_at, grid_costs, query_context
from simdps.retrieval.features import ContextBlock, search_signal
from simdps.retrieval.refine import refine_half_width, refine_start, refine_window

__all__ = ["SearchParams", "TrackTable", "Query", "prepare_query", "AnnQuery", "ann_query", "Coarse",
           "side_distances", "merge_hits", "complete_sides", "ann_k", "FrameHit", "rescore", "group_windows", "refine"]


@dataclass(frozen=True)
class SearchParams:
    """Knobs of one index query (defaults tuned in benchmarks/bench_index.py)."""

    k_ann: int = 8192  # FAISS neighbours per context side
    n_complete: int = 256  # best merged candidates whose missing side is read from the index
    n_rescore: int = 20  # distinct ANN candidates re-scored exactly from the source audio
    max_rescore: int = 64  # ... and at most this many when their estimates are that close (adaptive)
    rescore_margin: float = 0.05  # relative estimate margin of the adaptive extension (0: none)
    nprobe: int | None = None  # IVF lists visited (None: the index's setting)
    reach_hops: int = 3  # exact J at every frame-grid start within reach_hops * Lh of a candidate
    threads: int | None = None  # threads for the FAISS searches, re-score windows, eq. 11 (None: CPUs, at most 4)
    use_signals: bool = True  # read re-score windows from the index's kept search signals, where it has them

    def __post_init__(self):
        if self.k_ann < 1 or self.n_rescore < 1 or self.max_rescore < 1 or self.reach_hops < 1:
            raise SimDPSError("k_ann, n_rescore, max_rescore and reach_hops must be at least 1")
        if self.rescore_margin < 0 or not math.isfinite(self.rescore_margin):
            raise SimDPSError("rescore_margin must be a finite number >= 0 (0 turns the extension off)")
        if self.n_complete < 0:
            raise SimDPSError("n_complete must be 0 (no completion) or more")
        if self.threads is not None and self.threads < 1:
            raise SimDPSError("threads must be at least 1 (or None for the CPU count)")


@dataclass(frozen=True)
class TrackTable:
    """The live tracks of an index as arrays sorted by ``first_row`` (FAISS id -> track)."""

    track_id: np.ndarray
    first_row: np.ndarray
    n_positions: np.ndarray
    sample_rate: np.ndarray
    frames: np.ndarray
    content_hash: list[str]
    path: list[str]  # absolute
    stat: list[tuple[int, int]] | None = None  # (size, mtime_ns) as indexed: a kept signal serves only these

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(track index, position index m)`` of FAISS ids (row = first_row + m); -1 where unknown."""
        ids = np.asarray(ids, dtype=np.int64)
        i = np.searchsorted(self.first_row, ids, side="right") - 1
        ok = (ids >= 0) & (i >= 0)
        i = np.where(ok, i, 0)
        m = ids - self.first_row[i]
        ok &= m < self.n_positions[i]
        return np.where(ok, i, -1), np.where(ok, m, -1)

    @cached_property
    def canonical(self) -> np.ndarray:
        """Per track, the track with the same content hash whose path sorts first (itself if none).

        Byte-identical copies (one file in two folders, a symlink) hold the same vectors at the
        same rows past their ``first_row``: the search maps their hits onto the first copy, so
        a match is re-scored and returned once instead of once per copy."""
        first: dict[str, int] = {}
        for i in sorted(range(len(self.path)), key=self.path.__getitem__):
            first.setdefault(self.content_hash[i], i)
        return np.array([first[h] for h in self.content_hash], dtype=np.int64)

    @cached_property
    def _copy_groups(self) -> dict[int, list[int]]:
        """Canonical track -> its byte-identical copies (itself first), for content held more than once."""
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(self.canonical.tolist()):
            groups.setdefault(c, []).append(i)
        return {c: sorted(g, key=lambda j: j != c) for c, g in groups.items() if len(g) > 1}

    def copies(self, i: int) -> list[int]:
        """Track ``i`` and then every other track with its content (for a copy gone since indexing)."""
        return [i] + [j for j in self._copy_groups.get(int(self.canonical[i]), ()) if j != i]

    def __len__(self) -> int:
        return len(self.track_id)


@dataclass(frozen=True)
class Query:
    """A query gap prepared for eq. 10: native mono audio and its 12 kHz search signal."""

    audio: np.ndarray  # mono float64 at sr: the track's samples [offset, offset + len) around the gap
    sr: int
    gap: Gap
    gap_start: int  # native samples in the track, end exclusive
    gap_end: int
    y12: np.ndarray  # each side's context (Lc + 1 s) resampled apart; zeros inside the gap
    gs12: int
    ge12: int
    context: QueryContext
    offset: int  # track sample at audio[0]
    track_frames: int  # the whole track's length in samples

    @property
    def length12(self) -> int:
        return self.ge12 - self.gs12

    def observed_second(self) -> tuple[int, np.ndarray]:
        """``(lo, samples)``: up to a second of observed audio beside the gap (before it when there
        is a second there, else after it), from track sample ``lo``: what identifies the recording."""
        n = min(self.sr, max(self.gap_start, self.track_frames - self.gap_end))
        lo = self.gap_start - n if self.gap_start >= n else self.gap_end
        return lo, self.audio[lo - self.offset:lo - self.offset + n]


def prepare_query(audio: np.ndarray, sr: int, gap, cfg: SearchConfig = SearchConfig(),
                  *, what: str = "the query track") -> Query:
    """Validate ``gap`` against the recording and build its eq. 10 context (as track search does).

    Only the context eq. 10 and eq. 11 read, ``Lc`` plus a second beside each gap edge, is
    mixed to mono, converted to float64 and checked: a long track costs no more than a short one.
    """
    audio, sr = audio_input(audio, sr, what=what)
    n = audio.shape[0]
    gap = validate_gaps([as_gap(gap)], n / sr, what=what)[0]
    gap_start, gap_end = gap.to_samples(sr)
    gap_end = min(gap_end, n)
    if gap_end <= gap_start:
        raise GapError(f"gap {gap} is shorter than one sample at {sr} Hz; give a longer gap")
    # Each side resampled on its own so the gap's samples never leak into its context, and
    # only the context eq. 10 reads plus a second of margin. The pre side is cut at a multiple
    # of the rates' common step, so its 12 kHz samples fall exactly where the whole side's would.
    step = sr // math.gcd(sr, cfg.sample_rate)
    keep = int(math.ceil((cfg.context_s + 1.0) * sr))
    first = max(0, (gap_start - keep) // step * step)
    last = min(n, gap_end + keep)
    x = to_mono(np.asarray(audio[first:last], dtype=np.float64))
    check_samples(x[:gap_start - first], what)  # the gap itself may hold anything
    check_samples(x[gap_end - first:], what)
    before = search_signal(x[:gap_start - first], sr, cfg) if gap_start else np.zeros(0, np.float32)
    after = search_signal(x[gap_end - first:], sr, cfg) if gap_end < n else np.zeros(0, np.float32)
    gs12 = len(before)
    ge12 = gs12 + max(1, int(round((gap_end - gap_start) * cfg.sample_rate / sr)))
    y12 = np.concatenate([before, np.zeros(ge12 - gs12, np.float32), after])
    context = query_context(y12, gs12, ge12, cfg)
    if context.pre_extent == 0 and context.post_extent == 0:
        raise GapError(f"gap {gap} leaves under {cfg.n_fft / cfg.sample_rate:.3f} s of audio on both "
                       "sides, so there is no context to match; use a longer recording")
    return Query(x, sr, gap, gap_start, gap_end, y12, gs12, ge12, context, offset=first, track_frames=n)


@dataclass(frozen=True)
class AnnQuery:
    """The query context the ANN stage compares, aligned to the index grid.

    The corpus holds pre-contexts ending and post-contexts starting at multiples of Lh.
    A candidate's two contexts are ``L`` apart, generally not a multiple of Lh, so at most
    one side could sit on the grid. The ANN stage therefore widens the gap to
    ``[ts - a, te + b)`` with ``a + b = (-L) mod Lh`` (split evenly): both widened contexts of
    a candidate then lie on the grid, a pre hit ``p`` and a post hit ``q`` belong to the
    same candidate exactly when ``q - p = L + a + b``, and the candidate starts at
    ``p + a``. The up to Lh/2 samples dropped beside each gap edge only affect this
    approximate stage; the exact re-score uses the true context.
    """

    context: QueryContext
    lead: int  # a: samples between the widened and the true gap start
    span: int  # L + a + b, a multiple of Lh


def ann_query(query: Query, cfg: SearchConfig) -> AnnQuery:
    lh = cfg.coarse_hop
    rest = (-query.length12) % lh
    lead = rest // 2
    if query.gs12 - lead < cfg.n_fft:  # no pre-context to speak of: widen after the gap only
        lead = 0
    elif len(query.y12) - (query.ge12 + rest - lead) < cfg.n_fft:  # likewise before the gap
        lead = rest
    ctx = query_context(query.y12, query.gs12 - lead, query.ge12 + rest - lead, cfg)
    return AnnQuery(ctx, lead, query.length12 + rest)


@dataclass
class Coarse:
    """A merged ANN candidate: track index, start at 12 kHz, and its approximate cost."""

    track: int
    start12: int
    d_pre: float | None
    d_post: float | None
    bound: float = math.inf


def side_distances(similarity: np.ndarray, block: ContextBlock, cfg: SearchConfig) -> np.ndarray:
    """FAISS inner products ``<e_q, e_x>`` of one side -> estimated ``a_1 d_1^2 + a_2 d_2^2`` of that side.

    A block of either feature is scaled to unit weighted norm (``features.context_block``),
    so ``||b_q - b_x||^2 = ||b_q||^2 + 1 - 2 <b_q, b_x>``, and the PCA keeps the directions
    in which blocks share their energy: ``<b_q, b_x> ~ <e_q, e_x>`` per feature (each
    scaled by ``sqrt(a_k)``). Unlike ``||e_q - e_x||^2``, this estimate is not biased
    towards corpus blocks that the PCA represents poorly (``||e_x||`` small, which made
    them look near: the kept fraction of a chroma block varies from 0.25 to 0.6).
    """
    n_q = cfg.alpha_stft * float(np.sum(np.square(block.stft, dtype=np.float64))) + \
        cfg.alpha_chroma * float(np.sum(np.square(block.chroma, dtype=np.float64)))
    return n_q + cfg.alpha_stft + cfg.alpha_chroma - 2.0 * np.asarray(similarity, dtype=np.float64)


def merge_hits(tracks: TrackTable, ann: AnnQuery, coarse_hop: int,
               pre: tuple[np.ndarray, np.ndarray] | None,
               post: tuple[np.ndarray, np.ndarray] | None, *, limit: int = 4096) -> Iterator[Coarse]:
    """Step 2 of the module docstring: FAISS ``(distances, ids)`` per side -> ranked candidates.

    A candidate's approximate cost is ``D_pre + D_post``; a side without a hit is bounded
    below by the largest distance FAISS returned for that side (for IVF this holds within
    the probed lists, which is why :func:`ann_k` keeps the result lists short of exhausting
    them). Hits in byte-identical copies of a file count as the first copy's
    (:attr:`TrackTable.canonical`). Yields the best ``limit``, best first.
    """
    floor = {"pre": 0.0, "post": 0.0}
    keys, sides, dists = [], [], []
    for s_i, (side, hits) in enumerate((("pre", pre), ("post", post))):
        if hits is None:
            continue
        dist, ids = hits
        track, m = tracks.locate(ids)
        ok = track >= 0
        track = np.where(ok, tracks.canonical[np.where(ok, track, 0)], -1)  # copies: one candidate
        if ok.any():
            floor[side] = float(dist[ok].max())
        # candidate key: (track, widened start p); a post hit at q is the candidate p = q - span
        p = m[ok] * coarse_hop - (ann.span if side == "post" else 0)
        keys.append(np.stack([track[ok], p], axis=1))
        sides.append(np.full(int(ok.sum()), s_i))
        dists.append(dist[ok].astype(np.float64))
    if not keys:
        return iter(())
    keys_all, side_all, dist_all = np.concatenate(keys), np.concatenate(sides), np.concatenate(dists)
    # One int64 key per (track, p) (p >= -span > -2^31): np.unique on a 1-D array is a plain
    # sort, ~50x faster than its axis=0 form on 16k rows.
    flat = (keys_all[:, 0] << 32) + (keys_all[:, 1] + (1 << 31))
    uniq_flat, inverse = np.unique(flat, return_inverse=True)
    uniq = np.stack([uniq_flat >> 32, (uniq_flat & 0xFFFFFFFF) - (1 << 31)], axis=1)
    inverse = inverse.reshape(-1)
    best = np.full((len(uniq), 2), np.inf)
    np.minimum.at(best, (inverse, side_all), dist_all)
    have = np.isfinite(best)
    bound = np.where(have[:, 0], best[:, 0], floor["pre"]) + np.where(have[:, 1], best[:, 1], floor["post"])
    # uniq is sorted by (track, p) (np.unique): a stable sort by bound breaks ties by them (3x a lexsort's speed)
    order = np.argsort(bound, kind="stable")[:limit]
    # Generated best first, as the caller consumes them: it usually stops after a few dozen.
    return (Coarse(int(uniq[i, 0]), int(uniq[i, 1]) + ann.lead,
                   float(best[i, 0]) if have[i, 0] else None, float(best[i, 1]) if have[i, 1] else None,
                   float(bound[i])) for i in order)


def complete_sides(cands: list[Coarse], tracks: TrackTable, ann: AnnQuery, coarse_hop: int,
                   lookups: dict, vectors: dict, blocks: dict, cfg: SearchConfig) -> list[Coarse]:
    """Give each candidate the side its ANN search did not return, then rank by ``D_pre + D_post``.

    ``lookups[side]`` is the side's :class:`~simdps.indexer.store.VectorLookup`,
    ``vectors[side]`` the query's embedding and ``blocks[side]`` its context block. A
    candidate at widened start ``p`` has its pre-context vector at row ``first_row + p / Lh``
    and its post-context vector ``span / Lh`` rows later. The index stores a side only where
    its whole context fits the source, so when the query's context on that side is whole
    too, a candidate without the vector cannot be a match (its context leaves the source:
    the exact re-score would reject it) and goes last; otherwise it keeps its bound.
    Returns the candidates best first (ties by track, start).
    """
    whole = side_extent(cfg)
    extents = {"pre": ann.context.pre_extent, "post": ann.context.post_extent}
    for side, offset in (("pre", 0), ("post", ann.span // coarse_hop)):
        attr = "d_pre" if side == "pre" else "d_post"
        todo = [c for c in cands if getattr(c, attr) is None]
        if not todo or lookups.get(side) is None or not lookups[side].available:
            continue  # nothing to complete, or a structure that cannot give vectors back: bounds stay
        m = np.array([(c.start12 - ann.lead) // coarse_hop + offset for c in todo], dtype=np.int64)
        t = np.array([c.track for c in todo], dtype=np.int64)
        inside = (m >= 0) & (m < tracks.n_positions[t])
        rows = np.where(inside, tracks.first_row[t] + m, -1)
        stored, found = lookups[side].get(rows)
        found &= inside
        dist = side_distances(stored @ vectors[side], blocks[side], cfg)
        for c, f, d in zip(todo, found, dist):
            if f:
                setattr(c, attr, float(d))
            elif extents[side] >= whole:
                c.bound = math.inf
    for c in cands:  # a side still unknown keeps the floor the merge added for it
        if c.d_pre is not None and c.d_post is not None:
            c.bound = c.d_pre + c.d_post
    return sorted(cands, key=lambda c: (c.bound, c.track, c.start12))


def ann_k(k_ann: int, ntotal: int, nlist: int | None, nprobe: int | None) -> int:
    """Neighbours to ask FAISS for on one side.

    For IVF, at most half of what the probed lists hold (``ntotal * nprobe / nlist``): a
    list of results that exhausts the probed lists ends with their farthest members, and
    the "largest returned distance" then bounds nothing (measured: recall@10 fell from
    0.95 to 0.43 on a small IVF index asked for more neighbours than it probed).
    """
    k = min(k_ann, ntotal)
    if nlist and nprobe and nprobe < nlist:
        k = min(k, max(64, int(ntotal * nprobe / nlist / 2)))
    return max(1, k)


class _Window:
    """Native-rate samples ``[lo, hi)`` of a file decoded once; reads outside fall back to the file.

    ``hole`` (native samples) is a stretch inside that nothing will read (the middle of a long
    gap's segment): it is left at zero instead of decoded, and a read that touches it
    decodes from the file after all. A file whose rate or length is no longer what the index
    recorded raises :class:`AudioError` (the search leaves it out).
    """

    def __init__(self, path: str, frames: int, sr: int, lo: int, hi: int, hole: tuple[int, int] | None = None,
                 handles: KeptHandles | None = None):
        self.path, self.frames, self.sr = path, frames, sr
        self.lo, self.hi = max(0, lo), min(frames, hi)
        if hole is not None and not self.lo < hole[0] < hole[1] < self.hi:
            hole = None
        self.hole = hole
        ranges = [(self.lo, self.hi)] if hole is None else [(self.lo, hole[0]), (hole[1], self.hi)]
        # float32 as decoded (and as the index build resamples): soxr runs ~2x faster than in float64
        parts, sr_now, frames_now = read_audio_ranges(path, ranges, dtype="float32", handles=handles)
        if (sr_now, frames_now) != (sr, frames):
            raise AudioError(f"{path}: now holds {frames_now} frames at {sr_now} Hz, not {frames} at {sr} Hz as "
                             "indexed; the file changed since indexing: run `simdps-index build` again")
        if hole is None:
            self.data = np.ascontiguousarray(to_mono(parts[0]), dtype=np.float32)
        else:
            head, tail = parts
            self.data = np.zeros(self.hi - self.lo, dtype=np.float32)
            self.data[:len(head)] = to_mono(head)
            self.data[hole[1] - self.lo:hole[1] - self.lo + len(tail)] = to_mono(tail)

    def read(self, lo: int, hi: int) -> np.ndarray:
        inside = self.lo <= lo and hi <= self.lo + len(self.data)
        if inside and (self.hole is None or hi <= self.hole[0] or lo >= self.hole[1]):
            return self.data[lo - self.lo:hi - self.lo]
        data, _ = read_audio(self.path, start=lo, stop=hi, dtype="float32")
        return np.ascontiguousarray(to_mono(data), dtype=np.float32)


@dataclass
class FrameHit:
    """A candidate re-scored at frame resolution (step 3), with the decoded window kept for step 4."""

    path: str
    sr: int
    frames: int
    start12: int  # start on the frame grid, 12 kHz samples in the source
    cost: float  # exact J there (eq. 10), and its parts a_1 d_1, a_2 d_2
    cost_stft: float
    cost_chroma: float
    window: "_Window | None"  # native samples around the candidates (None: read by step 4 when needed)
    s12: np.ndarray  # the 12 kHz window, sample k at source time (w0 + k) / 12000
    w0: int
    bounds: tuple[int, int] | None


def rescore(query: Query, starts12: list[int], path: str, sr_s: int, frames: int, cfg: SearchConfig,
            *, reach12: int, bounds: tuple[int, int] | None = None,
            handles: KeptHandles | None = None,
            signal: tuple[str | os.PathLike, tuple[int, int]] | None = None) -> list[FrameHit]:
    """Step 3 for ANN candidates of one source: exact ``J`` at every frame-grid start within
    ``reach12`` of any of ``starts12``, from one decoded window spanning them all.

    ``signal``: the path of the source's search signal kept by the index
    (``IndexConfig.keep_signals``) and the source's ``(size, mtime_ns)`` when indexed. While
    the source is unchanged, the window is read from the signal instead of decoded and
    resampled (the native samples eq. 11 needs are then read by :func:`refine`). The signal is
    the whole file's, resampled in one stream as the exhaustive search resamples it; a decoded
    window agrees with it to float32 rounding.

    Returns every such start that fits the source (and ``bounds``: native samples,
    inclusive, limiting the refined start, the in-track rule); the caller keeps the best
    distinct ones across all sources, as the exhaustive search would. ``reach12`` is a few
    Lh: the optimum may lie nearer another grid position than the one the ANN ranked, and
    a broad minimum of ``J`` holds several starts more than Lh apart, all of which the
    exhaustive search ranks.
    """
    ctx = query.context
    hop = cfg.hop_length
    # Starts on the source's own frame grid (multiples of hop from its first sample, as the
    # exhaustive search evaluates them).
    centres = np.array(sorted({int(round(t / hop)) * hop for t in starts12}), dtype=np.int64)
    lead = -(-ctx.pre_extent // hop) * hop  # pre-context rounded up to the frame grid
    reach = -(-reach12 // hop) * hop
    w0 = int(centres[0]) - reach - lead  # a multiple of hop: the window's grid is the source's grid
    w1 = int(centres[-1]) + reach + query.length12 + ctx.post_extent + hop
    ratio = sr_s / cfg.sample_rate
    half_width = refine_half_width(hop, sr_s, cfg)
    boundary = int(round(cfg.refine_boundary_ms * 1e-3 * sr_s)) + 2
    margin = int(math.ceil(0.05 * sr_s)) + half_width + boundary
    # No start reads [a, b) at 12 kHz: pre-contexts end by the last start, post-contexts begin
    # at the first start + L (eq. 11 reads only a few ms around both ends of the segment). A
    # long gap's stretch is neither decoded nor resampled.
    a = int(centres[-1]) + reach + hop
    b = int(centres[0]) - reach + query.length12 - hop
    long_gap = b - a > cfg.sample_rate // 4
    # 12 kHz window on the track's global 12 kHz grid: sample k is at time (w0 + k) / 12000.
    s12 = _kept_signal(signal, path, w0, w1)
    window = None
    if s12 is None:  # decoded and resampled around the candidates
        hole = (int(math.ceil(a * ratio)) + margin, int(math.floor(b * ratio)) - margin) if long_gap else None
        window = _Window(path, frames, sr_s, int(math.floor(w0 * ratio)) - margin,
                         int(math.ceil(w1 * ratio)) + margin, hole, handles)
        if long_gap:
            s12 = np.zeros(w1 - w0, dtype=np.float32)
            s12[:a - w0] = resample_window(window.read, frames, sr_s, 0, w0, a - w0, cfg.sample_rate, np.float32)
            s12[b - w0:] = resample_window(window.read, frames, sr_s, 0, b, w1 - b, cfg.sample_rate, np.float32)
        else:
            s12 = resample_window(window.read, frames, sr_s, 0, w0, w1 - w0, cfg.sample_rate, np.float32)
    costs = grid_costs(ctx, s12, cfg)
    starts = costs.starts + w0
    # Whole context inside the source, as the exhaustive search (grid_costs) requires.
    n12 = int(frames * cfg.sample_rate // sr_s)
    nearest = np.min(np.abs(starts[:, None] - centres[None, :]), axis=1) if len(starts) else starts
    keep = (nearest <= reach) & (starts - ctx.pre_extent >= 0) & (starts + query.length12 + ctx.post_extent <= n12)
    if bounds is not None:
        keep &= (starts * ratio >= bounds[0] - half_width) & (starts * ratio <= bounds[1] + half_width)
    return [FrameHit(path, sr_s, frames, int(starts[i]), float(costs.total[i]), float(costs.stft[i]),
                     float(costs.chroma[i]), window, s12, w0, bounds)
            for i in np.flatnonzero(keep)]


def _kept_signal(signal: tuple[str | os.PathLike, tuple[int, int]] | None, path: str,
                 lo: int, hi: int) -> np.ndarray | None:
    """Samples ``[lo, hi)`` of a kept search signal, or None to decode the source instead.

    ``signal`` is the signal's path and the source's ``(size, mtime_ns)`` when indexed. A source
    that is gone or changed since (another size or mtime), and a signal file that is gone, fall
    back to decoding, which then reports the source as it would without kept signals."""
    if signal is None:
        return None
    try:
        st = os.stat(path)
        if (st.st_size, st.st_mtime_ns) != tuple(signal[1]):
            return None
        return read_signal(signal[0], lo, hi)
    except OSError:
        return None


def group_windows(starts12: list[int], span12: int) -> list[list[int]]:
    """Sorted candidate starts of one source cut into groups re-scored from one window each.

    Two neighbours share a window when they lie less than one candidate window
    (``span12``: both contexts and the gap) apart: one longer decode then costs less than two.
    """
    groups: list[list[int]] = []
    for t in sorted(starts12):
        if groups and t - groups[-1][-1] < span12:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def refine(query: Query, hit: FrameHit, cfg: SearchConfig, handles: KeptHandles | None = None) -> Candidate | None:
    """Step 4: eq. 11 at the source's native rate around ``hit``, then ``J`` at the refined start.

    None when the candidate has no admissible start, or when its native samples, read here
    for a hit re-scored from a kept signal, cannot be read (the file went since)."""
    sr_s, ratio = hit.sr, hit.sr / cfg.sample_rate
    seg = int(round((query.gap_end - query.gap_start) * sr_s / query.sr))  # the segment at the source's rate
    lo, hi = 0, hit.frames - seg
    if hit.bounds is not None:
        lo, hi = max(lo, hit.bounds[0]), min(hi, hit.bounds[1])
    if hi < lo:
        return None
    coarse = int(round(hit.start12 * ratio))
    window = hit.window
    if window is None:
        # Only what eq. 11 compares: the boundary samples beside both ends of the segment at
        # every offset it tries (up to a whole hop), not the segment's middle.
        reach = int(math.ceil(cfg.hop_length * ratio)) + int(round(cfg.refine_boundary_ms * 1e-3 * sr_s)) + 4
        hole = (coarse + reach, coarse + seg - reach) if seg > 2 * reach + 16 else None
        try:
            window = _Window(hit.path, hit.frames, sr_s, coarse - reach, coarse + seg + reach, hole, handles)
        except AudioError:
            return None
    # The coarse grid left by step 3 is the frame hop: eq. 11's window is +-hop/2 around it
    # (a whole hop towards a limit the next grid start would have crossed).
    coarse -= window.lo
    half_width, bounds = refine_window(coarse, (lo - window.lo, hi - window.lo), sr_s, cfg)
    refined = refine_start(query.audio, query.sr, query.gap_start - query.offset, query.gap_end - query.offset,
                           window.data, sr_s, coarse, half_width, cfg, bounds=bounds)
    start = refined.start_sample + window.lo
    final = costs_at(query.context, hit.s12, [int(round(start / ratio)) - hit.w0], cfg)
    return Candidate(hit.path, start / sr_s, start, sr_s, *astuple(final.parts(0)), source="index",
                     source_frames=hit.frames)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_query_track(tracks: TrackTable, i: int, query: Query, query_path: str | None,
                   query_hash: str | None) -> bool:
    """Whether corpus track ``i`` is the query's own recording.

    By path or content hash when the query's file is known; otherwise by audio: same rate
    and length, and the same samples over one second of observed context.
    """
    if query_path is not None:
        if same_file(tracks.path[i], query_path):
            return True
        if query_hash is not None and tracks.content_hash[i] == query_hash:
            return True
    if int(tracks.sample_rate[i]) != query.sr or int(tracks.frames[i]) != query.track_frames:
        return False
    lo, ref = query.observed_second()
    try:
        data, _ = read_audio(tracks.path[i], start=lo, stop=lo + len(ref), dtype="float64")
    except SimDPSError:
        return False
    return bool(np.max(np.abs(to_mono(data) - ref)) <= 1e-4 * max(1e-9, float(np.max(np.abs(ref)))) + 1e-7)


# Another encoding of the query's recording (another rate, a lossy codec): its duration may differ
# by an encoder's padding and its samples be shifted by the codec's delay, up to this much.
SAME_RECORDING_S = 0.25
SAME_RECORDING_CORRELATION = 0.95  # normalised correlation a re-encoding keeps beside the gap


def same_recording(tracks: TrackTable, i: int, query: Query) -> bool:
    """Whether corpus track ``i`` is the query's recording in another form: another sample rate
    or a lossy encoding of it, which :func:`is_query_track` (same rate, length and samples) misses.

    Of the same duration (within :data:`SAME_RECORDING_S`), and its waveform over the second of
    observed context beside the gap equal to the query's up to gain, a shift of at most
    ``SAME_RECORDING_S`` and the codec's error (normalised correlation at least
    :data:`SAME_RECORDING_CORRELATION`). A silent context tells nothing: False.
    """
    sr_t, frames_t = int(tracks.sample_rate[i]), int(tracks.frames[i])
    if abs(frames_t / sr_t - query.track_frames / query.sr) > SAME_RECORDING_S:
        return False
    lo, ref = query.observed_second()
    n = len(ref)
    margin = int(math.ceil(SAME_RECORDING_S * sr_t))
    first = int(round(lo * sr_t / query.sr)) - margin  # the same second in the track, and a margin each side
    stop = first + int(math.ceil(n * sr_t / query.sr)) + 2 * margin
    try:
        data, _ = read_audio(tracks.path[i], start=max(0, first), stop=max(0, stop), dtype="float32")
    except SimDPSError:
        return False
    x = resample(np.concatenate([np.zeros(max(0, -first), np.float32), to_mono(data)]), sr_t, query.sr)
    if len(x) < n or not np.any(ref):
        return False
    # correlation of ref with every n-sample span of x (one FFT product), over both norms
    size = scipy.fft.next_fast_len(len(x) + n)
    dots = scipy.fft.irfft(scipy.fft.rfft(x, size) * np.conj(scipy.fft.rfft(ref, size)), size)[:len(x) - n + 1]
    energy = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    norms = np.sqrt(np.maximum(energy[n:] - energy[:-n], 0.0) * float(np.dot(ref, ref)))
    score = np.where(norms > 0, dots / np.maximum(norms, 1e-300), 0.0)
    return bool(np.max(score) >= SAME_RECORDING_CORRELATION)


def hash_if_file(path: str | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return content_hash(path)
