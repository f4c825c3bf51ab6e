"""Eq. 11 offset refinement and guide extraction at any sample rate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import piano_like

from simdps.audio import resample
from simdps.config import SearchConfig
from simdps.errors import SimDPSError
from simdps.retrieval.candidate import Candidate
from simdps.retrieval.refine import refine_half_width, refine_start, refine_window


def test_eq11_mode_is_the_paper_formula_verbatim():
    rng = np.random.default_rng(3)
    y, s = rng.standard_normal(4000), rng.standard_normal(9000)
    gs, ge, coarse, half = 1500, 2300, 5000, 40
    cfg = SearchConfig(refine_mode="eq11")
    got = refine_start(y, 8000, gs, ge, s, 8000, coarse, half, cfg)
    length = ge - gs
    # eq. 11: |y[ts-1] - s[t*+o]| + |y[te] - s[t*+o+L-1]| (te exclusive), ties to the smallest |o|.
    scores = {o: abs(y[gs - 1] - s[coarse + o]) + abs(y[ge] - s[coarse + o + length - 1])
              for o in range(-half, half + 1)}
    best = min(scores, key=lambda o: (scores[o], abs(o)))
    assert got.offset_samples == best and got.start_sample == coarse + best
    assert got.mismatch == pytest.approx(scores[best])


def test_context_mode_finds_a_quieter_copy_from_a_query_at_another_rate():
    s = piano_like(6.0, 44_100, seed=2)
    y = 0.7 * resample(s, 44_100, 22_050)  # query at 22.05 kHz: y[k] is s[2k], at 0.7x the level
    gs, ge = 50_000, 50_000 + 22_050
    y[gs:ge] = 0.0
    truth = 2 * gs
    half = refine_half_width(256, 44_100)
    assert half == 472
    for coarse in (truth - 400, truth + 123, truth):
        got = refine_start(y, 22_050, gs, ge, s, 44_100, coarse, half)
        assert abs(got.start_sample - truth) <= 1
        assert got.gain == pytest.approx(0.7, rel=1e-2)  # the candidate scaled to the query


def test_refinement_respects_bounds():
    s = piano_like(3.0, 12_000, seed=4)
    got = refine_start(s, 12_000, 20_000, 22_000, s, 12_000, 10_000, 128, bounds=(9_990, 10_020))
    assert 9_990 <= got.start_sample <= 10_020


def _tones(t: np.ndarray) -> np.ndarray:
    """A band-limited signal known at any time ``t`` (s): partials well below 8 kHz."""
    return sum(0.2 * np.sin(2 * np.pi * f * t + p) for f, p in ((220.0, 0.1), (1234.5, 1.0), (5001.0, 2.0)))


def test_extract_at_another_rate_equals_the_resampled_truth():
    sr = 44_100
    x = _tones(np.arange(5 * sr) / sr)
    start = 2 * sr + 12_345  # not on any common grid of 44.1 and 16 kHz
    cand = Candidate("<mem>", start / sr, start, sr, 0.0, 0.0, 0.0, audio=x)
    n = 8_000
    guide = cand.extract(n, 16_000)
    truth = _tones(start / sr + np.arange(n) / 16_000)
    assert guide.shape == (n,) and guide.dtype == np.float32
    assert np.max(np.abs(guide - truth)) < 2e-3
    same = cand.extract(1000, margin_samples=10)
    assert np.allclose(same, x[start - 10:start + 1010], atol=1e-6)
    for bad_rate in (0, -16_000, 16_000.5, "fast"):  # 0 used to mean the source's rate
        with pytest.raises(SimDPSError, match="sample rate"):
            cand.extract(n, bad_rate)
    with pytest.raises(SimDPSError, match="non-negative"):
        cand.extract(-1)


def test_extract_zero_pads_past_the_source_edges():
    sr = 22_050
    x = piano_like(2.0, sr, seed=6)
    head = Candidate("<mem>", 0.0, 0, sr, 0, 0, 0, audio=x).extract(500, margin_samples=100)
    assert np.all(head[:100] == 0) and np.allclose(head[100:], x[:600], atol=1e-6)
    tail_start = len(x) - 300
    tail = Candidate("<mem>", tail_start / sr, tail_start, sr, 0, 0, 0, audio=x)
    native = tail.extract(1000)
    assert np.allclose(native[:300], x[-300:], atol=1e-6) and np.all(native[300:] == 0)
    resampled = tail.extract(1000, 44_100)  # 300 source samples = 600 output samples
    assert np.all(resampled[601:] == 0) and np.any(resampled[:590] != 0)


def test_file_backed_extract_matches_in_memory(make_wav):
    sr = 16_000
    x = piano_like(3.0, sr, seed=7)
    path = make_wav("src.wav", data=np.stack([x, x], axis=1), sr=sr, subtype="FLOAT")
    from_file = Candidate(str(path), 1.25, 20_000, sr, 1.0, 0.5, 0.5, source="index")
    in_memory = dataclasses.replace(from_file, audio=x)
    assert from_file == in_memory  # audio is not part of equality
    for rate in (sr, 12_000, 44_100):
        assert np.allclose(from_file.extract(4000, rate), in_memory.extract(4000, rate), atol=1e-6)
    again = Candidate.from_json(from_file.to_json())
    assert again == from_file and again.source == "index"


def test_refine_window_reaches_a_whole_hop_towards_a_near_limit_only():
    assert (refine_half_width(256, 22_050), refine_half_width(512, 22_050)) == (237, 472)  # half / whole hop
    assert refine_window(5_000, None, 22_050) == (237, None)
    assert refine_window(5_000, (0, 90_000), 22_050) == (237, (4_763, 5_237))  # far from both limits
    assert refine_window(5_000, (0, 5_300), 22_050) == (472, (4_763, 5_300))  # the next grid start left the source
    assert refine_window(5_000, (4_800, 90_000), 22_050) == (472, (4_800, 5_237))  # ... or entered an excluded stretch
    assert refine_window(5_000, (0, 4_000), 22_050) == (237, (0, 4_000))  # far outside: refine_start clamps


def test_a_start_up_to_a_hop_above_the_last_grid_start_is_reached_at_a_limit():
    s = piano_like(4.0, 12_000, seed=9)
    truth = 30_000
    y = s[truth - 20_000:truth + 6_000].copy()  # the gap is y's last 6000 samples: no context after it
    gs, ge = 20_000, 26_000
    y[gs:ge] = 0.0
    source = s[:truth + 6_000]  # the match ends exactly where its source ends
    coarse = truth - 200  # the last grid start whose segment fits (the next, at +56, would overrun)
    bounds = (0, len(source) - (ge - gs))
    assert refine_start(y, 12_000, gs, ge, source, 12_000, coarse, 129, bounds=bounds).start_sample != truth
    width, near = refine_window(coarse, bounds, 12_000)
    assert refine_start(y, 12_000, gs, ge, source, 12_000, coarse, width, bounds=near).start_sample == truth


@pytest.mark.parametrize("edge", ["start", "end"])
def test_a_gap_at_the_querys_edge_refines_on_the_side_it_has(edge):
    """A gap at the query's start has no samples before it (at its end, none after): that side
    takes no part, instead of its zeros pulling the start towards quiet source samples."""
    s = piano_like(8.0, 44_100, seed=12)
    truth = 2 * 44_100 + 301
    s[truth - 3_000:truth] *= np.linspace(1.0, 0.0, 3_000)  # quiet just before the truth...
    s[truth + 22_050:truth + 25_050] *= np.linspace(1.0, 0.0, 3_000)[::-1]  # ... and just after its segment
    y = resample(s, 44_100, 22_050)  # the query at another rate: y[k] is s[2k]
    if edge == "start":  # a query starting with the gap
        y, gs, ge = y[(truth - 1) // 2:(truth - 1) // 2 + 44_100].copy(), 0, 11_025
    else:  # ... ending with it
        y, gs, ge = y[(truth - 1) // 2 - 44_100:(truth - 1) // 2 + 11_025].copy(), 44_100, 55_125
    y[gs:ge] = 0.0
    for coarse in (truth - 300, truth + 200):
        got = refine_start(y, 22_050, gs, ge, s, 44_100, coarse, 472)
        assert abs(got.start_sample - truth) <= 1, (edge, coarse, got)
    # eq. 11 verbatim keeps only the term the query has (same rates: the plain formula)
    y = s[truth:truth + 44_100].copy() if edge == "start" else s[truth - 44_100:truth + 22_050].copy()
    gs, ge = (0, 22_050) if edge == "start" else (44_100, 66_150)
    got = refine_start(y, 44_100, gs, ge, s, 44_100, truth, 50, SearchConfig(refine_mode="eq11"))
    term = {o: abs(y[ge] - s[truth + o + 22_049]) if edge == "start" else abs(y[gs - 1] - s[truth + o])
            for o in range(-50, 51)}
    assert got.offset_samples == min(term, key=lambda o: (term[o], abs(o)))
