"""The FAISS store (indexer/store.py): compressed files, stored vectors by id, and how the
search completes a candidate that only one side's ANN returned."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from simdps.config import SearchConfig
from simdps.errors import SimDPSError
from simdps.indexer import store
from simdps.retrieval.features import ContextBlock
from simdps.retrieval.index_search import AnnQuery, Coarse, TrackTable, complete_sides, side_distances

DIM = 32


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIM)).astype(np.float32)
    return centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)


def _filled(factory: str, ids: np.ndarray, x: np.ndarray) -> faiss.Index:
    index = store.new_index(factory, DIM)
    store.train_index(index, x)
    store.add_vectors(index, x, ids)
    return index


@pytest.mark.parametrize("factory", ["Flat", "IVF8,PQ8"])
def test_index_files_round_trip_compressed_and_atomically(factory, tmp_path):
    x = _vectors(3000)
    ids = np.arange(3000, dtype=np.int64) * 3 + 7  # sparse row ids, as after removals
    index = _filled(factory, ids, x)
    path = tmp_path / "pre.faiss.zst"
    store.write_index_atomic(index, path)
    back = store.read_index(path)
    assert back.ntotal == index.ntotal
    q = x[:5] + 0.01
    np.testing.assert_array_equal(back.search(q, 20)[1], index.search(q, 20)[1])
    assert [p.name for p in tmp_path.iterdir()] == ["pre.faiss.zst"]  # no temporary left
    raw = faiss.serialize_index(index).nbytes
    assert path.stat().st_size < raw  # the ids, increasing within lists, compress


def test_a_damaged_index_file_is_a_clear_error(tmp_path):
    path = tmp_path / "pre.faiss.zst"
    path.write_bytes(b"not an index at all")
    with pytest.raises(SimDPSError, match="rebuild"):
        store.read_index(path)
    with pytest.raises(SimDPSError, match="missing"):
        store.read_index(tmp_path / "post.faiss.zst")


@pytest.mark.parametrize("factory", ["Flat", "IVF16,PQ8x4", "IVF16,Flat", "IVF16,PQ8x4fs"])
@pytest.mark.parametrize("k", [1, 100, 5000])
def test_search_best_returns_what_faiss_search_returns(factory, k):
    x = _vectors(4000, seed=2)
    ids = np.arange(4000, dtype=np.int64) * 2 + 3
    index = _filled(factory, ids, x)
    store.set_search_params(index, nprobe=4)
    q = x[17] + 0.05
    sims, got = store.search_best(index, q, k)
    want_sims, want = index.search(q[None, :], k)
    want_sims, want = want_sims[0][want[0] >= 0], want[0][want[0] >= 0]  # k beyond the probed lists: -1 padded
    assert sorted(got.tolist()) == sorted(want.tolist())
    np.testing.assert_allclose(np.sort(sims), np.sort(want_sims), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("factory", ["Flat", "HNSW8", "IVF8,PQ8", "IVF8,Flat"])
def test_vector_lookup_gives_back_the_stored_vector_of_each_id(factory):
    x = _vectors(2000, seed=1)
    ids = np.arange(2000, dtype=np.int64) * 2 + 5
    index = _filled(factory, ids, x)
    lookup = store.VectorLookup(index)
    want = np.array([5, 7, 4003, 6, -1, 10**9, 2001], dtype=np.int64)  # 6, -1, 10**9 are not stored
    got, found = lookup.get(want)
    assert found.tolist() == [True, True, True, False, False, False, True]
    assert not got[~found].any()
    rows = (want[found] - 5) // 2
    if "PQ" in factory:  # decoded codes: what FAISS itself reconstructs through a direct map
        ivf = faiss.extract_index_ivf(index)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        np.testing.assert_allclose(got[found], np.stack([index.reconstruct(int(i)) for i in want[found]]), atol=1e-5)
        assert np.mean(np.sum((got[found] - x[rows]) ** 2, 1)) < 0.5 * np.mean(np.sum(x[rows] ** 2, 1))
    else:
        np.testing.assert_allclose(got[found], x[rows], atol=1e-6)


def test_complete_sides_reads_the_missing_side_from_the_index_and_reranks():
    """A candidate only the pre side's ANN returned gets its post-context distance from the
    stored vector: the value an exhaustive search of that side would have given it."""
    cfg = SearchConfig()
    lh = cfg.coarse_hop
    rng = np.random.default_rng(3)
    n = 200  # one track of 200 positions, both sides stored for every row
    vec = {s: rng.standard_normal((n, DIM)).astype(np.float32) for s in ("pre", "post")}
    index = {s: _filled("Flat", np.arange(n, dtype=np.int64), vec[s]) for s in vec}
    lookups = {s: store.VectorLookup(index[s]) for s in vec}
    block = ContextBlock(np.full(4, 0.5, np.float32), np.zeros(3, np.float32))  # N_q = 1
    query = {s: rng.standard_normal(DIM).astype(np.float32) for s in vec}
    tracks = TrackTable(np.array([1]), np.array([0]), np.array([n]), np.array([22050]), np.array([10**6]),
                        ["h"], ["/x.flac"])
    # The query's contexts fall short of whole ones (its gap is near its track's edges), so a
    # candidate whose vector is missing keeps its bound rather than going last.
    short = type("Ctx", (), {"pre_extent": lh, "post_extent": lh})()
    ann = AnnQuery(context=short, lead=100, span=5 * lh)

    def exact(side, row):
        return float(side_distances(np.array([vec[side][row] @ query[side]]), block, cfg)[0])

    # candidate A: pre at row 10 known, post (row 15) missing; B: both known; C: pre row 198 -> post beyond the track
    a = Coarse(0, 10 * lh + 100, exact("pre", 10), None, bound=exact("pre", 10) + 0.0)
    b = Coarse(0, 40 * lh + 100, exact("pre", 40), exact("post", 45), bound=exact("pre", 40) + exact("post", 45))
    c = Coarse(0, 198 * lh + 100, exact("pre", 198), None, bound=exact("pre", 198) - 50.0)
    out = complete_sides([a, b, c], tracks, ann, lh, lookups, query, {"pre": block, "post": block}, cfg)
    assert a.d_post == pytest.approx(exact("post", 15), rel=1e-5)
    assert a.bound == pytest.approx(exact("pre", 10) + exact("post", 15), rel=1e-5)
    assert c.d_post is None and c.bound == pytest.approx(exact("pre", 198) - 50.0)  # no vector: bound kept
    assert out == sorted([a, b, c], key=lambda k: k.bound) and out[0] is c


def test_a_structure_without_a_lookup_keeps_the_bounds_of_one_sided_candidates(tmp_path):
    """A pre-transformed IVF (e.g. an OPQ or PCA factory) cannot give vectors back: the
    candidates keep the merge's bounds instead of all being taken for context-less ones."""
    for factory in ("PCAR16,Flat", "PCAR16,IVF8,Flat"):  # one wrapped in IDMap2, one IVF inside the transform
        index = store.new_index(factory, DIM)
        store.train_index(index, _vectors(2000))
        store.add_vectors(index, _vectors(500), np.arange(500, dtype=np.int64))
        other = store.VectorLookup(index)
        assert not other.available and not other.get(np.array([3]))[1].any()
    # IVF fast-scan: FAISS's reconstruct_from_offset segfaults on an index read back from a file
    index = store.new_index("IVF8,PQ16x4fs", DIM)
    store.train_index(index, _vectors(2000))
    store.add_vectors(index, _vectors(500), np.arange(500, dtype=np.int64))
    store.write_index_atomic(index, tmp_path / "fs.faiss.zst")
    read_back = store.VectorLookup(store.read_index(tmp_path / "fs.faiss.zst"))
    assert not read_back.available and not read_back.get(np.array([3, 7]))[1].any()
    lookup = other
    cfg = SearchConfig()
    tracks = TrackTable(np.array([1]), np.array([0]), np.array([500]), np.array([22050]), np.array([10**6]),
                        ["h"], ["/x.flac"])
    block = ContextBlock(np.full(4, 0.5, np.float32), np.zeros(3, np.float32))
    whole = type("Ctx", (), {"pre_extent": 10**6, "post_extent": 10**6})()  # whole contexts on both sides
    ann = AnnQuery(context=whole, lead=0, span=2 * cfg.coarse_hop)
    c = Coarse(0, 5 * cfg.coarse_hop, 1.5, None, bound=2.5)
    out = complete_sides([c], tracks, ann, cfg.coarse_hop, {"post": lookup}, {"post": np.zeros(DIM, np.float32)},
                         {"post": block}, cfg)
    assert out == [c] and c.bound == 2.5 and c.d_post is None
