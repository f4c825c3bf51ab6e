"""Search features and the eq. 10 cost: weights, frame grid, level invariance, fast == literal."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import piano_like

from simdps.config import SearchConfig
from simdps.retrieval.cost import costs_at, grid_costs, query_context, reference_cost
from simdps.retrieval.features import (
    context_block,
    context_frames,
    context_weights,
    frame_features,
    n_frames,
    post_edge_frame,
    pre_edge_frame,
    search_signal,
)

CFG = SearchConfig()


@pytest.fixture(scope="module")
def signals():
    y = search_signal(piano_like(24.0, 22_050, seed=11), 22_050, CFG)
    s = search_signal(piano_like(16.0, 22_050, seed=12), 22_050, CFG)
    return y, s


def test_the_window_is_scipys_periodic_hann():
    import scipy.signal

    from simdps.retrieval.features import _hann

    for n in (256, 1024, 2048):
        np.testing.assert_array_equal(_hann(n), scipy.signal.get_window("hann", n).astype(np.float32))


def test_weights_ramp_as_the_paper_says():
    w1, w2 = context_weights(CFG)
    nc = context_frames(CFG)
    assert nc == (36_000 - 1024) // 256 + 1 == 137  # frames wholly inside Lc = 3 s
    assert w1.shape == w2.shape == (nc,)
    assert w1[0] == w2[0] == 1.0
    # w1 reaches 0 at 0.75 s = 9000 samples: frame 35 (8960 samples) is the last non-zero one.
    assert np.count_nonzero(w1) == 36 and w1[35] == pytest.approx(1 - 8960 / 9000)
    assert w1[10] == pytest.approx(1 - 2560 / 9000)
    # w2 ramps linearly over the full 3 s.
    assert np.all(w2 > 0) and np.allclose(np.diff(w2), -256 / 36_000)
    assert np.all(np.diff(w1) <= 0)


def test_the_shipped_chroma_filterbank_is_librosas_and_spares_its_import():
    """The paper's settings' filterbank ships with the package (librosa's import and the
    filterbank cost ~2 s in every process that searches without an index)."""
    import subprocess
    import sys

    import librosa.filters

    from simdps.retrieval.features import _shipped_chroma_basis

    shipped = _shipped_chroma_basis(12_000, 1024)
    ref = librosa.filters.chroma(sr=12_000, n_fft=1024, tuning=0.0, n_chroma=12).T.astype(np.float32)
    np.testing.assert_array_equal(shipped, ref)
    assert _shipped_chroma_basis(16_000, 1024) is None  # other settings: librosa, as before
    code = ("import sys; from simdps.retrieval.features import chroma_basis; b = chroma_basis(12000, 1024); "
            "print(b.shape, 'librosa' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(513, 12) False"


def test_frames_are_not_centred_and_phase_shifts_them():
    x = piano_like(2.0, 12_000, seed=3).astype(np.float32)
    f0 = frame_features(x, CFG)
    f100 = frame_features(x, CFG, phase=100)
    assert len(f0) == n_frames(len(x), CFG) == (len(x) - 1024) // 256 + 1
    assert f0.stft.shape == (len(f0), 513) and f0.chroma.shape == (len(f0), 12)
    # Frame 7 at phase 100 is the single frame of x[100 + 7*256 : ... + 1024].
    one = frame_features(x[100 + 7 * 256: 100 + 7 * 256 + 1024], CFG)
    assert np.allclose(f100.stft[7], one.stft[0], atol=1e-5)
    assert np.allclose(f100.chroma[7], one.chroma[0], atol=1e-6)
    assert np.allclose(f0.chroma.max(axis=1), 1.0)  # librosa's per-frame inf-norm
    assert pre_edge_frame(1024 + 5 * 256, CFG) == 5 and post_edge_frame(100 + 3 * 256, CFG, phase=100) == 3
    with pytest.raises(ValueError):
        pre_edge_frame(1000, CFG)


def test_stft_magnitude_matches_a_plain_fft():
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    f = frame_features(x, CFG)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)  # periodic Hann
    expect = np.abs(np.fft.rfft(x[512:1536] * window))
    assert np.allclose(f.stft[2], expect, rtol=1e-4, atol=1e-4)


def test_long_signals_are_framed_in_batches_with_the_same_result(monkeypatch):
    import simdps.retrieval.features as features

    x = piano_like(3.0, 12_000, seed=5).astype(np.float32)
    whole = frame_features(x, CFG, phase=37)  # one batch
    monkeypatch.setattr(features, "_CHUNK_FRAMES", 16)  # 132 frames in batches of 16
    batched = frame_features(x, CFG, phase=37)
    assert len(whole) == len(batched) == n_frames(len(x), CFG, phase=37) > 16
    np.testing.assert_array_equal(batched.stft, whole.stft)
    np.testing.assert_array_equal(batched.chroma, whole.chroma)
    assert whole.stft.dtype == whole.chroma.dtype == np.float32
    assert len(frame_features(x[:1000], CFG)) == 0


def test_context_blocks_are_level_invariant():
    x = piano_like(8.0, 12_000, seed=4).astype(np.float32)
    a, b = frame_features(x, CFG), frame_features(0.3 * x, CFG)
    for side, edge in (("pre", 150), ("post", 10)):
        ba, bb = context_block(a, edge, side, CFG), context_block(b, edge, side, CFG)
        assert ba.stft.shape == (36 * 513,) and ba.chroma.shape == (137 * 12,)
        assert np.allclose(ba.stft, bb.stft, atol=1e-6) and np.allclose(ba.chroma, bb.chroma, atol=1e-6)
        assert np.sum(ba.stft**2) == pytest.approx(1.0) and np.sum(ba.chroma**2) == pytest.approx(1.0)


@pytest.mark.parametrize("gap", [(150_000, 150_000 + 15_999), (140_003, 140_003 + 6_001), (3_000, 3_000 + 9_000),
                                 (270_000, 270_000 + 12_345)])
def test_fast_exhaustive_cost_equals_literal_reference(signals, gap):
    y, s = signals
    gs, ge = gap
    assert ge <= len(y)
    query = query_context(y, gs, ge, CFG)
    grid = grid_costs(query, s, CFG)
    assert len(grid) > 100 and np.all(np.diff(grid.starts) == 256)
    rng = np.random.default_rng(gs)
    for i in rng.choice(len(grid), 3, replace=False):
        ref = reference_cost(y, gs, ge, s, int(grid.starts[i]), CFG)
        fast = grid.parts(i)
        assert fast.total == pytest.approx(ref.total, rel=1e-5)
        assert fast.stft == pytest.approx(ref.stft, rel=1e-5)
        assert fast.chroma == pytest.approx(ref.chroma, rel=1e-5)
        assert ref.total == pytest.approx(ref.stft + ref.chroma)
    # Off-grid starts and starts whose context leaves the source (zero there) agree too.
    for t_hat in (12_345, 500, len(s) - ge + gs - 100):
        ref = reference_cost(y, gs, ge, s, t_hat, CFG)
        assert costs_at(query, s, [t_hat], CFG).parts(0).total == pytest.approx(ref.total, rel=1e-5)


@pytest.mark.parametrize("knob, first, second, tol", [
    # strided views (few starts: an index re-score window) against frame-by-frame sums (a whole track)
    ("_STRIDED_MAX", 1 << 40, 0, (1e-12, 1e-12)),
    # one pass over every start against blocks of 50 starts (a long track: bounded memory); float32
    # products over fewer rows may round differently, hence the features' precision
    ("_GRID_BLOCK", 1 << 40, 50, (1e-6, 1e-9)),
])
def test_the_ways_grid_costs_sums_agree(signals, monkeypatch, knob, first, second, tol):
    import simdps.retrieval.cost as cost

    y, s = signals
    if knob == "_GRID_BLOCK":
        monkeypatch.setattr(cost, "_STRIDED_MAX", 0)  # the same frame-by-frame sums in both
    for gs, ge in ((150_000, 150_000 + 15_999), (140_003, 140_003 + 6_001), (6_000, 18_000)):
        query = query_context(y, gs, ge, CFG)
        monkeypatch.setattr(cost, knob, first)
        one = grid_costs(query, s, CFG)
        monkeypatch.setattr(cost, knob, second)
        other = grid_costs(query, s, CFG)
        assert len(one) > 200
        np.testing.assert_array_equal(other.starts, one.starts)
        np.testing.assert_allclose(other.stft, one.stft, rtol=tol[0], atol=tol[1])
        np.testing.assert_allclose(other.chroma, one.chroma, rtol=tol[0], atol=tol[1])


def test_edge_gap_uses_only_the_context_that_exists(signals):
    y, _ = signals
    query = query_context(y, 6_000, 18_000, CFG)  # 0.5 s of audio before the gap
    n_pre = (6_000 - 1024) // 256 + 1
    assert np.count_nonzero(query.weights_pre[1]) == n_pre
    assert query.pre_extent == 1024 + (n_pre - 1) * 256 <= 6_000
    assert np.count_nonzero(query.weights_post[1]) == 137
    start_only = query_context(y, 0, 12_000, CFG)
    assert start_only.pre_extent == 0 and not np.any(start_only.pre.stft)


def test_the_query_itself_costs_zero_and_a_gain_change_does_not_matter(signals):
    y, _ = signals
    gs, ge = 120_000, 140_000
    query = query_context(y, gs, ge, CFG)
    assert costs_at(query, y, [gs], CFG).total[0] < 1e-3
    assert costs_at(query, 0.25 * y, [gs], CFG).total[0] < 1e-3
    assert costs_at(query, y, [gs + 2000], CFG).total[0] > 0.1
