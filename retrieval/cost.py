"""The similarity cost J of eq. 10, literal (reference) and vectorised (exhaustive search).

``J(t_hat) = a_1 d_1 + a_2 d_2`` with ``d_k = sqrt(d_k,pre^2 + d_k,post^2)`` and each side's
``d_k,side^2 = ||context_block(query) - context_block(candidate)||^2``, the weighted squared
Euclidean distance of the features defined in :mod:`simdps.retrieval.features`. The
reported parts are ``stft = a_1 d_1`` and ``chroma = a_2 d_2``.

All positions are samples at the search rate (12 kHz). A candidate starting at ``t_hat``
in a source ``s`` fills a gap of length ``L``: its pre-context frame ``j`` covers
``[t_hat - n_fft - j*hop, t_hat - j*hop)``, its post-context frame ``j`` covers
``[t_hat + L + j*hop, t_hat + L + j*hop + n_fft)``. The source is zero outside its
samples (a candidate near a file edge is compared with silence there).

Exhaustive search (:func:`grid_costs`) evaluates every ``t_hat = m*hop`` whose context lies
inside the source. Since ``t_hat + L`` is generally off that grid, the source frames are
computed twice: at phase ``(-n_fft) mod hop`` for pre-contexts ending at ``t_hat`` and at
phase ``L mod hop`` for post-contexts starting at ``t_hat + L``, so the cost is exact at
every grid start. Each side's distance is expanded as
``||q||^2 + c^2 sum_j w_j ||S_j||^2 - 2 c sum_j sqrt(w_j) <q_j, S_j>`` (``c`` the
candidate side's normalisation), where the cross terms of all starts come from one matrix product
``S @ q^T`` summed along its diagonals, and the energy terms from a sliding weighted sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simdps.config import SearchConfig
from simdps.retrieval.features import (
    NORM_FLOOR,
    ContextBlock,
    Features,
    available_frames,
    context_block,
    context_frames,
    context_weights,
    frame_features,
    trim_weights,
)

__all__ = [
    "CostParts",
    "CandidateCosts",
    "QueryContext",
    "query_context",
    "combine_parts",
    "grid_costs",
    "costs_at",
    "reference_cost",
]

Weights = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class CostParts:
    """``J`` of eq. 10 and its per-feature parts ``a_1 d_1`` (stft) and ``a_2 d_2`` (chroma)."""

    total: float
    stft: float
    chroma: float


@dataclass(frozen=True)
class CandidateCosts:
    """``J`` and its parts for candidate starts ``starts`` (samples at 12 kHz in the source)."""

    starts: np.ndarray
    total: np.ndarray
    stft: np.ndarray
    chroma: np.ndarray

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def parts(self, i: int) -> CostParts:
        return CostParts(float(self.total[i]), float(self.stft[i]), float(self.chroma[i]))


@dataclass(frozen=True)
class QueryContext:
    """The query side of eq. 10 for one gap: weights and context blocks of both sides.

    ``weights_pre`` / ``weights_post`` are ``(w_1, w_2)`` with the frames missing from the
    query's audio set to 0; candidates are always compared under these same weights.
    ``pre_extent`` / ``post_extent`` are the samples of source a candidate needs before its
    start and after its end.
    """

    gap_length: int
    weights_pre: Weights
    weights_post: Weights
    pre: ContextBlock
    post: ContextBlock
    pre_extent: int
    post_extent: int

    def side_terms(self, side: str, feature: str, bins: int) -> "_SideTerms":
        """Query-side constants of :func:`_sliding_side` for one side and feature, computed once
        per query (a corpus re-score evaluates dozens of windows against the same query)."""
        cache = self.__dict__.setdefault("_terms", {})  # not a field: frozen, but free to memoise
        key = (side, feature, bins)
        if key not in cache:
            weights = self.weights_pre if side == "pre" else self.weights_post
            block = getattr(self.pre if side == "pre" else self.post, feature)
            cache[key] = _SideTerms.of(weights[0 if feature == "stft" else 1], block, bins)
        return cache[key]


@dataclass(frozen=True)
class _SideTerms:
    """One side and feature of the query, as :func:`_sliding_side` uses it."""

    used: int  # frames with non-zero weight
    q_t: np.ndarray  # (bins, used) float32: the query's rows sqrt(w_j) q_j, transposed for one product
    q_sq: float  # ||q_block||^2
    sqrt_w: np.ndarray  # (used,) float64
    w: np.ndarray  # (used,) float64

    @classmethod
    def of(cls, w: np.ndarray, q_block: np.ndarray, bins: int) -> "_SideTerms":
        w = np.asarray(w, dtype=np.float64)
        used = _used(w)
        q = np.asarray(q_block, dtype=np.float64).reshape(-1, bins)[:used]
        return cls(used, np.ascontiguousarray(q.T, dtype=np.float32), float(np.sum(np.square(q_block, dtype=np.float64))),
                   np.sqrt(w[:used]), w[:used].copy())


def _used(w: np.ndarray) -> int:
    nz = np.flatnonzero(np.asarray(w) > 0)
    return int(nz[-1]) + 1 if nz.size else 0


def _extent(weights: Weights, cfg: SearchConfig) -> int:
    used = max(_used(weights[0]), _used(weights[1]))
    return 0 if used == 0 else cfg.n_fft + (used - 1) * cfg.hop_length


def _padded(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``x[start:stop]`` with zeros where the range leaves ``x``."""
    out = np.zeros(stop - start, dtype=np.float32)
    lo, hi = max(start, 0), min(stop, len(x))
    if hi > lo:
        out[lo - start:hi - start] = x[lo:hi]
    return out


def _side_blocks(x12k: np.ndarray, start: int, pre_extent: int, gap_length: int, post_extent: int,
                 weights_pre: Weights, weights_post: Weights, cfg: SearchConfig) -> tuple[ContextBlock, ContextBlock]:
    """Context blocks of a segment ``[start, start + gap_length)`` of ``x12k`` (zero outside it)."""
    end = start + gap_length
    # Frames are read at phase 0 from the exact context span, so frame j = 0 touches the segment.
    pre_feat = frame_features(_padded(x12k, start - pre_extent, start), cfg)
    post_feat = frame_features(_padded(x12k, end, end + post_extent), cfg)
    pre = context_block(pre_feat, len(pre_feat) - 1, "pre", cfg, weights=weights_pre)
    post = context_block(post_feat, 0, "post", cfg, weights=weights_post)
    return pre, post


def query_context(y12k: np.ndarray, gap_start: int, gap_end: int,
                  cfg: SearchConfig = SearchConfig()) -> QueryContext:
    """Weights and context blocks around the gap ``[gap_start, gap_end)`` of ``y12k`` (12 kHz samples).

    Context frames that would leave ``y12k`` get weight 0 (gaps near a track edge).
    """
    if not 0 <= gap_start < gap_end <= len(y12k):
        raise ValueError(f"gap [{gap_start}, {gap_end}) is not inside a signal of {len(y12k)} samples")
    w1, w2 = context_weights(cfg)
    n_pre = available_frames(gap_start, cfg)
    n_post = available_frames(len(y12k) - gap_end, cfg)
    weights_pre = (trim_weights(w1, n_pre), trim_weights(w2, n_pre))
    weights_post = (trim_weights(w1, n_post), trim_weights(w2, n_post))
    pre_extent, post_extent = _extent(weights_pre, cfg), _extent(weights_post, cfg)
    length = gap_end - gap_start
    pre, post = _side_blocks(y12k, gap_start, pre_extent, length, post_extent, weights_pre, weights_post, cfg)
    return QueryContext(length, weights_pre, weights_post, pre, post, pre_extent, post_extent)


def combine_parts(sq_stft: np.ndarray, sq_chroma: np.ndarray,
                  cfg: SearchConfig = SearchConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """eq. 10: ``(J, a_1 d_1, a_2 d_2)`` from ``d_1^2`` and ``d_2^2`` (pre + post sides)."""
    stft = cfg.alpha_stft * np.sqrt(np.maximum(sq_stft, 0.0))
    chroma = cfg.alpha_chroma * np.sqrt(np.maximum(sq_chroma, 0.0))
    return stft + chroma, stft, chroma


def _block_sq(query: ContextBlock, cand: ContextBlock) -> tuple[float, float]:
    return float(np.sum((query.stft - cand.stft) ** 2)), float(np.sum((query.chroma - cand.chroma) ** 2))


def costs_at(query: QueryContext, s12k: np.ndarray, starts, cfg: SearchConfig = SearchConfig()) -> CandidateCosts:
    """Exact ``J`` at arbitrary candidate starts (12 kHz samples into ``s12k``; zero outside it).

    For re-scoring a few candidates (index hits, refined starts); use :func:`grid_costs`
    to scan a whole signal.
    """
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    sq = np.zeros((2, len(starts)))
    for i, t_hat in enumerate(starts):
        pre, post = _side_blocks(s12k, int(t_hat), query.pre_extent, query.gap_length, query.post_extent,
                                 query.weights_pre, query.weights_post, cfg)
        sq[:, i] = np.add(_block_sq(query.pre, pre), _block_sq(query.post, post))
    total, stft, chroma = combine_parts(sq[0], sq[1], cfg)
    return CandidateCosts(starts, total, stft, chroma)


_GRID_BLOCK = 1 << 14  # starts per block of a long grid_costs call (~5.8 min of 12 kHz audio, ~100 MB)
_STRIDED_MAX = 1 << 18  # (candidates x frames) summed through strided views (an index re-score window)


def _sliding_side(table: np.ndarray, first_edge: int, count: int, step: int, terms: _SideTerms) -> np.ndarray:
    """``||q - block(m)||^2`` for the ``count`` candidates whose edge frame is ``first_edge + m``.

    ``table`` rows are frame features; frame ``j`` of candidate ``m`` is row
    ``first_edge + m + step*j``. ``terms`` holds the query's weighted block (rows ``sqrt(w_j) q_j``).
    """
    used = terms.used
    if used == 0:
        return np.full(count, terms.q_sq)
    # Only the rows any candidate reads. The per-row products run in float32 (the features'
    # precision); the sums over frames and the expansion run in float64.
    lo = first_edge + min(0, step * (used - 1))
    hi = first_edge + count - 1 + max(0, step * (used - 1)) + 1
    rows = table[lo:hi]
    if lo < 0 or rows.shape[0] != hi - lo:  # the strided views below must not leave the rows
        raise ValueError(f"frames {lo}..{hi - 1} are needed but the table holds {len(table)}")
    cross = (rows @ terms.q_t).astype(np.float64)  # cross[r, j] = <S_r, sqrt(w_j) q_j>
    energy = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
    if used * count <= _STRIDED_MAX:
        # Few candidates (an index re-score window): each sum over frames is read through a
        # strided view, no Python loop and no gathered copy. With rows counted from the first
        # one read, candidate m reads rows m + j (step +1) or m + used-1-j (step -1) for frame j.
        # (Views made with the ndarray constructor and sums with np.correlate: numpy's as_strided
        # and sliding_window_view cost ~30 us a call in Python, a third of a small window's sum.)
        cross *= terms.sqrt_w
        item = cross.itemsize
        if step > 0:
            diagonal = np.ndarray((count, used), cross.dtype, cross, 0, (used * item, (used + 1) * item))
            cand_sq = np.correlate(energy, terms.w)[:count]  # sum_j w_j energy[m + j]
        else:  # frame j of candidate m is row m + used-1-j: anti-diagonals, frames in reverse
            diagonal = np.ndarray((count, used), cross.dtype, cross, (used - 1) * item,
                                  (used * item, (used - 1) * item))
            cand_sq = np.correlate(energy, terms.w[::-1])[:count]
        dot = diagonal.sum(axis=1)
    else:  # a whole track: per-frame slices keep the memory at O(count)
        offsets = first_edge + step * np.arange(used) - lo  # row of frame j for candidate 0
        dot = np.zeros(count)
        cand_sq = np.zeros(count)
        for j, a in enumerate(offsets):
            dot += terms.sqrt_w[j] * cross[a:a + count, j]
            cand_sq += terms.w[j] * energy[a:a + count]
    # The candidate side scaled to unit weighted norm (silent sides left as they are).
    norm = np.sqrt(cand_sq)
    scale = np.where(norm > NORM_FLOOR, 1.0 / np.maximum(norm, NORM_FLOOR), 1.0)
    dot *= scale
    cand_sq *= scale**2
    return np.maximum(terms.q_sq + cand_sq - 2.0 * dot, 0.0)


def grid_costs(query: QueryContext, s12k: np.ndarray, cfg: SearchConfig = SearchConfig(), *,
               features_pre: Features | None = None, features_post: Features | None = None,
               workers: int = 1) -> CandidateCosts:
    """Exact ``J`` at every start ``t_hat = m*hop`` of ``s12k`` whose context lies inside it.

    Parameters
    ----------
    query : from :func:`query_context`.
    s12k : source signal at the search rate.
    features_pre, features_post : optional precomputed ``frame_features`` of ``s12k`` at
        phases ``(-n_fft) % hop`` and ``gap_length % hop`` (computed here if omitted).
    workers : threads for a long signal's blocks of starts (pocketfft, numpy and BLAS, held to
        one thread each, release the GIL); the same costs whatever the count.

    Returns
    -------
    CandidateCosts over the valid grid starts, in increasing order (empty if none fits).
    """
    hop, n_fft = cfg.hop_length, cfg.n_fft
    length = query.gap_length
    n = len(s12k)
    m_first = -(-query.pre_extent // hop)  # first m with m*hop - pre_extent >= 0
    m_last = (n - length - query.post_extent) // hop
    count = max(0, m_last - m_first + 1)
    starts = (m_first + np.arange(count, dtype=np.int64)) * hop
    if count == 0:
        empty = np.zeros(0)
        return CandidateCosts(starts, empty, empty, empty)

    if count > _GRID_BLOCK and features_pre is None and features_post is None:
        # A long signal (a whole track) in blocks of starts, each from just the samples its
        # contexts read: the same frames and sums, at a memory bounded by the block, not the track.
        # A block's slice begins a multiple of hop before its first start, so its frame grids are
        # the whole signal's.
        def block(m0: int) -> CandidateCosts:
            first = int(starts[m0 - m_first])
            last = int(starts[min(m0 + _GRID_BLOCK, m_last + 1) - 1 - m_first])
            lo = first - m_first * hop
            part = grid_costs(query, s12k[lo:last + length + query.post_extent], cfg)
            return CandidateCosts(part.starts + lo, part.total, part.stft, part.chroma)

        firsts = range(m_first, m_last + 1, _GRID_BLOCK)
        if workers > 1:  # blocks on threads, each product on one BLAS thread (no oversubscription)
            from concurrent.futures import ThreadPoolExecutor

            from simdps.threads import one_blas_thread

            with one_blas_thread(), ThreadPoolExecutor(min(workers, len(firsts))) as pool:
                blocks = list(pool.map(block, firsts))
        else:
            blocks = [block(m0) for m0 in firsts]
        return CandidateCosts(*(np.concatenate([getattr(b, f) for b in blocks])
                                for f in ("starts", "total", "stft", "chroma")))

    phase_pre, phase_post = (-n_fft) % hop, length % hop
    # Edge frames of candidate m = m_first: pre frame 0 ends at t_hat, post frame 0 starts at t_hat + L.
    pre_edge = (int(starts[0]) - n_fft - phase_pre) // hop
    post_edge = (int(starts[0]) + length - phase_post) // hop
    used_pre = max(_used(query.weights_pre[0]), _used(query.weights_pre[1]))
    used_post = max(_used(query.weights_post[0]), _used(query.weights_post[1]))
    # Frames either side reads: a pre side only the frames before its starts, a post side only
    # those after the gap, so the two frame sets (one per phase) do not both span the signal.
    pre_rows = (pre_edge - max(0, used_pre - 1), pre_edge + count)
    post_rows = (post_edge, post_edge + count + max(0, used_post - 1))
    if features_pre is None and features_post is None and phase_post == phase_pre:
        features_pre = features_post = _frame_rows(s12k, phase_pre, min(pre_rows[0], post_rows[0]),
                                                   max(pre_rows[1], post_rows[1]), cfg)
    if features_pre is None:
        features_pre = _frame_rows(s12k, phase_pre, *pre_rows, cfg)
    if features_post is None:
        features_post = _frame_rows(s12k, phase_post, *post_rows, cfg)
    if features_pre.phase != phase_pre or features_post.phase != phase_post:
        raise ValueError("precomputed features have the wrong phase for this gap length")

    sq_stft = np.zeros(count)
    sq_chroma = np.zeros(count)
    for feats, edge, step, side in ((features_pre, pre_edge, -1, "pre"), (features_post, post_edge, 1, "post")):
        edge -= getattr(feats, "first_row", 0)
        sq_stft += _sliding_side(feats.stft, edge, count, step, query.side_terms(side, "stft", feats.stft.shape[1]))
        sq_chroma += _sliding_side(feats.chroma, edge, count, step,
                                   query.side_terms(side, "chroma", feats.chroma.shape[1]))
    total, stft, chroma = combine_parts(sq_stft, sq_chroma, cfg)
    return CandidateCosts(starts, total, stft, chroma)


@dataclass(frozen=True)
class _Rows:
    """Frame features of frames ``first_row ..`` of one phase (the rows :func:`grid_costs` reads)."""

    stft: np.ndarray
    chroma: np.ndarray
    phase: int
    first_row: int


def _frame_rows(s12k: np.ndarray, phase: int, lo: int, hi: int, cfg: SearchConfig) -> _Rows:
    """``frame_features(s12k, phase=phase)`` rows ``[lo, hi)`` only, computed from just their samples."""
    lo = max(lo, 0)
    first = phase + lo * cfg.hop_length
    last = phase + (hi - 1) * cfg.hop_length + cfg.n_fft
    f = frame_features(s12k[first:max(first, last)], cfg, phase=0)
    return _Rows(f.stft, f.chroma, phase, lo)


def _reference_side(weights: list[float], query: list[np.ndarray], cand: list[np.ndarray]) -> float:
    """One side of one feature: ``sum_j w_j ||q_j / n_q - s_j / n_s||^2`` with weighted norms ``n``."""
    q_norm = np.sqrt(sum(w * np.sum(x**2) for w, x in zip(weights, query)))
    s_norm = np.sqrt(sum(w * np.sum(x**2) for w, x in zip(weights, cand)))
    q_norm = q_norm if q_norm > NORM_FLOOR else 1.0
    s_norm = s_norm if s_norm > NORM_FLOOR else 1.0
    return float(sum(w * np.sum((a / q_norm - b / s_norm) ** 2) for w, a, b in zip(weights, query, cand)))


def reference_cost(y12k: np.ndarray, gap_start: int, gap_end: int, s12k: np.ndarray, t_hat: int,
                   cfg: SearchConfig = SearchConfig()) -> CostParts:
    """Eq. 10 written out frame by frame; slow, for tests.

    ``d_k^2 = sum_{side} sum_j w_kj ||Phi_k(y)_j - Phi_k(s)_j||^2`` where ``Phi_1`` is the
    STFT magnitude and ``Phi_2`` the chroma of frame ``j``, each divided by its side's
    weighted norm ``sqrt(sum_j w_kj ||F_j||^2)``; frames of the query outside ``y12k`` get
    weight 0; the source is zero outside ``s12k``.
    """
    n_fft, hop = cfg.n_fft, cfg.hop_length
    length = gap_end - gap_start
    w1, w2 = context_weights(cfg)
    sq1 = sq2 = 0.0
    for side in ("pre", "post"):
        q_mag, s_mag, q_chroma, s_chroma, w1s, w2s = [], [], [], [], [], []
        for j in range(context_frames(cfg)):
            if side == "pre":
                q0, c0 = gap_start - n_fft - j * hop, t_hat - n_fft - j * hop
            else:
                q0, c0 = gap_end + j * hop, t_hat + length + j * hop
            if q0 < 0 or q0 + n_fft > len(y12k):
                continue  # weight 0: the query has no audio there
            qf = frame_features(y12k[q0:q0 + n_fft], cfg)
            sf = frame_features(_padded(s12k, c0, c0 + n_fft), cfg)
            q_mag.append(qf.stft[0].astype(np.float64))
            s_mag.append(sf.stft[0].astype(np.float64))
            q_chroma.append(qf.chroma[0].astype(np.float64))
            s_chroma.append(sf.chroma[0].astype(np.float64))
            w1s.append(w1[j])
            w2s.append(w2[j])
        sq1 += _reference_side(w1s, q_mag, s_mag)
        sq2 += _reference_side(w2s, q_chroma, s_chroma)
    total, stft, chroma = combine_parts(np.array(sq1), np.array(sq2), cfg)
    return CostParts(float(total), float(stft), float(chroma))
