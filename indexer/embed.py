"""Context embeddings: one vector per context side and position, for any gap length.

A candidate for a gap of length L starting at ``t_hat`` in a source is compared with the
query through its pre-context (ending at ``t_hat``) and its post-context (starting at
``t_hat + L``); eq. 10 sums the two sides. So the index embeds, at every position
``p = m * Lh`` of every track, the pre-context ending at ``p`` and the post-context
starting at ``p``, independently: a candidate for any L is a pre hit ``p`` or a post hit
``q`` (start ``q - L``), and the same index serves every gap length.

Per side, with the context blocks of ``retrieval/features.py`` (``b_1``: the 36 weighted
STFT frames scaled to unit weighted norm; ``b_2``: the 137 weighted chroma frames), whose
squared distances are exactly the side's parts of ``d_1^2`` and ``d_2^2``::

    e = [ sqrt(a_1) * V_1^T vec(b_1 U),  sqrt(a_2) * V_2^T b_2 ]          (64 + 64 values)

``U`` (513 x 32) is a PCA basis of single STFT frames, ``V_1`` (36*32 x 64) a PCA basis
of the frame-reduced STFT blocks and ``V_2`` (137*12 x 64) of the chroma blocks, all
fitted on the corpus (per side). Means are not subtracted (the projections are applied to
the raw blocks).

How the search compares two embeddings. Orthonormal projections only shrink distances,
so ``||e(query) - e(p)||^2 <= a_1 d_1,side^2 + a_2 d_2,side^2``, short by the energy of
the block difference outside the kept components. That shortfall includes
``||r(p)||^2``, the part of the corpus block the PCA drops, which varies a lot between
blocks (for chroma, a block keeps 25 to 60 % of its energy): ranked by L2, poorly
represented blocks look nearer than they are. Every block has unit weighted norm
(``features.context_block``), so the side cost is ``N_q + a_1 + a_2 - 2 <b_q, b_p>``
(``N_q`` the query's block energy) and the search ranks by the inner product
``<e_q, e_p>`` instead, which drops only the cross term ``<r_q, r_p>`` of the two
residuals (``retrieval/index_search.side_distances``). This is still a squared L2 distance
between embeddings: with the corpus vector extended by its dropped energy,
``e~_p = [e_p, sqrt(a_1 + a_2 - ||e_p||^2)]``, and the query's by 0, ``||e~_q - e~_p||^2 =
||e_q||^2 + a_1 + a_2 - 2 <e_q, e_p>``, which differs from the estimate only by the query's
own dropped energy, the same for every candidate (the usual reduction of inner-product
search to nearest-neighbour search; FAISS searches the inner product directly). On the
10-h benchmark this raised the share of the exact top 10 among 16 re-scored candidates
from 0.89 to 0.95 with exact 128-d vectors (docs/PERFORMANCE.md).

The two-step STFT reduction is what keeps the build cheap: projecting 36 x 513 = 18468
values per position to 64 dimensions directly costs ~150 GFLOP per hour of audio and
side; through ``U`` it is ~5.5 GFLOP once per hour plus ~6 GFLOP per side.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simdps.atomic import atomic_path
from simdps.config import SearchConfig
from simdps.errors import SimDPSError
from simdps.indexer.config import IndexConfig
from simdps.retrieval.features import (
    NORM_FLOOR,
    ContextBlock,
    Features,
    chroma_basis,
    context_weights,
    frame_features,
    n_frames,
    use_chroma_basis,
)

__all__ = ["ContextPCA", "TrackEmbeddings", "check_coarse_hop", "grid_positions", "fit_pca", "embed_track", "embed_signal", "embed_stream",
           "SignalTail", "SIDES",
           "PCA_FILE"]

SIDES = ("pre", "post")
PCA_FILE = "pca.npz"
_CHUNK = 2048  # positions per batch: bounds the (chunk, 36, 32) and (chunk, 137, 12) gathers


def _n_used(w: np.ndarray) -> int:
    nz = np.flatnonzero(np.asarray(w) > 0)
    return int(nz[-1]) + 1 if nz.size else 0


def _frames_used(cfg: SearchConfig) -> tuple[int, int]:
    """Frames with non-zero weight: (STFT, chroma) = (36, 137) with the paper's numbers."""
    w1, w2 = context_weights(cfg)
    return _n_used(w1), _n_used(w2)


def side_extent(cfg: SearchConfig) -> int:
    """Samples one full context side spans (n_fft + (frames - 1) hop = 35840 at 12 kHz)."""
    return cfg.n_fft + (max(_frames_used(cfg)) - 1) * cfg.hop_length


@dataclass(frozen=True)
class TrackEmbeddings:
    """Positions of one track and their context embeddings.

    ``positions`` are samples at 12 kHz (multiples of Lh); ``pre[i]`` embeds the context
    ending at ``positions[i]`` (valid where ``has_pre[i]``), ``post[i]`` the context starting
    there (valid where ``has_post[i]``). Invalid rows hold zeros.
    """

    positions: np.ndarray
    has_pre: np.ndarray
    has_post: np.ndarray
    pre: np.ndarray
    post: np.ndarray

    def __len__(self) -> int:
        return int(self.positions.shape[0])


def check_coarse_hop(cfg: SearchConfig) -> int:
    """The position hop Lh, or :class:`SimDPSError` unless it is a positive multiple of the frame
    hop (so every position lies on the frame grid)."""
    lh, hop = cfg.coarse_hop, cfg.hop_length
    if lh <= 0 or lh % hop:
        raise SimDPSError(f"the position hop Lh ({lh} samples) must be a positive multiple of the frame hop "
                          f"({hop}) so every position lies on the frame grid, e.g. --hop "
                          f"{max(1, round(lh / hop)) * hop}")
    return lh


def grid_positions(n_samples_12k: int, cfg: SearchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every position ``m * Lh`` of a track of ``n_samples_12k`` samples, and which sides fit there.

    Returns ``(positions, has_pre, has_post)``: a pre-context needs ``side_extent``
    samples before the position, a post-context as many from it on. All positions are
    kept (row ``m`` is position ``m * Lh``), so a position follows from its row id.
    """
    lh = check_coarse_hop(cfg)
    extent = side_extent(cfg)
    grid = np.arange(0, n_samples_12k + 1, lh, dtype=np.int64)
    return grid, grid >= extent, grid + extent <= n_samples_12k


@dataclass
class ContextPCA:
    """The projections of the module docstring, per side: ``U`` (bins x r), ``V_1``, ``V_2``."""

    frame_basis: dict[str, np.ndarray]  # U per side
    stft_basis: dict[str, np.ndarray]  # V_1 per side: (n1 * r, stft_dims)
    chroma_basis: dict[str, np.ndarray]  # V_2 per side: (n2 * 12, chroma_dims)
    alpha_stft: float
    alpha_chroma: float
    explained: dict[str, float]  # variance fraction kept, per basis (reported by `info`)
    # The chroma filterbank the features were computed with (features.chroma_basis); None in
    # indexes built before it was stored.
    chroma_filterbank: np.ndarray | None = None

    def use_filterbank(self, cfg: SearchConfig) -> None:
        """Compute chroma in this process with the filterbank this index's features were computed
        with (when stored), so new features match the index whatever librosa is installed now."""
        if self.chroma_filterbank is not None:
            use_chroma_basis(cfg.sample_rate, cfg.n_fft, self.chroma_filterbank)

    @property
    def dim(self) -> int:
        return self.stft_basis["pre"].shape[1] + self.chroma_basis["pre"].shape[1]

    # ---- query side -----------------------------------------------------------------
    def embed_block(self, block: ContextBlock, side: str) -> np.ndarray:
        """Embedding of one context block from ``retrieval.features.context_block``."""
        u = self.frame_basis[side]
        b1 = np.asarray(block.stft, dtype=np.float64).reshape(-1, u.shape[0]) @ u
        e1 = np.sqrt(self.alpha_stft) * (b1.ravel() @ self.stft_basis[side])
        e2 = np.sqrt(self.alpha_chroma) * (np.asarray(block.chroma, dtype=np.float64) @ self.chroma_basis[side])
        return np.concatenate([e1, e2]).astype(np.float32)

    # ---- corpus side ----------------------------------------------------------------
    def embed_positions(self, features: Features, positions: np.ndarray, side: str,
                        cfg: SearchConfig) -> np.ndarray:
        """Embeddings of the ``side`` context at each position (features at phase 0).

        Equal to ``embed_block(context_block(features, edge, side))`` for every position,
        computed in batches: every frame once through ``U``, then per batch one gather of
        the raw frame rows and one product with ``V`` whose rows carry ``sqrt(w_j)``; the
        side's ``1/n_k`` scales the 64 + 64 outputs rather than the 1152 + 1644 inputs.
        """
        if features.phase != 0:
            raise ValueError("corpus embeddings need features computed at phase 0")
        n1, n2 = _frames_used(cfg)
        w1, w2 = context_weights(cfg)
        u = self.frame_basis[side].astype(np.float32)
        r = u.shape[1]
        d1 = self.stft_basis[side].shape[1]
        v1 = (np.sqrt(self.alpha_stft) * self.stft_basis[side].reshape(n1, r, d1)
              * np.sqrt(w1[:n1])[:, None, None]).reshape(n1 * r, d1).astype(np.float32)
        v2 = (np.sqrt(self.alpha_chroma) * self.chroma_basis[side].reshape(n2, 12, -1)
              * np.sqrt(w2[:n2])[:, None, None]).reshape(n2 * 12, -1).astype(np.float32)
        reduced = np.ascontiguousarray(features.stft @ u)  # (T, r): every frame once through U
        chroma = np.ascontiguousarray(features.chroma, dtype=np.float32)
        energy1 = np.einsum("ij,ij->i", features.stft, features.stft, dtype=np.float64)
        energy2 = np.einsum("ij,ij->i", chroma, chroma, dtype=np.float64)
        edges, step = _edges(positions, side, cfg)
        j1, j2 = step * np.arange(n1), step * np.arange(n2)
        out = np.zeros((len(positions), self.dim), dtype=np.float32)
        for lo in range(0, len(positions), _CHUNK):
            e = edges[lo:lo + _CHUNK, None]
            rows1, rows2 = e + j1[None, :], e + j2[None, :]
            hi = lo + len(e)
            out[lo:hi, :d1] = (reduced[rows1].reshape(len(e), -1) @ v1) * _inverse_norm(energy1[rows1] @ w1[:n1])
            out[lo:hi, d1:] = (chroma[rows2].reshape(len(e), -1) @ v2) * _inverse_norm(energy2[rows2] @ w2[:n2])
        return out

    # ---- storage --------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """npz through a temporary file and os.replace."""
        path = Path(path)
        arrays = {}
        for side in SIDES:  # float32: the embeddings are float32 anyway
            arrays[f"{side}_frame_basis"] = self.frame_basis[side].astype(np.float32)
            arrays[f"{side}_stft_basis"] = self.stft_basis[side].astype(np.float32)
            arrays[f"{side}_chroma_basis"] = self.chroma_basis[side].astype(np.float32)
        arrays["alphas"] = np.array([self.alpha_stft, self.alpha_chroma])
        arrays["explained_keys"] = np.array(sorted(self.explained))
        arrays["explained_values"] = np.array([self.explained[k] for k in sorted(self.explained)])
        if self.chroma_filterbank is not None:
            arrays["chroma_filterbank"] = np.asarray(self.chroma_filterbank, dtype=np.float32)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "ContextPCA":
        path = Path(path)
        if not path.exists():
            raise SimDPSError(f"{path}: missing; rebuild the index with `simdps-index build --rebuild`")
        try:
            return cls._load(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise SimDPSError(f"{path}: damaged, not the PCA file this index wrote ({type(exc).__name__}); "
                              "rebuild the index with `simdps-index build --rebuild`") from None

    @classmethod
    def _load(cls, path: Path) -> "ContextPCA":
        with np.load(path, allow_pickle=False) as z:
            alphas = z["alphas"]
            return cls(
                frame_basis={s: z[f"{s}_frame_basis"] for s in SIDES},
                stft_basis={s: z[f"{s}_stft_basis"] for s in SIDES},
                chroma_basis={s: z[f"{s}_chroma_basis"] for s in SIDES},
                alpha_stft=float(alphas[0]), alpha_chroma=float(alphas[1]),
                explained=dict(zip(z["explained_keys"].tolist(), z["explained_values"].tolist())),
                chroma_filterbank=z["chroma_filterbank"] if "chroma_filterbank" in z.files else None,
            )


def fit_pca(samples: list[Features], config: IndexConfig) -> ContextPCA:
    """Fit ``U``, ``V_1``, ``V_2`` per side on the phase-0 features of sample excerpts.

    Every whole context side in ``samples`` is used (each excerpt is a few tens of
    seconds of a corpus file). ``U`` is fitted on frames scaled to unit norm, so that loud
    passages do not dominate the basis (blocks are level-normalised too).
    """
    cfg = config.search
    n1, n2 = _frames_used(cfg)
    rows = [f.stft for f in samples if len(f)]
    frames = np.concatenate(rows, axis=0) if rows else np.zeros((0, cfg.n_fft // 2 + 1), np.float32)
    if len(frames) < 2 * config.stft_frame_dims:
        raise SimDPSError("the corpus holds too little audio to fit the index's PCA; "
                          f"add recordings longer than {2 * side_extent(cfg) / cfg.sample_rate:.0f} s")
    norms = np.linalg.norm(frames, axis=1, keepdims=True)
    frame_u, kept_u = _pca_rows(frames / np.maximum(norms, NORM_FLOOR), config.stft_frame_dims, seed=config.seed)
    del frames
    pca = ContextPCA({}, {}, {}, cfg.alpha_stft, cfg.alpha_chroma, {"frame": kept_u},
                     chroma_filterbank=chroma_basis(cfg.sample_rate, cfg.n_fft))
    for side in SIDES:
        stft, chroma = [], []
        for feats in samples:
            positions, has_pre, has_post = grid_positions(_covered(len(feats), cfg), cfg)
            chosen = positions[has_pre if side == "pre" else has_post]
            for _, g1, g2 in _side_blocks(feats, chosen, side, cfg, frame_u):
                stft.append(g1)
                chroma.append(g2)
        if sum(len(g) for g in stft) < 2:
            raise SimDPSError("no corpus excerpt is long enough to fit the index's PCA "
                              f"(each side needs {side_extent(cfg) / cfg.sample_rate:.1f} s); add longer recordings")
        pca.frame_basis[side] = frame_u
        pca.stft_basis[side], pca.explained[f"{side}_stft"] = _pca_rows(
            np.concatenate(stft), config.stft_dims, seed=config.seed)
        pca.chroma_basis[side], pca.explained[f"{side}_chroma"] = _pca_rows(
            np.concatenate(chroma), config.chroma_dims, seed=config.seed)
    for table in (pca.frame_basis, pca.stft_basis, pca.chroma_basis):  # stored as float32
        for side in SIDES:
            table[side] = table[side].astype(np.float32)
    return pca


def _covered(count: int, cfg: SearchConfig) -> int:
    """Samples at 12 kHz that ``count`` phase-0 frames cover: ``n_fft + (count - 1) hop``."""
    return cfg.n_fft + (count - 1) * cfg.hop_length if count else 0


_BLOCK_POSITIONS = 8192  # positions a block of embed_stream embeds (~12 min of audio at the default Lh)


def embed_signal(x12k: np.ndarray, pca: ContextPCA, cfg: SearchConfig) -> TrackEmbeddings:
    """``embed_track(frame_features(x12k))``, with the frame features made block by block
    (:func:`embed_stream` of the whole signal, which is read where it is, not copied)."""
    x12k = np.ascontiguousarray(x12k, dtype=np.float32)
    return _embed(SignalTail.holding(x12k), [], pca, cfg, len(x12k))[0]


def embed_stream(chunks: Iterable[np.ndarray], pca: ContextPCA, cfg: SearchConfig, *,
                 expected_samples: int = 0, dtype=np.float32) -> tuple[TrackEmbeddings, int]:
    """The embeddings of a 12-kHz signal that arrives in consecutive chunks (a file being
    decoded), and the signal's length in samples.

    Positions are embedded in blocks of ``_BLOCK_POSITIONS``, each from the phase-0 frames its
    contexts read and no others (about 2 % of the frames are computed twice). A block is
    embedded as soon as the signal reaches the end of its last post-context, and the samples
    no later block reads are dropped. So the memory is one block's samples and frames plus
    the embeddings (42 MB per hour of audio), not the whole signal (173 MB per hour) nor its
    STFT magnitudes (~350 MB per hour). The result is the same, bit for bit, however the
    signal is cut into chunks. ``expected_samples`` (optional) sizes the output up front.
    ``dtype`` is the embeddings' type: float16 (what the build's shards store) holds them in
    half the memory, each value rounded as ``astype(float16)`` would.
    """
    block_samples = _BLOCK_POSITIONS * cfg.coarse_hop + 2 * side_extent(cfg) + (1 << 20)
    return _embed(SignalTail(min(max(int(expected_samples), 1 << 16), block_samples)), chunks, pca, cfg,
                  expected_samples, dtype)


def _embed(tail: "SignalTail", chunks: Iterable[np.ndarray], pca: ContextPCA, cfg: SearchConfig,
           expected_samples: int, dtype=np.float32) -> tuple[TrackEmbeddings, int]:
    """:func:`embed_stream` of the samples ``tail`` holds followed by ``chunks``."""
    hop, n_fft, lh = cfg.hop_length, cfg.n_fft, cfg.coarse_hop
    span = max(_frames_used(cfg))
    extent = side_extent(cfg)

    def frame_range(block: np.ndarray, total: int | None = None) -> tuple[int, int]:
        """Frames ``[first, last)`` the contexts of ``block``'s positions read (of ``total``, when known)."""
        first = max(0, (int(block[0]) - n_fft) // hop - (span - 1))  # a pre-context's farthest frame
        last = int(block[-1]) // hop + span  # a post-context's farthest frame, exclusive
        return first, last if total is None else min(total, last)

    def embed_block(block: np.ndarray, has_pre: np.ndarray, has_post: np.ndarray, rows: slice,
                    first: int, last: int) -> None:
        feats = frame_features(tail.read(first * hop, (last - 1) * hop + n_fft), cfg)  # rows first..last-1
        for side, has, out in (("pre", has_pre, pre), ("post", has_post, post)):
            if has.any():
                out[rows][has] = pca.embed_positions(feats, block[has] - first * hop, side, cfg)

    per_block = _BLOCK_POSITIONS
    pre = _Rows(int(expected_samples) // lh + 2, pca.dim, dtype)
    post = _Rows(len(pre.data), pca.dim, dtype)
    done = 0  # blocks embedded while the signal streams in
    for chunk in chunks:
        tail.append(chunk)
        while True:  # every block whose positions all have both contexts in the signal by now
            block = np.arange(done * per_block, (done + 1) * per_block, dtype=np.int64) * lh
            if tail.end < int(block[-1]) + extent:
                break
            first, last = frame_range(block)  # the whole last context is here
            pre.fit((done + 1) * per_block)
            post.fit((done + 1) * per_block)
            embed_block(block, block >= extent, np.ones(per_block, dtype=bool),
                        slice(done * per_block, (done + 1) * per_block), first, last)
            done += 1
            tail.drop_before(frame_range(block + per_block * lh)[0] * hop)  # what the next block reads on
    # The rest, as the whole signal's length now sets which sides fit.
    total = n_frames(tail.end, cfg)
    positions, has_pre, has_post = grid_positions(_covered(total, cfg), cfg)
    pre.fit(len(positions))
    post.fit(len(positions))
    for lo in range(done * per_block, len(positions), per_block):
        hi = min(lo + per_block, len(positions))
        if has_pre[lo:hi].any() or has_post[lo:hi].any():
            embed_block(positions[lo:hi], has_pre[lo:hi], has_post[lo:hi], slice(lo, hi),
                        *frame_range(positions[lo:hi], total))
    n = len(positions)
    return TrackEmbeddings(positions, has_pre, has_post, pre.data[:n], post.data[:n]), tail.end


class SignalTail:
    """The latest samples of a signal arriving in chunks: samples ``[base, end)``, dropped from the front.

    :meth:`holding` a whole signal keeps the caller's array as it is, not copied (and never
    writes to it: the tail reads it, and drops samples by slicing it)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.data = np.empty(capacity, dtype=np.float32)
        self.owned = True  # self.data is this tail's own buffer (else the caller's array, all of it held)
        self.base = 0
        self.n = 0

    @classmethod
    def holding(cls, x: np.ndarray) -> "SignalTail":
        tail = cls(0)
        tail.data, tail.owned, tail.n = x, False, len(x)
        return tail

    @property
    def end(self) -> int:
        return self.base + self.n

    def append(self, chunk: np.ndarray) -> None:
        if self.n + len(chunk) > len(self.data):  # grown geometrically: a block may outgrow the capacity
            grown = np.empty(max(self.n + len(chunk), 2 * self.n, self.capacity), dtype=np.float32)
            grown[:self.n] = self.data[:self.n]
            self.data, self.owned = grown, True
        self.data[self.n:self.n + len(chunk)] = chunk
        self.n += len(chunk)

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Samples ``[lo, hi)``: a view, valid until the next append or drop."""
        if lo < self.base or hi > self.end:
            raise ValueError(f"samples [{lo}, {hi}) are not held (only [{self.base}, {self.end}))")
        return self.data[lo - self.base:hi - self.base]

    def drop_before(self, sample: int) -> None:
        k = min(max(0, sample - self.base), self.n)
        if not k:
            return
        if self.owned:  # the rest moved to the front of the same buffer (numpy copies overlaps correctly)
            self.data[:self.n - k] = self.data[k:self.n]
        else:
            self.data = self.data[k:]
        self.base += k
        self.n -= k


class _Rows:
    """A zero-filled (rows, dim) table that grows when asked for more rows."""

    def __init__(self, rows: int, dim: int, dtype=np.float32):
        self.data = np.zeros((max(1, rows), dim), dtype=dtype)

    def fit(self, rows: int) -> None:
        if rows > len(self.data):
            grown = np.zeros((max(rows, 2 * len(self.data)), self.data.shape[1]), dtype=self.data.dtype)
            grown[:len(self.data)] = self.data
            self.data = grown

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.data[rows]


def embed_track(features: Features, pca: ContextPCA, cfg: SearchConfig) -> TrackEmbeddings:
    """Every position of one track (phase-0 features of the whole track at 12 kHz) embedded."""
    positions, has_pre, has_post = grid_positions(_covered(len(features), cfg), cfg)
    pre = np.zeros((len(positions), pca.dim), dtype=np.float32)
    post = np.zeros_like(pre)
    if has_pre.any():
        pre[has_pre] = pca.embed_positions(features, positions[has_pre], "pre", cfg)
    if has_post.any():
        post[has_post] = pca.embed_positions(features, positions[has_post], "post", cfg)
    return TrackEmbeddings(positions, has_pre, has_post, pre, post)


def _side_blocks(features: Features, positions: np.ndarray, side: str, cfg: SearchConfig,
                 frame_basis: np.ndarray):
    """Yield ``(first, b_1 U, b_2)`` for batches of positions: frame-reduced STFT blocks and chroma blocks.

    Rows are ``vec([sqrt(w_1j) X_j U]_j) / n_1`` and ``vec([sqrt(w_2j) C_j]_j) / n_2`` with
    frame ``j`` counted from the position outwards and ``n_k`` the side's weighted norm of
    feature k: features.py's ``context_block`` with the STFT frames reduced through ``U``.
    """
    if features.phase != 0:
        raise ValueError("corpus embeddings need features computed at phase 0")
    n1, n2 = _frames_used(cfg)
    w1, w2 = context_weights(cfg)
    sw1 = np.sqrt(w1[:n1]).astype(np.float32)[None, :, None]
    sw2 = np.sqrt(w2[:n2]).astype(np.float32)[None, :, None]
    reduced = features.stft @ frame_basis.astype(np.float32)  # (T, r): every frame once through U
    energy1 = np.einsum("ij,ij->i", features.stft, features.stft, dtype=np.float64)
    energy2 = np.einsum("ij,ij->i", features.chroma, features.chroma, dtype=np.float64)
    edges, step = _edges(positions, side, cfg)
    j1 = step * np.arange(n1)
    j2 = step * np.arange(n2)
    for lo in range(0, len(positions), _CHUNK):
        e = edges[lo:lo + _CHUNK, None]
        rows1, rows2 = e + j1[None, :], e + j2[None, :]
        g1 = (reduced[rows1] * sw1).reshape(len(e), -1) * _inverse_norm(energy1[rows1] @ w1[:n1])
        g2 = (features.chroma[rows2] * sw2).reshape(len(e), -1) * _inverse_norm(energy2[rows2] @ w2[:n2])
        yield lo, g1, g2


def _edges(positions: np.ndarray, side: str, cfg: SearchConfig) -> tuple[np.ndarray, int]:
    """Frame index of context frame j = 0 at each position, and the direction of j."""
    positions = np.asarray(positions, dtype=np.int64)
    if side == "pre":
        return (positions - cfg.n_fft) // cfg.hop_length, -1
    return positions // cfg.hop_length, 1


def _inverse_norm(sq_norm: np.ndarray) -> np.ndarray:
    """``1 / n`` per row as a column, ``n = sqrt(sum_j w_kj ||F_j||^2)`` the side's weighted norm
    (features.py: every block is scaled to unit weighted norm; silent sides, n <= NORM_FLOOR, are not)."""
    norm = np.sqrt(sq_norm)
    return np.where(norm > NORM_FLOOR, 1.0 / np.maximum(norm, NORM_FLOOR), 1.0).astype(np.float32)[:, None]


def _pca_rows(x: np.ndarray, k: int, *, oversample: int = 16, iterations: int = 6,
              seed: int = 0) -> tuple[np.ndarray, float]:
    """Top-``k`` principal directions (columns) of the centred rows of ``x``, and the variance kept.

    Randomized subspace iteration on the data matrix (Halko, Martinsson & Tropp 2011,
    alg. 4.4) then Rayleigh-Ritz: ``iterations`` products ``X^T (X Q)`` with a thin ``Q``.
    Cheaper than forming the d x d covariance (d = 2304 for the STFT blocks) and far
    cheaper than a full LAPACK eigh of it on a busy 2-core machine.
    """
    x = np.asarray(x, dtype=np.float32)
    x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    n, d = x.shape
    k = min(k, d)
    total = float(np.einsum("ij,ij->", x, x, dtype=np.float64))
    width = min(d, k + oversample)
    rng = np.random.default_rng(seed)
    q = _orthonormal(x.T @ (x @ rng.standard_normal((d, width)).astype(np.float32)))
    for _ in range(iterations):
        q = _orthonormal(x.T @ (x @ q.astype(np.float32)))
    b = (x @ q.astype(np.float32)).astype(np.float64)
    vals, small = _small_eigh(b.T @ b)
    order = np.argsort(vals)[::-1][:k]
    kept = float(np.clip(vals[order], 0, None).sum() / total) if total > 0 else 1.0
    return np.ascontiguousarray(q @ small[:, order]), kept


def _orthonormal(y: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the columns of ``y`` via the eigen-decomposition of its Gram matrix
    (stable enough after the normalisation here, and far cheaper than Householder QR of a tall matrix)."""
    y = np.asarray(y, dtype=np.float64)
    y = y / np.maximum(np.linalg.norm(y, axis=0, keepdims=True), 1e-300)
    vals, vecs = _small_eigh(y.T @ y)
    vals = np.maximum(vals, vals.max() * 1e-12)
    return y @ (vecs / np.sqrt(vals))


def _small_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """eigh of a small matrix on one BLAS thread: with threads, OpenBLAS takes ~60x longer
    on a busy machine for an 80 x 80 matrix (measured 230 ms vs 3.6 ms)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn (librosa)
        return np.linalg.eigh(a)
    with threadpool_limits(1):
        return np.linalg.eigh(a)
