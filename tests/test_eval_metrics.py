"""The gap metrics on cases whose answers are known in advance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import piano_like
from simdps.errors import SimDPSError
from simdps.evaluation.metrics import (
    METRICS,
    bs1770_loudness,
    chroma_similarity,
    edge_diff_energy_ratio_db,
    edge_flux_ratio_db,
    gap_metrics,
    log_mel_l1,
    log_spectral_distance,
    loudness_difference_db,
    snr_db,
)

SR = 16_000
# A 2-s gap in a 6-s excerpt, its edges between two of the synthetic notes' onsets.
GAP = (int(2.1 * SR), int(4.1 * SR))


@pytest.fixture(scope="module")
def excerpt() -> np.ndarray:
    return piano_like(6.0, SR, seed=3)


def test_identical_restoration_scores_perfectly(excerpt):
    m = gap_metrics(excerpt, excerpt.copy(), SR, GAP)
    assert set(m) == {k for k in METRICS if not k.startswith("note_")}
    assert m["lsd_db"] == 0.0
    assert m["mel_l1_db"] == 0.0
    assert m["chroma_sim"] == pytest.approx(1.0, abs=1e-12)
    assert m["snr_db"] == math.inf
    assert m["loudness_diff_db"] == 0.0
    for edge in ("flux_start_db", "flux_end_db", "diff_start_db", "diff_end_db"):
        assert m[edge] == 0.0


def test_gain_change_in_the_gap_gives_its_loudness_difference_in_db(excerpt):
    for gain in (0.5, 2.0, 0.1):
        restored = excerpt.copy()
        restored[GAP[0]:GAP[1]] *= gain
        expected = 20 * math.log10(gain)
        assert loudness_difference_db(excerpt, restored, SR, GAP) == pytest.approx(expected, abs=1e-6)


def test_bs1770_loudness_of_a_1khz_tone():
    # BS.1770: a 0 dBFS-peak 997 Hz sine in one channel reads -3.01 LKFS (K-filter gain ~0 dB at 1 kHz).
    t = np.arange(3 * 48_000) / 48_000
    assert bs1770_loudness(np.sin(2 * np.pi * 997 * t), 48_000) == pytest.approx(-3.01, abs=0.05)


def test_snr_of_known_noise(excerpt):
    rng = np.random.default_rng(0)
    gap = excerpt[GAP[0]:GAP[1]]
    noise = rng.standard_normal(gap.size)
    for target_db in (0.0, 10.0, 30.0):
        # Scale the noise so that ||x_gap||^2 / ||noise||^2 is exactly the target.
        scaled = noise * math.sqrt(np.sum(gap ** 2) / np.sum(noise ** 2) / 10 ** (target_db / 10))
        restored = excerpt.copy()
        restored[GAP[0]:GAP[1]] += scaled
        assert snr_db(excerpt, restored, SR, GAP) == pytest.approx(target_db, abs=1e-9)


def test_noise_outside_the_gap_does_not_change_the_gap_snr(excerpt):
    restored = excerpt.copy()
    restored[: GAP[0]] += 0.1
    assert snr_db(excerpt, restored, SR, GAP) == math.inf


def test_a_click_at_an_edge_worsens_that_edge_only(excerpt):
    restored = excerpt.copy()
    restored[GAP[0]] += 0.8  # a one-sample click at the gap start
    m = gap_metrics(excerpt, restored, SR, GAP)
    assert m["diff_start_db"] > 6.0
    assert m["flux_start_db"] > 1.0
    assert m["diff_end_db"] == 0.0
    assert m["flux_end_db"] == 0.0


def test_a_step_at_the_gap_end_is_seen_by_both_boundary_measures(excerpt):
    restored = excerpt.copy()
    restored[GAP[0]:GAP[1]] += 0.3  # a DC offset inside the gap: steps at both edges
    assert edge_diff_energy_ratio_db(excerpt, restored, SR, GAP[1]) > 3.0
    assert edge_flux_ratio_db(excerpt, restored, SR, GAP[1]) > 1.0


def test_spectral_distances_grow_with_the_damage(excerpt):
    rng = np.random.default_rng(1)
    small, large = excerpt.copy(), excerpt.copy()
    noise = rng.standard_normal(GAP[1] - GAP[0])
    small[GAP[0]:GAP[1]] += 0.001 * noise
    large[GAP[0]:GAP[1]] += 0.1 * noise
    assert 0 < log_spectral_distance(excerpt, small, SR, GAP) < log_spectral_distance(excerpt, large, SR, GAP)
    assert 0 < log_mel_l1(excerpt, small, SR, GAP) < log_mel_l1(excerpt, large, SR, GAP)


def test_chroma_similarity_tells_a_transposed_fill_from_the_original():
    t = np.arange(6 * SR) / SR
    a_minor = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 261.63, 329.63))
    restored = a_minor.copy()
    # The gap holds the same chord a tritone up: other pitch classes, same loudness.
    shifted = sum(np.sin(2 * np.pi * f * 2 ** 0.5 * t) for f in (220.0, 261.63, 329.63))
    restored[GAP[0]:GAP[1]] = shifted[GAP[0]:GAP[1]]
    assert chroma_similarity(a_minor, a_minor, SR, GAP) == pytest.approx(1.0)
    assert chroma_similarity(a_minor, restored, SR, GAP) < 0.5


def test_stereo_is_scored_on_its_mono_mix(excerpt):
    stereo = np.stack([excerpt, excerpt], axis=1)
    restored = stereo.copy()
    restored[GAP[0]:GAP[1]] *= 0.5
    assert loudness_difference_db(stereo, restored, SR, GAP) == pytest.approx(20 * math.log10(0.5), abs=1e-6)


def test_mismatched_inputs_are_user_errors(excerpt):
    with pytest.raises(SimDPSError, match="differ in length"):
        gap_metrics(excerpt, excerpt[:-1], SR, GAP)
    with pytest.raises(SimDPSError, match="not inside"):
        gap_metrics(excerpt, excerpt, SR, (0, excerpt.size + 1))
