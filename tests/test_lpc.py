"""LPC, the paper's low anchor: two-sided Burg extrapolation with a squared-cosine cross-fade."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import piano_like
from simdps.restore.lpc import LPCConfig, burg_extrapolate, lpc_fill, squared_cosine_fade, stable_burg

SR = 8000


def _tones(n: int, noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.25 * np.sin(2 * np.pi * 660 * t + 1.0)
            + noise * rng.standard_normal(n))


def test_burg_continues_a_sum_of_sinusoids():
    x = _tones(8000)
    clean = _tones(8000, noise=0.0)
    pred = burg_extrapolate(x[:4000], 400, order=32)
    # 50 ms of prediction stays within a few percent of the noiseless continuation.
    assert np.max(np.abs(pred - clean[4000:4400])) < 0.03


def test_noiseless_tone_gives_a_stable_model_not_nan():
    # librosa's Burg recursion breaks down on a noiseless tone at high order; we fall back.
    x = np.sin(2 * np.pi * 440 * np.arange(4000) / SR)
    a = stable_burg(x, 128)
    assert a is not None and np.all(np.isfinite(a))
    assert np.max(np.abs(np.roots(a))) <= 1 + 1e-6
    pred = burg_extrapolate(x, 20_000, order=128)
    assert np.all(np.isfinite(pred)) and np.max(np.abs(pred)) < 1.5


def test_silence_continues_as_silence():
    assert np.array_equal(burg_extrapolate(np.zeros(1000), 50, order=16), np.zeros(50))
    assert stable_burg(np.zeros(1000), 16) is None


def test_squared_cosine_fade_sums_to_one_and_runs_from_forward_to_backward():
    fade_out, fade_in = squared_cosine_fade(101)
    np.testing.assert_allclose(fade_out + fade_in, 1.0)
    assert fade_out[0] > 0.999 and fade_in[-1] > 0.999
    assert np.all(np.diff(fade_out) < 0)


def test_two_sided_fill_joins_both_contexts():
    x = _tones(16000)
    g0, g1 = 6000, 6800  # 100 ms
    fill = lpc_fill(x, g0, g1, LPCConfig(order=32, fit_s=0.25), sample_rate=SR)
    clean = _tones(16000, noise=0.0)
    # A stationary signal is reconstructed, and the fill meets the context at both edges.
    assert np.max(np.abs(fill - clean[g0:g1])) < 0.05
    step_left = abs(fill[0] - x[g0 - 1])
    step_right = abs(x[g1] - fill[-1])
    typical = np.max(np.abs(np.diff(x[g0 - 200:g0])))
    assert step_left < 1.5 * typical and step_right < 1.5 * typical


def test_fill_ignores_the_gap_content_and_handles_channels():
    x = np.stack([_tones(8000, seed=1), _tones(8000, seed=2)], axis=1)
    junk = x.copy()
    junk[3000:3400] = 7.0  # whatever was in the gap must not matter
    a = lpc_fill(x, 3000, 3400, sample_rate=SR)
    b = lpc_fill(junk, 3000, 3400, sample_rate=SR)
    assert a.shape == (400, 2)
    np.testing.assert_array_equal(a, b)


def test_one_sided_at_the_track_start_and_limits_respected():
    x = piano_like(2.0, SR, seed=3)
    fill = lpc_fill(x, 0, 800, sample_rate=SR)  # no left context: backward prediction only
    assert np.all(np.isfinite(fill)) and abs(fill[-1] - x[800]) < 0.2
    # With the right context cut off by ``right_limit`` only the forward prediction counts.
    only_fwd = lpc_fill(x, 4000, 4400, sample_rate=SR, right_limit=4400)
    np.testing.assert_allclose(only_fwd, burg_extrapolate(x[4000 - 4000:4000], 400, LPCConfig().order))


def test_long_gap_decays_instead_of_blowing_up():
    x = piano_like(4.0, SR, seed=4)
    fill = lpc_fill(x, 12000, 28000, sample_rate=SR)  # 2 s
    assert np.all(np.isfinite(fill))
    assert np.max(np.abs(fill)) <= 2 * np.max(np.abs(x))


@pytest.mark.parametrize("order", [4, 64])
def test_order_is_capped_by_the_context_length(order):
    x = _tones(60)
    out = burg_extrapolate(x, 10, order=order)
    assert out.shape == (10,) and np.all(np.isfinite(out))
