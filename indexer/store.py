"""FAISS vector store: index structure from a factory string, ids = Parquet row ids.

Vectors are compared by inner product (``METRIC``): the search ranks corpus vectors by
``<e_q, e_x>``, from which ``retrieval/index_search.py`` forms its estimate of the side's
``a_1 d_1^2 + a_2 d_2^2`` (see ``indexer/embed.py`` for why not the L2 distance).

The structure is a FAISS ``index_factory`` string stored with the index. By default it is
chosen from the number of vectors, following FAISS's "Guidelines to choose an index":
exact ``Flat`` for small corpora; above ``flat_max_vectors``, ``IVF<nlist>,PQ<m>x<bits>``
(see :func:`choose_factory`), whose approximate distances our own exact re-score from audio
then refines (the role FAISS's ``RFlat`` plays, without storing float vectors). Any factory
string can be passed instead.

Indexes without their own id storage (Flat, HNSW, PQ) are wrapped in ``IDMap2`` so that
every FAISS id is the row id of the position in ``positions.parquet``.

On disk each index is FAISS's own serialisation streamed through zstd (``pyarrow``'s codec):
the 8-byte ids FAISS keeps per vector are increasing within each inverted list and shrink to
about 2 bytes, the codes stay as they are (10-h benchmark: 24 -> 17.9 bytes a vector with
the default 16-byte codes, plus the centroids). :class:`VectorLookup` gives back the stored (quantised) vector of
any id, which the search uses to complete candidates that only one side's ANN returned.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from simdps.atomic import atomic_path
from simdps.errors import SimDPSError

__all__ = [
    "choose_factory", "new_index", "train_index", "add_vectors", "remove_id_ranges",
    "set_search_params", "search_best", "write_index_atomic", "read_index", "is_ivf", "ivf_lists", "configure_threads",
    "METRIC", "VectorLookup",
]

METRIC = faiss.METRIC_INNER_PRODUCT
_CODEC = "zstd"

# STACK.md: exact L2 on small query batches is 10-20x faster with BLAS kicking in late.
faiss.cvar.distance_compute_blas_threshold = 20


def configure_threads(n: int | None) -> None:
    """Use ``n`` OpenMP threads in FAISS (None: leave FAISS's default)."""
    if n:
        faiss.omp_set_num_threads(int(n))


def choose_factory(n_vectors: int, dim: int, *, flat_max_vectors: int = 100_000, pq_m: int = 32,
                   pq_nbits: int = 4) -> str:
    """The default structure for ``n_vectors`` of dimension ``dim``.

    Flat below ``flat_max_vectors`` (exact; 4 dim + 8 bytes a vector). Above it, IVF-PQ:
    ``pq_m`` sub-quantizers of ``pq_nbits`` bits (``pq_m * pq_nbits / 8`` bytes) plus the
    id per vector (8 bytes in memory, ~2 on disk), with nlist ~ 4 sqrt(N) lists (a power of
    two, in [64, 65536], at most N / 39 so every centroid trains on >= 39 points; FAISS's
    guidelines say 4 to 16 sqrt(N)), and an HNSW coarse quantizer from 8192 lists on.
    The PQ codes encode each vector's residual from its list's centroid, so finer lists
    mean finer codes: on the 10-h benchmark (415 k vectors a side) 2048 lists instead of
    1024 raised recall@10 from 0.92 to 0.95 at 16 re-scored candidates, for 1 MB more of
    centroids and ~8 s more CPU of k-means per side (docs/PERFORMANCE.md).
    """
    if n_vectors <= flat_max_vectors:
        return "Flat"
    if dim % pq_m:
        raise SimDPSError(f"the IVF-PQ structure a corpus of this size gets needs the embedding width ({dim}) "
                          f"to be a multiple of {pq_m}: pass a --factory for {dim}-d vectors (the embeddings "
                          f"made so far are kept), or --rebuild with --dims that add up to a multiple of {pq_m}")
    nlist = 2 ** round(math.log2(4 * math.sqrt(n_vectors)))
    nlist = max(64, min(65536, nlist))
    while nlist > 64 and n_vectors < 39 * nlist:
        nlist //= 2
    pq = f"PQ{pq_m}" if pq_nbits == 8 else f"PQ{pq_m}x{pq_nbits}"
    quantizer = "_HNSW32" if nlist >= 8192 else ""
    return f"IVF{nlist}{quantizer},{pq}"


def new_index(factory: str, dim: int) -> faiss.Index:
    """An empty index from ``factory``; id-less structures are wrapped in IDMap2."""
    try:
        index = faiss.index_factory(dim, factory, METRIC)
    except RuntimeError as exc:
        raise SimDPSError(f"FAISS cannot build index {factory!r} for {dim}-d vectors "
                          f"({str(exc).strip().splitlines()[-1]}); pass a valid --factory string") from None
    if is_ivf(index):
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        if hasattr(ivf, "do_polysemous_training"):
            # The factory turns on polysemous training (Hamming-filter codes), which we never
            # search with: it made IVF-PQ training 7x slower (11 s vs 1.5 s per 32k vectors).
            ivf.do_polysemous_training = False
    elif not factory.startswith("IDMap"):
        index = faiss.IndexIDMap2(index)
    return index


def is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def train_index(index: faiss.Index, sample: np.ndarray, *, seed: int = 0) -> None:
    """Train (k-means, PQ codebooks) on ``sample`` if the structure needs it."""
    if index.is_trained:
        return
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    ivf = faiss.extract_index_ivf(index) if is_ivf(index) else None
    if ivf is not None and sample.shape[0] < ivf.nlist:
        raise SimDPSError(f"{sample.shape[0]} vectors cannot train {ivf.nlist} IVF lists; "
                          "use a smaller IVF or the default factory for this corpus size")
    if ivf is not None:
        ivf.cp.seed = seed
        pq = getattr(faiss.downcast_index(ivf), "pq", None)
        if pq is not None:
            # PQ codebooks on 64 points a centroid rather than FAISS's 256: for 8-bit codes (256
            # centroids a sub-quantizer) a third of the training time, which the IVF k-means
            # dominates then; 4-bit codes (16 centroids) train on fewer points either way.
            pq.cp.max_points_per_centroid = 64
            pq.cp.seed = seed
    index.train(sample)


def add_vectors(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                       np.ascontiguousarray(ids, dtype=np.int64))


def remove_id_ranges(index: faiss.Index, ranges: list[tuple[int, int]]) -> bool:
    """Remove ids in each ``[first, last)``; False if the structure cannot remove (HNSW)."""
    if not ranges:
        return True
    ids = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ranges])
    try:
        index.remove_ids(faiss.IDSelectorBatch(ids))
    except RuntimeError:
        return False
    return True


def set_search_params(index: faiss.Index, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Search-time knobs where the structure has them (IVF nprobe, HNSW efSearch)."""
    ps = faiss.ParameterSpace()
    if nprobe is not None and is_ivf(index):
        ps.set_index_parameter(index, "nprobe", int(nprobe))
    if ef_search is not None and "HNSW" in _describe(index):
        ps.set_index_parameter(index, "efSearch", int(ef_search))


def ivf_lists(index: faiss.Index) -> tuple[int | None, int | None]:
    """``(nlist, nprobe)`` of an IVF index, ``(None, None)`` for other structures."""
    if not is_ivf(index):
        return None, None
    ivf = faiss.extract_index_ivf(index)
    return int(ivf.nlist), int(ivf.nprobe)


def search_best(index: faiss.Index, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest inner products with one query ``vector``: ``(similarities, ids)``, 1-D,
    in no particular order (the same set ``index.search`` returns, ties aside).

    For IVF structures, every vector of the probed lists comes back from FAISS's range search
    and the best ``k`` are picked with ``np.argpartition``: FAISS's search keeps them in a
    heap, which at the thousands of neighbours a query asks for costs more than the scan
    (10-h benchmark, k = 8192 of ~26 k scanned: 3.6 against 5.8 ms a side; the two
    converge when the probed lists hold 25x k). Other structures, and fast-scan codes (whose
    search ranks by 8-bit look-up tables that their range search does not use), use
    ``index.search``.
    """
    x = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
    if is_ivf(index) and not isinstance(faiss.downcast_index(faiss.extract_index_ivf(index)),
                                        faiss.IndexIVFFastScan):
        _, sims, ids = index.range_search(x, -math.inf)
        if len(sims) > k:
            best = np.argpartition(sims, len(sims) - k)[len(sims) - k:]
            sims, ids = sims[best], ids[best]
        return sims, ids
    sims, ids = index.search(x, k)
    keep = ids[0] >= 0  # FAISS pads with -1 when it finds fewer than k
    return sims[0][keep], ids[0][keep]


def _describe(index: faiss.Index) -> str:
    idx = faiss.downcast_index(index)
    names = [type(idx).__name__]
    while hasattr(idx, "index") and idx.index is not None:
        idx = faiss.downcast_index(idx.index)
        names.append(type(idx).__name__)
    return ",".join(names)


def write_index_atomic(index: faiss.Index, path: str | Path) -> None:
    """FAISS's serialisation, streamed through zstd into a temporary file, then os.replace."""
    with atomic_path(path) as tmp, pa.CompressedOutputStream(str(tmp), _CODEC) as out:
        faiss.write_index(index, faiss.PyCallbackIOWriter(out.write))


def read_index(path: str | Path) -> faiss.Index:
    """Load an index written by :func:`write_index_atomic` (fully into memory)."""
    path = Path(path)
    if not path.exists():
        raise SimDPSError(f"{path}: index file missing; rebuild the index with `simdps-index build --rebuild`")
    try:
        with pa.CompressedInputStream(pa.OSFile(str(path)), _CODEC) as f:
            return faiss.read_index(faiss.PyCallbackIOReader(f.read))
    except (RuntimeError, OSError, pa.ArrowException) as exc:
        raise SimDPSError(f"{path}: unreadable FAISS index ({str(exc).strip().splitlines()[-1]}); "
                          "rebuild it with `simdps-index build --rebuild`") from None


class VectorLookup:
    """The stored vectors of given ids: exact for Flat/HNSW storage, decoded codes for IVF.

    FAISS finds a vector by id only through a direct map, which IVF indexes do not keep
    (its hash-table form would cost ~40 bytes a vector). Here the id -> (list, offset) map
    is a dense array over the row ids, filled once from the inverted lists' own id arrays
    on first use (6 bytes a row with up to 65 536 lists); for ``IDMap`` wrappers it is the
    inverse of their id array. Other structures (pre-transforms such as OPQ or PCA factories,
    and IVF fast-scan indexes, whose ``reconstruct_from_offset`` crashes FAISS 1.15 once
    the index has been read from a file) have no lookup: :attr:`available` is False and
    :meth:`get` reports every id missing.
    """

    def __init__(self, index: faiss.Index):
        self._index = index
        self._kind: str | None = None
        self._built = False
        self._lock = threading.Lock()  # searches may run in several threads; the table is built once

    @property
    def available(self) -> bool:
        """Whether this structure can give vectors back at all."""
        self._ensure()
        return self._kind is not None

    def _ensure(self) -> None:
        with self._lock:
            if not self._built:
                self._build()
                self._built = True

    def _build(self) -> None:
        index = faiss.downcast_index(self._index)
        wrapped = isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2))
        if wrapped and isinstance(faiss.downcast_index(index.index), faiss.IndexPreTransform):
            return  # vectors live in the transformed space: none to give back
        if wrapped:
            ids = faiss.vector_to_array(index.id_map).astype(np.int64)
            self._inner = index.index
            self._slot = _dense_inverse(ids, np.arange(len(ids), dtype=np.int64), np.int64)
            self._kind = "idmap"
        elif isinstance(index, faiss.IndexIVFFastScan):
            return  # see the class docstring
        elif isinstance(index, faiss.IndexIVF) and index.invlists is not None:
            invlists = index.invlists
            parts = [(faiss.rev_swig_ptr(invlists.get_ids(l), invlists.list_size(l)).copy(), l)
                     for l in range(index.nlist) if invlists.list_size(l)]
            ids = np.concatenate([p for p, _ in parts]) if parts else np.zeros(0, np.int64)
            lists = np.concatenate([np.full(len(p), l) for p, l in parts]) if parts else np.zeros(0, np.int64)
            offsets = np.concatenate([np.arange(len(p)) for p, _ in parts]) if parts else np.zeros(0, np.int64)
            self._list = _dense_inverse(ids, lists, np.uint16 if index.nlist <= 65536 else np.int32, fill=0)
            self._offset = _dense_inverse(ids, offsets, np.int32)  # -1: no such id
            self._ivf = index
            self._kind = "ivf"

    def get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors (n, d) float32, found (n,) bool)``; rows of ids not stored are zeros."""
        self._ensure()
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((len(ids), self._index.d), dtype=np.float32)
        found = np.zeros(len(ids), dtype=bool)
        if self._kind == "idmap":
            inside = (ids >= 0) & (ids < len(self._slot))
            slot = np.where(inside, self._slot[np.where(inside, ids, 0)], -1) if len(self._slot) else np.full(len(ids), -1)
            found = slot >= 0
            if found.any():
                out[found] = self._inner.reconstruct_batch(slot[found])
        elif self._kind == "ivf":
            inside = (ids >= 0) & (ids < len(self._offset))
            found = inside.copy()
            found[inside] = self._offset[ids[inside]] >= 0
            for i in np.flatnonzero(found):
                self._ivf.reconstruct_from_offset(int(self._list[ids[i]]), int(self._offset[ids[i]]),
                                                  faiss.swig_ptr(out[i]))
        return out, found


def _dense_inverse(ids: np.ndarray, values: np.ndarray, dtype, fill=-1) -> np.ndarray:
    """``table[ids[i]] = values[i]`` over ``0 .. max(ids)``, ``fill`` elsewhere."""
    n = int(ids.max()) + 1 if len(ids) else 0
    table = np.full(n, fill, dtype=dtype)
    table[ids] = values
    return table
