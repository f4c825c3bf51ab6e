"""The parts of a restore run: exact samples, windows, splices, the auto guide weight."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from simdps.errors import AudioError, GapError, SimDPSError
from simdps.restore.auto import AutoWeightConfig, auto_guide_weight
from simdps.restore.guide import parse_guide_audio
from simdps.restore.samples import from_float, read_native, to_float, write_native
from simdps.restore.splice import crossfade_splice, fade_window, residual_splice
from simdps.restore.trackview import TrackView
from simdps.restore.window import model_mask, plan_window, to_model_rate, to_track_rate


# --------------------------------------------------------------------------- samples

@pytest.mark.parametrize("subtype, bits", [("PCM_16", 16), ("PCM_24", 24), ("PCM_U8", 8), ("PCM_32", 32)])
def test_pcm_integers_round_trip_exactly_including_full_scale(tmp_path, subtype, bits):
    rng = np.random.default_rng(0)
    ints = rng.integers(-2 ** (bits - 1), 2 ** (bits - 1), 5000)
    ints[:3] = [-2 ** (bits - 1), 2 ** (bits - 1) - 1, 0]
    data = (ints.astype(np.int64) << (32 - bits)).astype(np.int32)
    path = tmp_path / "in.wav"
    sf.write(path, data, 8000, subtype=subtype)
    native = read_native(path)
    assert native.data.dtype == np.int32
    out = write_native(tmp_path / "out.wav", native.data, native.info)
    again, _ = sf.read(out, dtype="int32")
    np.testing.assert_array_equal(again, data)
    assert sf.info(out).subtype == subtype


def test_quantisation_rounds_to_the_files_bit_depth_and_clips():
    like = np.zeros((1, 1), dtype=np.int32)
    x = np.array([[0.5], [1.5], [-2.0], [1 / 32768 * 0.6]])
    q = from_float(x, like, "PCM_16")
    np.testing.assert_array_equal(q[:, 0] >> 16, [16384, 32767, -32768, 1])
    assert np.all(q & 0xFFFF == 0)  # left-justified: the low 16 bits are empty
    np.testing.assert_allclose(to_float(from_float(np.array([[0.25]]), like, "PCM_24")), 0.25)


def test_float_files_keep_their_precision(tmp_path):
    data = np.random.default_rng(1).standard_normal((1000, 2)).astype(np.float32) * 0.3
    sf.write(tmp_path / "f.wav", data, 8000, subtype="FLOAT")
    native = read_native(tmp_path / "f.wav")
    assert native.data.dtype == np.float32
    np.testing.assert_array_equal(native.data, data)


def test_non_finite_samples_are_refused(tmp_path):
    data = np.zeros((100, 1), dtype=np.float32)
    data[10] = np.nan
    sf.write(tmp_path / "nan.wav", data, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN/Inf"):
        read_native(tmp_path / "nan.wav")


def test_track_view_zeroes_missing_gaps_and_overlays_fills(tmp_path):
    data = (np.arange(1, 101, dtype=np.int64) << 16).astype(np.int32)
    sf.write(tmp_path / "v.wav", data, 8000, subtype="PCM_16")
    view = TrackView(read_native(tmp_path / "v.wav"), [(10, 20), (50, 60)])
    x = view.read(-5, 70)[:, 0]
    assert np.all(x[:5] == 0) and np.all(x[15:25] == 0) and np.all(x[55:65] == 0)
    assert x[5] == 1 / 32768
    view.fill(0, np.full(10, 0.5))
    assert np.all(view.read(10, 20) == 0.5)
    assert view.missing() == [(50, 60)]
    out = view.assembled()
    np.testing.assert_array_equal(out[:10, 0], data[:10])
    assert np.all(out[10:20, 0] >> 16 == 16384)


# --------------------------------------------------------------------------- window

@pytest.mark.parametrize("sr, model_rate", [(44_100, 22_050), (48_000, 22_050), (16_000, 22_050), (8000, 8000)])
def test_window_round_trip_keeps_time_alignment(sr, model_rate):
    n = sr * 12
    t = np.arange(n) / sr
    x = np.sin(2 * np.pi * 300 * t)[:, None]
    w = plan_window(5 * sr, 6 * sr, n, sr, model_rate=model_rate, segment_samples=4 * model_rate)
    assert w.model_length == 4 * model_rate and w.start <= 5 * sr and w.stop >= 6 * sr
    xm = to_model_rate(x, w)[:, 0]
    tm = w.start / sr + np.arange(w.model_length) / model_rate
    np.testing.assert_allclose(xm, np.sin(2 * np.pi * 300 * tm), atol=1e-4)
    back = to_track_rate(xm[:, None], w)[:, 0]
    inner = slice(w.gap_start - sr // 2, w.gap_end + sr // 2)
    np.testing.assert_allclose(back[inner], x[w.start:w.stop, 0][inner], atol=1e-4)


def test_window_stays_inside_the_track_and_grows_for_long_gaps():
    sr = 8000
    w = plan_window(100, 900, 60 * sr, sr, model_rate=sr, segment_samples=2 * sr, context_s=0.5)
    assert w.start == 0 and w.length == 2 * sr
    w = plan_window(59 * sr, 59 * sr + 800, 60 * sr, sr, model_rate=sr, segment_samples=2 * sr, context_s=0.5)
    assert w.stop == 60 * sr
    w = plan_window(10 * sr, 12 * sr, 60 * sr, sr, model_rate=sr, segment_samples=2 * sr, context_s=0.5)
    assert w.length == 3 * sr and w.gap_start == sr // 2  # gap + 2 x context
    with pytest.raises(GapError, match="longer than the model window allows"):
        plan_window(10 * sr, 14 * sr, 60 * sr, sr, model_rate=sr, segment_samples=2 * sr)


def test_mask_covers_every_gap_in_the_window_widened():
    sr = 8000
    w = plan_window(8000, 12000, 40000, sr, model_rate=sr, segment_samples=16000)
    mask = model_mask(w, [(8000, 12000), (15000, 15100), (30000, 31000)], mask_margin_s=0.001)
    zero = np.flatnonzero(mask == 0) + w.start
    assert zero.min() == 8000 - 8 and 12000 + 7 in zero
    assert 15050 in zero and 30500 not in zero  # the third gap lies outside this window


# --------------------------------------------------------------------------- splice

def test_residual_splice_has_no_step_at_either_edge():
    t = np.arange(16000) / 8000
    x = (0.5 * np.sin(2 * np.pi * 50 * t))[:, None]
    x_est = 0.8 * x + 0.3 * np.sin(2 * np.pi * 31 * t + 1)[:, None] + 0.05  # gain, other notes, DC offset
    g0, g1 = 6000, 10000
    fill = residual_splice(x_est, x, g0, g1, fade=40)
    # First spliced sample = last observed sample + the estimate's own first difference.
    np.testing.assert_allclose(fill[0] - x[g0 - 1], x_est[g0] - x_est[g0 - 1])
    np.testing.assert_allclose(x[g1] - fill[-1], x_est[g1] - x_est[g1 - 1])
    np.testing.assert_allclose(fill[40:-40], x_est[g0 + 40:g1 - 40])  # untouched beyond the fade
    own = np.max(np.abs(np.diff(x[:, 0])))
    naive = x_est[[g0, g1 - 1], 0] - x[[g0 - 1, g1], 0]
    assert np.all(np.abs(naive) > 3 * own)  # pasting the estimate as is would step
    joined = np.concatenate([x[:g0, 0], fill[:, 0], x[g1:, 0]])
    assert np.max(np.abs(np.diff(joined))) < 1.5 * own


def test_fade_window_starts_flat_at_one_and_reaches_zero():
    w = fade_window(100)
    assert w[0] == 1.0 and w[1] > 0.999 and w[-1] < 1e-3
    assert np.all(np.diff(w) <= 0)


def test_crossfade_splice_is_equal_power_and_starts_on_the_continuation():
    n = 1000
    fill = np.ones((n, 1))
    left = np.full((80, 1), -1.0)
    right = np.full((80, 1), 2.0)
    out = crossfade_splice(fill, left, right, 80)
    assert out[0, 0] < -0.99 and out[-1, 0] > 1.99
    np.testing.assert_array_equal(out[80:-80], fill[80:-80])
    theta = 0.5 * np.pi * (np.arange(80) + 0.5) / 80
    np.testing.assert_allclose(np.cos(theta) ** 2 + np.sin(theta) ** 2, 1.0)
    np.testing.assert_allclose(out[:80, 0], -np.cos(theta) + np.sin(theta))


# --------------------------------------------------------------------------- auto weight

def test_auto_weight_is_monotone_and_bounded():
    cfg = AutoWeightConfig()
    null = 2.8
    costs = np.linspace(0, 2 * null, 200)
    w = np.array([auto_guide_weight(c, null, cfg)[0] for c in costs])
    assert np.all(np.diff(w) <= 0)
    assert w[0] == pytest.approx(0.15) and w[-1] == 0.0
    assert np.all((0 <= w) & (w <= 0.15))
    assert auto_guide_weight(cfg.rho_lo * null, null, cfg)[0] == pytest.approx(0.15)
    assert auto_guide_weight(cfg.rho_hi * null, null, cfg)[0] == pytest.approx(0.0)


def test_auto_weight_without_a_candidate_or_context_is_plain_dps():
    assert auto_guide_weight(None, 2.8) == (0.0, None)
    assert auto_guide_weight(0.1, 0.0) == (0.0, None)
    assert auto_guide_weight(float("nan"), 2.8) == (0.0, None)


# --------------------------------------------------------------------------- guide argument

def test_guide_audio_argument(tmp_path):
    assert parse_guide_audio("take2.wav") == (tmp_path.__class__("take2.wav"), None)
    path, start = parse_guide_audio("take2.wav@12.5")
    assert str(path) == "take2.wav" and start == 12.5
    odd = tmp_path / "a@b.wav"
    odd.write_bytes(b"")
    assert parse_guide_audio(str(odd)) == (odd, None)
    with pytest.raises(SimDPSError, match="START_S"):
        parse_guide_audio("take2.wav@soon")
    with pytest.raises(SimDPSError, match="START_S"):
        parse_guide_audio("take2.wav@-1")
