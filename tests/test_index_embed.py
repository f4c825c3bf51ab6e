"""Context embeddings of the index (indexer/embed.py): one vector per side and position."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from conftest import piano_like

from simdps.config import SearchConfig
from simdps.errors import SimDPSError
from simdps.indexer.config import IndexConfig
from simdps.indexer.embed import (ContextPCA, embed_signal, embed_stream, embed_track, fit_pca, grid_positions,
                                  side_extent)
from simdps.retrieval.features import context_block, frame_features
from simdps.retrieval.index_search import side_distances

CFG = SearchConfig()
SMALL = IndexConfig(stft_dims=32, chroma_dims=16, pca_train_positions=2000)


@pytest.fixture(scope="module")
def signals():
    return [piano_like(25.0, CFG.sample_rate, seed=s).astype(np.float32) for s in range(3)]


@pytest.fixture(scope="module")
def fitted(signals):
    feats = [frame_features(x, CFG) for x in signals]
    return feats, fit_pca(feats, SMALL)


def _edge(side: str, position: int) -> int:
    return (position - CFG.n_fft) // CFG.hop_length if side == "pre" else position // CFG.hop_length


def test_grid_has_one_row_per_coarse_hop_and_marks_the_sides_that_fit():
    extent = side_extent(CFG)
    assert extent == CFG.n_fft + 136 * CFG.hop_length  # 137 chroma frames of 3 s context
    positions, has_pre, has_post = grid_positions(100_000, CFG)
    assert np.array_equal(positions, np.arange(0, 100_001, CFG.coarse_hop))
    assert np.array_equal(has_pre, positions >= extent)
    assert np.array_equal(has_post, positions + extent <= 100_000)
    with pytest.raises(SimDPSError, match="multiple of the frame hop"):
        grid_positions(100_000, SearchConfig(coarse_hop=1000))


def test_corpus_embeddings_equal_the_projected_context_blocks_of_eq10(fitted):
    feats, pca = fitted
    emb = embed_track(feats[0], pca, CFG)
    rng = np.random.default_rng(0)
    for side, valid, table in (("pre", emb.has_pre, emb.pre), ("post", emb.has_post, emb.post)):
        rows = rng.choice(np.flatnonzero(valid), 6, replace=False)
        for i in rows:
            block = context_block(feats[0], _edge(side, int(emb.positions[i])), side, CFG)
            np.testing.assert_allclose(table[i], pca.embed_block(block, side), atol=2e-5)
        assert not table[~valid].any()


def test_a_signal_embedded_block_by_block_gives_the_whole_tracks_embeddings(signals, fitted, monkeypatch):
    """The build embeds a file from its 12-kHz signal in blocks of positions, each with only the
    frames its contexts read (memory flat in the file's length): the same vectors."""
    import simdps.indexer.embed as embed

    _, pca = fitted
    for x in (signals[0], signals[1][:200_003]):  # a length off the frame and position grids too
        whole = embed_track(frame_features(x, CFG), pca, CFG)
        monkeypatch.setattr(embed, "_BLOCK_POSITIONS", 37)  # 7-8 blocks, the last a short one
        blocked = embed_signal(x, pca, CFG)
        monkeypatch.undo()
        for field in ("positions", "has_pre", "has_post"):
            np.testing.assert_array_equal(getattr(blocked, field), getattr(whole, field))
        np.testing.assert_allclose(blocked.pre, whole.pre, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(blocked.post, whole.post, rtol=1e-5, atol=1e-6)
        assert whole.has_pre.any() and whole.has_post.any()


@pytest.mark.parametrize("expected", [0, 50_000, 400_000])  # output sized from no, a short or a long guess
def test_a_signal_arriving_in_chunks_is_embedded_the_same_bit_for_bit_while_holding_only_a_block(
        signals, fitted, monkeypatch, expected):
    """The build embeds a file while it is decoded: blocks of positions are embedded as soon as
    their contexts have arrived and the samples behind them dropped, whatever the chunks."""
    import simdps.indexer.embed as embed

    _, pca = fitted
    monkeypatch.setattr(embed, "_BLOCK_POSITIONS", 37)  # 25 s: 293 positions, 8 blocks
    x = signals[1][:290_017]
    whole = embed_signal(x, pca, CFG)
    cuts = np.sort(np.random.default_rng(3).choice(len(x), 60, replace=False))
    chunks = np.split(x, np.concatenate([[0, 0], cuts]))  # empty chunks too
    held = []
    append = embed.SignalTail.append
    monkeypatch.setattr(embed.SignalTail, "append", lambda tail, c: (append(tail, c), held.append(tail.n)))
    got, n = embed_stream(iter(chunks), pca, CFG, expected_samples=expected)
    assert n == len(x)
    for field in ("positions", "has_pre", "has_post", "pre", "post"):
        np.testing.assert_array_equal(getattr(got, field), getattr(whole, field))
    assert whole.has_pre.sum() > 200 and whole.has_post.sum() > 200
    assert max(held) < len(x) / 2  # a block's contexts (~9 s), not the whole 24 s
    half, _ = embed_stream(iter(chunks), pca, CFG, expected_samples=expected, dtype=np.float16)  # as the build
    assert half.pre.dtype == np.float16
    np.testing.assert_array_equal(half.pre, whole.pre.astype(np.float16))
    np.testing.assert_array_equal(half.post, whole.post.astype(np.float16))


def test_squared_embedding_distance_approximates_the_side_cost_from_below(fitted):
    """||e(a) - e(b)||^2 ~ a1 d1^2 + a2 d2^2 of one side; orthonormal projections only shrink it."""
    feats, pca = fitted
    a, b = embed_track(feats[0], pca, CFG), embed_track(feats[1], pca, CFG)
    rng = np.random.default_rng(1)
    approx, exact = [], []
    for _ in range(60):
        i = int(rng.choice(np.flatnonzero(a.has_pre)))
        j = int(rng.choice(np.flatnonzero(b.has_pre)))
        ba = context_block(feats[0], _edge("pre", int(a.positions[i])), "pre", CFG)
        bb = context_block(feats[1], _edge("pre", int(b.positions[j])), "pre", CFG)
        exact.append(np.sum((ba.stft - bb.stft) ** 2) + np.sum((ba.chroma - bb.chroma) ** 2))
        approx.append(np.sum((a.pre[i] - b.pre[j]) ** 2))
    approx, exact = np.array(approx), np.array(exact)
    assert np.all(approx <= exact * (1 + 1e-4) + 1e-6)
    assert np.median(approx / exact) > 0.3
    assert np.corrcoef(approx, exact)[0, 1] > 0.6


def test_a_copy_at_another_gain_embeds_identically(fitted):
    feats, pca = fitted
    quiet = frame_features(0.3 * piano_like(25.0, CFG.sample_rate, seed=0).astype(np.float32), CFG)
    e_loud, e_quiet = embed_track(feats[0], pca, CFG), embed_track(quiet, pca, CFG)
    np.testing.assert_allclose(e_quiet.pre, e_loud.pre, atol=2e-4)
    np.testing.assert_allclose(e_quiet.post, e_loud.post, atol=2e-4)


def test_pca_round_trips_through_its_file(fitted, tmp_path):
    _, pca = fitted
    pca.save(tmp_path / "pca.npz")
    back = ContextPCA.load(tmp_path / "pca.npz")
    assert back.dim == SMALL.dim == 48
    for side in ("pre", "post"):
        np.testing.assert_array_equal(back.stft_basis[side], pca.stft_basis[side])
        np.testing.assert_array_equal(back.chroma_basis[side], pca.chroma_basis[side])
        np.testing.assert_array_equal(back.frame_basis[side], pca.frame_basis[side])
        # columns are orthonormal (a projection, so distances only shrink)
        v = pca.stft_basis[side]
        np.testing.assert_allclose(v.T @ v, np.eye(v.shape[1]), atol=1e-5)
    assert set(back.explained) == {"frame", "pre_stft", "pre_chroma", "post_stft", "post_chroma"}
    assert all(0 < v <= 1 + 1e-9 for v in back.explained.values())
    assert not list(tmp_path.glob("*.tmp"))


def test_a_file_embedded_into_an_index_uses_the_index_s_chroma_filterbank(fitted, signals, tmp_path, monkeypatch):
    """An incremental build computes a new file's features with the filterbank stored in the
    live index's PCA, not with whatever librosa is installed now (queries use the stored one)."""
    import dataclasses

    import soundfile as sf

    import simdps.retrieval.features as features
    from simdps.indexer.layout import read_shard
    from simdps.indexer.work import FileTask, process_file

    _, pca = fitted
    stored = pca.chroma_filterbank
    assert stored is not None and stored.shape == (CFG.n_fft // 2 + 1, 12)
    other = np.ascontiguousarray(np.roll(stored, 1, axis=1))  # as if another librosa had built the index
    dataclasses.replace(pca, chroma_filterbank=other).save(tmp_path / "pca.npz")
    sf.write(tmp_path / "new.wav", signals[0], CFG.sample_rate, subtype="FLOAT")
    monkeypatch.setattr(features, "_CHROMA_BASES", {})  # this process's filterbank: librosa's until told
    result = process_file(FileTask("new.wav", str(tmp_path / "new.wav"), None, str(tmp_path / "cache"),
                                   str(tmp_path / "pca.npz")), CFG)
    assert result.error is None
    np.testing.assert_array_equal(features.chroma_basis(CFG.sample_rate, CFG.n_fft), other)
    emb, _ = read_shard(next((tmp_path / "cache").glob("*.npz")))  # stored as float16
    expected = embed_track(frame_features(signals[0], CFG), pca, CFG)  # the features on `other`
    features.use_chroma_basis(CFG.sample_rate, CFG.n_fft, stored)
    librosas = embed_track(frame_features(signals[0], CFG), pca, CFG)  # the features on librosa's
    for side in ("pre", "post"):
        got = getattr(emb, side).astype(np.float32)
        np.testing.assert_allclose(got, getattr(expected, side), rtol=2e-3, atol=2e-4)
        assert np.max(np.abs(got - getattr(librosas, side))) > 0.05


def test_too_little_audio_for_the_pca_is_a_clear_error():
    short = [frame_features(piano_like(2.0, CFG.sample_rate).astype(np.float32), CFG)]
    with pytest.raises(SimDPSError, match="add (longer )?recordings"):
        fit_pca(short, SMALL)


def test_inner_product_estimate_ranks_corpus_contexts_closer_to_the_exact_side_cost_than_l2(fitted):
    """side_distances (N_q + a1 + a2 - 2 <e_q, e_x>) against ||e_q - e_x||^2: the L2 form falls short of
    the exact side cost by each corpus block's own dropped energy, which reorders candidates."""
    feats, pca = fitted
    emb = [embed_track(f, pca, CFG) for f in feats]
    for q in (10, 45, 80):
        i = int(np.flatnonzero(emb[0].has_post)[q])
        bq = context_block(feats[0], _edge("post", int(emb[0].positions[i])), "post", CFG)
        exact, estimate, l2 = [], [], []
        for t in (1, 2):
            for j in np.flatnonzero(emb[t].has_post):
                bx = context_block(feats[t], _edge("post", int(emb[t].positions[j])), "post", CFG)
                exact.append(np.sum((bq.stft - bx.stft) ** 2) + np.sum((bq.chroma - bx.chroma) ** 2))
                estimate.append(emb[0].post[i] @ emb[t].post[j])
                l2.append(np.sum((emb[0].post[i] - emb[t].post[j]) ** 2))
        estimate = side_distances(np.array(estimate), bq, CFG)
        rho_ip, rho_l2 = spearmanr(estimate, exact)[0], spearmanr(l2, exact)[0]
        assert rho_ip > 0.8 and rho_ip > rho_l2 + 0.02, (q, rho_ip, rho_l2)
