"""Excerpt choice: seeded, spread over tracks, non-overlapping, never in silence."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import piano_like
from simdps.errors import SimDPSError
from simdps.evaluation.excerpts import (
    ExcerptConfig,
    choose_excerpts,
    find_recordings,
    nonsilent_starts,
    read_manifest,
    write_manifest,
)

SR = 8_000


@pytest.fixture
def corpus(make_wav, tmp_path):
    for k in range(3):
        make_wav(f"rec/track{k}.wav", 20.0, sr=SR, seed=10 * k)
    (tmp_path / "rec" / "notes.txt").write_text("not audio")
    return tmp_path / "rec"


def test_excerpts_are_seeded_spread_and_do_not_overlap(corpus):
    paths = find_recordings(corpus)
    assert [p.name for p in paths] == ["track0.wav", "track1.wav", "track2.wav"]
    cfg = ExcerptConfig(count=6, seed=4)
    first = choose_excerpts(paths, cfg)
    assert first == choose_excerpts(paths, cfg)
    assert first != choose_excerpts(paths, ExcerptConfig(count=6, seed=5))
    assert len(first) == 6
    assert {e.track for e in first} == {str(p) for p in paths}  # round-robin: 2 per track
    assert len({e.excerpt_id for e in first}) == 6
    for e in first:
        assert e.length_samples == 6 * SR
        assert e.gap_in_excerpt == (2 * SR, 4 * SR)  # 2-s gap, centred
        assert e.start_sample + e.length_samples <= 20 * SR
        assert e.track_gap.start_s == pytest.approx(e.start_s + 2.0)
    for a in first:
        for b in first:
            if a is not b and a.track == b.track:
                assert abs(a.start_sample - b.start_sample) >= a.length_samples


def test_silent_stretches_are_never_chosen(make_wav):
    music = piano_like(30.0, SR, seed=1)
    music[8 * SR:22 * SR] = 0.0  # 14 s of digital silence in the middle
    path = make_wav("gappy.wav", data=music, sr=SR)
    cfg = ExcerptConfig(count=3, seed=0)
    starts = nonsilent_starts(music, SR, cfg)
    assert starts.size > 0
    for s in starts:  # no part of the window overlaps the silence by a whole 0.5-s level block
        overlap = min(s + 6 * SR, 22 * SR) - max(s, 8 * SR)
        assert overlap < 0.5 * SR
    for e in choose_excerpts([path], cfg):
        assert e.start_sample in set(starts.tolist())


def test_a_track_too_short_or_silent_is_a_clear_error(make_wav):
    short = make_wav("short.wav", 4.0, sr=SR)
    silent = make_wav("silent.wav", data=np.zeros(10 * SR), sr=SR)
    with pytest.raises(SimDPSError, match="non-silent 6-s excerpt"):
        choose_excerpts([short, silent], ExcerptConfig(count=2))
    with pytest.raises(SimDPSError, match="shorter than the excerpt"):
        ExcerptConfig(gap_s=6.0).check()


def test_fewer_excerpts_than_asked_when_the_tracks_run_out(make_wav):
    path = make_wav("one.wav", 13.0, sr=SR)
    excerpts = choose_excerpts([path], ExcerptConfig(count=5, seed=0))
    assert 1 <= len(excerpts) <= 2  # two non-overlapping 6-s windows fit in 13 s at most


def test_manifest_round_trip(corpus, tmp_path):
    cfg = ExcerptConfig(count=2, excerpt_s=4.0, gap_s=1.0, seed=7)
    excerpts = choose_excerpts(find_recordings(corpus), cfg)
    write_manifest(tmp_path / "excerpts.json", corpus, cfg, excerpts)
    folder, cfg_back, excerpts_back = read_manifest(tmp_path / "excerpts.json")
    assert folder == str(corpus.resolve())
    assert cfg_back == cfg and excerpts_back == excerpts
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SimDPSError, match="unreadable"):
        read_manifest(tmp_path / "bad.json")


def test_an_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(SimDPSError, match="no audio files"):
        find_recordings(tmp_path)
    with pytest.raises(SimDPSError, match="not a folder"):
        find_recordings(tmp_path / "missing")
