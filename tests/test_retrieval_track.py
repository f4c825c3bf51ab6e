"""Retrieval from the query's own track (sec. 4.3): planted repetitions are found at their exact sample."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import piano_like, repeating_tune

from simdps.errors import GapError
from simdps.gaps import Gap
from simdps.retrieval.candidate import Candidate
from simdps.retrieval.track import search_track


def planted(sr: int, gap_len_s: float, *, source_s: float = 1.0, dest_s: float = 12.0, duration_s: float = 22.0,
            gain: float = 1.0, seed: int = 5):
    """A track whose passage at ``source_s`` is copied (times ``gain``) to ``dest_s``, and a gap inside the copy.

    Returns the track (gap filled with loud noise, which must never be read), the gap in
    seconds, and the true start sample of the segment that fills it.
    """
    x = piano_like(duration_s, sr, seed=seed)
    a, b = int(source_s * sr) + 37, int(dest_s * sr) + 11  # off every coarse grid
    span = int((gap_len_s + 6.5) * sr)  # the gap plus 3 s of context each side, and a margin
    x[b:b + span] = gain * x[a:a + span]
    gap = Gap(dest_s + 3.25, dest_s + 3.25 + gap_len_s)
    gs, ge = gap.to_samples(sr)
    x[gs:ge] = np.random.default_rng(1).uniform(-1, 1, ge - gs)
    return x, gap, a + (gs - b)


@pytest.mark.parametrize("sr", [44_100, 22_050])
@pytest.mark.parametrize("gap_len_s", [0.5, 1.3, 2.0])
def test_planted_repetition_is_found_at_its_exact_sample(sr, gap_len_s):
    x, gap, truth = planted(sr, gap_len_s)
    cands = search_track(x, sr, gap, k=5)
    best = cands[0]
    assert abs(best.start_sample - truth) <= 1
    assert best.start_s == pytest.approx(best.start_sample / sr) and best.sample_rate == sr
    assert best.cost < 0.05 and cands[1].cost > 10 * best.cost + 1.0
    assert best.cost == pytest.approx(best.cost_stft + best.cost_chroma)
    assert [c.cost for c in cands] == sorted(c.cost for c in cands)


def test_copy_at_another_gain_after_the_gap_is_found_exactly():
    sr = 44_100
    # Source after the gap this time, at half the level.
    x = piano_like(24.0, sr, seed=8)
    a, b = int(14.0 * sr) + 5, int(1.0 * sr) + 101
    span = int(8.0 * sr)
    x[b:b + span] = x[a:a + span].copy()
    x[a:a + span] *= 0.5
    gap = Gap(4.5, 5.8)
    truth = a + (gap.to_samples(sr)[0] - b)
    best = search_track(x, sr, gap, k=3)[0]
    assert abs(best.start_sample - truth) <= 1 and best.cost < 0.05


def test_piano_like_material_has_no_accidental_repetition():
    sr = 22_050
    x = piano_like(22.0, sr, seed=5)
    cands = search_track(x, sr, (15.25, 16.55), k=5)
    assert min(c.cost for c in cands) > 1.0  # the planted case above scores below 0.05


def test_candidates_stay_clear_of_the_gap_and_its_context():
    sr = 22_050
    x, gap, _ = planted(sr, 1.3)
    gs, ge = gap.to_samples(sr)
    x[gs:ge] = np.nan  # the gap is never read
    cands = search_track(np.stack([x, 0.5 * x], axis=1), sr, gap, k=10)  # stereo: mono mix
    n = int(round(1.3 * sr))
    assert len(cands) == 10 and len({c.start_sample for c in cands}) == 10
    for c in cands:
        assert c.source == "track" and c.path == "<query>"
        assert c.start_sample + n <= gs - 3 * sr or c.start_sample >= ge + 3 * sr
        assert set(c.to_json()) == {"path", "start_s", "start_sample", "sample_rate", "cost", "cost_stft",
                                    "cost_chroma", "source"}
        assert "audio" not in repr(c)


@pytest.mark.parametrize("where", ["start", "end"])
def test_gap_near_a_track_edge_uses_the_context_that_exists(where):
    sr = 22_050
    x = piano_like(20.0, sr, seed=9)
    length = 1.0
    if where == "start":  # 1 s of audio before the gap; its neighbourhood is copied to 10 s
        gap = Gap(1.0, 2.0)
        a, b = 0, int(10.0 * sr) + 3
    else:  # 0.8 s after the gap; the neighbourhood is copied to 2 s
        gap = Gap(20.0 - 0.8 - length, 20.0 - 0.8)
        a, b = int((20.0 - 0.8 - length - 3.5) * sr), int(2.0 * sr) + 3
    span = min(int((length + 4.5) * sr), len(x) - a)
    x[b:b + span] = x[a:a + span]
    cands = search_track(x, sr, gap, k=4)
    truth = b + (gap.to_samples(sr)[0] - a)
    assert cands and abs(cands[0].start_sample - truth) <= 1


def test_gap_outside_the_track_is_a_clear_error():
    x = piano_like(10.0, 22_050, seed=1)
    with pytest.raises(GapError, match="outside"):
        search_track(x, 22_050, (9.5, 11.0))
    with pytest.raises(GapError, match="outside"):
        search_track(x, 22_050, (-1.0, 0.5))
    with pytest.raises(GapError, match="no room"):
        search_track(x, 22_050, (4.0, 6.0))  # 10 s cannot hold 2 s + 3 s context each side twice


def test_extract_returns_the_planted_passage():
    sr = 44_100
    x, gap, truth = planted(sr, 1.3)
    best: Candidate = search_track(x, sr, gap, k=2)[0]
    n = int(round(1.3 * sr))
    assert np.allclose(best.extract(n), x[truth:truth + n], atol=1e-6)
    assert best.extract(n).dtype == np.float32


def test_a_float32_track_is_searched_in_float32_and_in_blocks(monkeypatch):
    """A float32 track (how the CLI reads one) is not copied to float64, and a long track is
    costed in blocks of starts, on one thread or several: the planted repetition is found at the
    same sample, at the float64 search's costs to float32 precision."""
    import simdps.retrieval.cost as cost

    x, gap, truth = planted(22_050, 1.3)
    ref = search_track(x, 22_050, gap, k=3)
    monkeypatch.setattr(cost, "_GRID_BLOCK", 97)  # several blocks on each side of the gap
    got = search_track(x.astype(np.float32), 22_050, gap, k=3, workers=1)
    on_threads = search_track(x.astype(np.float32), 22_050, gap, k=3, workers=3)  # blocks on 3 threads
    assert [c.start_sample for c in on_threads] == [c.start_sample for c in got]
    np.testing.assert_allclose([c.cost for c in on_threads], [c.cost for c in got], rtol=1e-9)
    assert abs(got[0].start_sample - truth) <= 1 and got[0].cost < 0.05
    assert [c.start_sample for c in got] == [c.start_sample for c in ref]
    np.testing.assert_allclose([c.cost for c in got], [c.cost for c in ref], rtol=1e-4, atol=1e-5)
    assert got[0].audio.dtype == np.float32


def test_the_best_k_are_the_first_k_of_a_longer_list():
    """eq. 11 re-ranks the refined starts; asked for fewer candidates, the search still returns the
    first of the longer list (here the best start on the frame grid does not refine to the best match)."""
    x = repeating_tune(22_050, 60.0)
    ten = [(c.start_sample, c.cost) for c in search_track(x, 22_050, (20.0, 22.0), k=10)]
    assert len(ten) == 10 and [c for _, c in ten] == sorted(c for _, c in ten)
    for k in (1, 2, 3, 5):
        assert [(c.start_sample, c.cost) for c in search_track(x, 22_050, (20.0, 22.0), k=k)] == ten[:k]
