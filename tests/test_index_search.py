"""Retrieval from the corpus index: planted repetitions at their exact sample, the in-track
rule for a query that is itself in the corpus, and recall against the exhaustive exact cost."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import piano_like, repeating_tune

from simdps import Index
from simdps.config import SearchConfig
from simdps.errors import SimDPSError
from simdps.indexer.build import build_index
from simdps.indexer.config import IndexConfig
from simdps.indexer.work import decode_search_signal
from simdps.retrieval.cost import grid_costs
from simdps.retrieval.index_search import SearchParams, prepare_query

SMALL = IndexConfig(stft_dims=32, chroma_dims=16, pca_train_positions=2000)
SR = 22_050
CFG = SearchConfig()
GAIN = 0.6
A_S, B_S = 5.0, 17.3  # the query's passage from A_S is planted in host.flac at B_S
GAP_START_S = 9.0


def _query_track() -> np.ndarray:
    return piano_like(24.0, SR, seed=100)


def _with_in_track_repeat(q: np.ndarray) -> np.ndarray:
    """The query where the gap's surroundings repeat 10 s later, for the track search to find."""
    q = q.copy()
    q[int(15.5 * SR):int(23.5 * SR)] = q[int(5.5 * SR):int(13.5 * SR)]
    return q


def _host_corpus(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A corpus folder holding host.flac, into which the query's passage from 5 s is planted at 12 s."""
    root = tmp_path / "corpus"
    root.mkdir()
    q = _query_track()
    host = piano_like(30.0, SR, seed=50)
    host[int(12.0 * SR):int(22.0 * SR)] = GAIN * q[int(5.0 * SR):int(15.0 * SR)]
    sf.write(root / "host.flac", host, SR)
    return root, q, host


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    q = _query_track()
    host = piano_like(40.0, SR, seed=50)
    a, b = int(A_S * SR), int(B_S * SR) + 13  # off every grid
    span = int(10.0 * SR)
    host[b:b + span] = GAIN * q[a:a + span]
    sf.write(root / "host.flac", host, SR)
    (root / "other").mkdir()
    sf.write(root / "other" / "x.wav", piano_like(20.0, 16_000, seed=7), 16_000)
    sf.write(root / "y.wav", piano_like(15.0, 44_100, seed=8), 44_100)
    sf.write(root / "query.wav", q, SR)  # the query's own recording is in the corpus too
    index_dir = tmp_path_factory.mktemp("idx")
    index = Index.build(root, index_dir, config=SMALL)
    truth = b - a  # host sample = query sample + truth
    return index, q, root, truth


@pytest.mark.parametrize("gap_len_s", [0.5, 1.3, 2.0])
def test_planted_repetition_is_found_at_its_exact_sample_for_any_gap_length(planted, gap_len_s):
    index, q, root, shift = planted
    gap = (GAP_START_S, GAP_START_S + gap_len_s)
    cands = index.search(q, SR, gap, k=5, include_track=False)
    best = cands[0]
    truth = round(GAP_START_S * SR) + shift
    assert Path(best.path).name == "host.flac" and best.source == "index"
    assert abs(best.start_sample - truth) <= 1
    assert best.sample_rate == SR and best.start_s == pytest.approx(best.start_sample / SR)
    assert best.cost < 0.05 and cands[1].cost > 10 * best.cost + 0.5
    assert best.cost == pytest.approx(best.cost_stft + best.cost_chroma)
    # the guide it extracts is the planted passage (at its gain)
    n = int(round(gap_len_s * SR))
    gs = round(GAP_START_S * SR)
    np.testing.assert_allclose(best.extract(n), GAIN * q[gs:gs + n], atol=2e-4)


def test_an_index_keeps_its_chroma_filterbank_and_queries_need_no_librosa(planted):
    """The index stores the chroma filterbank its features were computed with; a process that
    opens it searches (corpus and in-track) on that filterbank without importing librosa."""
    import json
    import subprocess
    import sys

    import librosa.filters

    from simdps.indexer.embed import ContextPCA

    index, _, root, _ = planted
    q, sr = sf.read(root / "query.wav")  # as the other process reads it
    assert sr == SR
    stored = ContextPCA.load(next(Path(index.index_dir).glob("gen-*/pca.npz"))).chroma_filterbank
    np.testing.assert_array_equal(stored, librosa.filters.chroma(sr=CFG.sample_rate, n_fft=CFG.n_fft,
                                                                 tuning=0.0, n_chroma=12).T.astype(np.float32))
    gap = (GAP_START_S, GAP_START_S + 1.0)
    here = [(Path(c.path).name, c.start_sample, round(c.cost, 9))
            for c in index.search(q, SR, gap, k=3, path=str(root / "query.wav"))]
    code = f"""
import json, sys
sys.modules["librosa"] = None  # any import of librosa now fails
import soundfile as sf
from pathlib import Path
from simdps import Index
q, sr = sf.read({str(root / "query.wav")!r})
found = Index.open({str(index.index_dir)!r}).search(q, sr, {gap!r}, k=3, path={str(root / "query.wav")!r})
print(json.dumps([(Path(c.path).name, c.start_sample, round(c.cost, 9)) for c in found]))
assert "librosa" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [tuple(c) for c in json.loads(done.stdout.strip().splitlines()[-1])] == here


@pytest.mark.parametrize("keep_signals", [False, True])
def test_indexed_files_deleted_or_changed_since_indexing_are_left_out_with_a_note(tmp_path, capsys, keep_signals):
    """A query whose candidates touch a corpus file that is gone, or now has another rate, still
    answers from the rest of the corpus and says which file to re-index; it does not fail
    (with kept search signals too: a signal serves only its file as indexed)."""
    import warnings

    from simdps.cli.index import main
    from simdps.errors import SimDPSWarning, collect_notes

    root, q, host = _host_corpus(tmp_path)
    # A byte-identical copy: returned once (as host.flac, the first), it stands in once host.flac is gone.
    (root / "later.flac").write_bytes((root / "host.flac").read_bytes())
    for i in range(2):
        sf.write(root / f"o{i}.flac", piano_like(25.0, SR, seed=60 + i), SR)
    index = Index.build(root, tmp_path / "idx", config=replace(SMALL, keep_signals=keep_signals))
    assert len(list((tmp_path / "idx" / "signals").glob("*.f32"))) == (3 if keep_signals else 0)  # copies share
    gap = (GAP_START_S, GAP_START_S + 1.0)
    first = index.search(q, SR, gap, k=2, include_track=False)
    assert Path(first[0].path).name == "host.flac" and all(Path(c.path).name != "later.flac" for c in first)
    (root / "host.flac").unlink()
    sf.write(root / "o0.flac", piano_like(25.0, 16_000, seed=60), 16_000)  # another rate than indexed
    with pytest.warns(SimDPSWarning, match="host.flac|o0.flac") as caught:
        found = index.search(q, SR, gap, k=5, include_track=False)
    assert "simdps-index build" in str(caught[0].message)
    # host.flac's content was searched through its copy; o0.flac's was not
    assert "1 left out of this search, 1 searched through a byte-identical copy" in str(caught[0].message)
    assert found[0].cost < 0.05 and Path(found[0].path).name == "later.flac"
    assert all(Path(c.path).name not in ("host.flac", "o0.flac") for c in found)
    with warnings.catch_warnings(record=True) as others:
        warnings.simplefilter("always")
        with collect_notes() as notes:
            index.search(q, SR, gap, k=5, include_track=False)
            warnings.warn("unrelated", DeprecationWarning)
    assert len(notes) == 1 and "could not be read" in notes[0]
    assert [str(w.message) for w in others] == ["unrelated"]  # other warnings pass through

    query = tmp_path / "query.wav"
    sf.write(query, q, SR)
    main(["query", str(query), "--gap", "9:10", "--index", str(tmp_path / "idx"), "--no-track", "--json"])
    out = capsys.readouterr()
    assert Path(json.loads(out.out)["candidates"][0]["path"]).name == "later.flac"
    assert "note: " in out.err and "could not be read" in out.err and "simdps-index build" in out.err


def test_kept_signals_answer_as_decoding_does_without_decoding_the_windows(planted, tmp_path, monkeypatch):
    """An index built with keep_signals reads each re-score window from the file's 12-kHz signal:
    the same candidates at the same starts, costs to float32 rounding, and no window decoded or
    resampled (eq. 11 still reads the native samples beside the segment's ends)."""
    import simdps.retrieval.index_search as index_search

    _, q, root, truth = planted
    index = Index.build(root, tmp_path / "idx", config=replace(SMALL, keep_signals=True))
    signals = sorted((tmp_path / "idx" / "signals").glob("*.f32"))
    assert len(signals) == 4 and index.info()["signals_bytes"] == sum(p.stat().st_size for p in signals)
    host = next(i for i, p in enumerate(index.tracks.path) if p.endswith("host.flac"))
    kept = np.fromfile(tmp_path / "idx" / "signals" / f"{index.tracks.content_hash[host]}-12000.f32", dtype="<f4")
    np.testing.assert_array_equal(kept, decode_search_signal(root / "host.flac")[0])
    for gap_len in (0.5, 2.0):
        gap = (GAP_START_S, GAP_START_S + gap_len)
        decoded = index.search(q, SR, gap, k=5, include_track=False, params=SearchParams(use_signals=False))
        with monkeypatch.context() as m:
            m.setattr(index_search, "resample_window", lambda *a, **k: pytest.fail("a window was resampled"))
            read = index.search(q, SR, gap, k=5, include_track=False)
        assert [(c.path, c.start_sample) for c in read] == [(c.path, c.start_sample) for c in decoded]
        np.testing.assert_allclose([c.cost for c in read], [c.cost for c in decoded], rtol=1e-5, atol=1e-6)
        assert Path(read[0].path).name == "host.flac" and abs(read[0].start_sample - (round(gap[0] * SR) + truth)) <= 1


def test_keep_signals_can_be_turned_on_and_off_without_rebuilding(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(2):
        sf.write(root / f"f{i}.flac", piano_like(12.0, SR, seed=70 + i), SR)
    index_dir = tmp_path / "idx"
    Index.build(root, index_dir, config=SMALL)
    assert not (index_dir / "signals").exists()
    again = build_index(root, index_dir, config=replace(SMALL, keep_signals=True), progress=False)
    assert (again.stats.files_unchanged, again.stats.files_added) == (2, 0)  # nothing re-embedded
    assert len(list((index_dir / "signals").glob("*-12000.f32"))) == 2  # named by the search rate too
    (root / "f1.flac").unlink()
    build_index(root, index_dir, progress=False)  # the stored setting stays; a removed file's signal goes
    assert len(list((index_dir / "signals").glob("*.f32"))) == 1
    build_index(root, index_dir, config=replace(SMALL, keep_signals=False), progress=False)
    assert not (index_dir / "signals").exists()


def test_the_result_does_not_depend_on_the_rescore_threads(planted):
    index, q, _, _ = planted
    gap = (GAP_START_S, GAP_START_S + 1.3)
    one = index.search(q, SR, gap, k=8, params=SearchParams(threads=1))
    two = index.search(q, SR, gap, k=8, params=SearchParams(threads=3))
    assert [(c.path, c.start_sample, c.cost) for c in one] == [(c.path, c.start_sample, c.cost) for c in two]
    with pytest.raises(SimDPSError, match="threads"):
        SearchParams(threads=0)


def _search_in_child(index, q, gap, out):
    out.put([(c.path, c.start_sample, c.cost) for c in index.search(q, SR, gap, k=4, include_track=False)])


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_an_index_searched_before_a_fork_searches_in_the_child(planted):
    """The search threads are kept per Index; a forked child has none of them and must make its own."""
    import multiprocessing

    index, q, _, _ = planted
    gap = (GAP_START_S, GAP_START_S + 0.5)
    want = [(c.path, c.start_sample, c.cost) for c in index.search(q, SR, gap, k=4, include_track=False)]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_search_in_child, args=(index, q, gap, out))
    child.start()
    try:
        got = out.get(timeout=60)  # a child waiting on its parent's (absent) threads would never answer
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert got == want


def test_the_adaptive_extension_rescores_more_windows_only_while_estimates_are_close(planted, monkeypatch):
    import simdps.retrieval.api as api

    index, q, _, _ = planted
    gap = (GAP_START_S, GAP_START_S + 1.3)
    calls = []
    real = api.rescore

    def counting(query, starts12, *args, **kwargs):
        calls.append(len(starts12))
        return real(query, starts12, *args, **kwargs)

    monkeypatch.setattr(api, "rescore", counting)

    def run(**kwargs):
        calls.clear()
        found = index.search(q, SR, gap, k=5, include_track=False, params=SearchParams(n_rescore=2, **kwargs),
                             refine_offsets=False)
        return found, len(calls)

    fixed, n_fixed = run(max_rescore=2)
    wide, n_wide = run(max_rescore=12, rescore_margin=1e9)  # every estimate is "close": the cap decides
    assert n_fixed <= 2 < n_wide <= 12
    assert wide[0].cost <= fixed[0].cost  # the first round is the same: more windows can only find better
    _, n_none = run(max_rescore=12, rescore_margin=0.0)
    assert n_none <= n_wide
    with pytest.raises(SimDPSError, match="rescore_margin"):
        SearchParams(rescore_margin=-0.1)
    with pytest.raises(SimDPSError, match="max_rescore"):
        SearchParams(max_rescore=0)


def test_a_long_query_track_costs_only_the_context_around_its_gap(planted):
    """The corpus search reads Lc plus a second beside each gap edge: a 10-min float32 stereo
    query is not converted or copied whole, and damage far from the gap does not matter to it
    (the in-track search, which reads the whole track, still refuses it)."""
    import tracemalloc

    index, q, _, _ = planted
    track = np.tile(np.stack([q, 0.5 * q], axis=1).astype(np.float32), (25, 1))  # 10 min, 42 MB
    track[int(500 * SR)] = np.nan
    tile = len(q) / SR
    gap = (10 * tile + GAP_START_S, 10 * tile + GAP_START_S + 1.0)
    tracemalloc.start()
    try:
        query = prepare_query(track, SR, gap, CFG)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * track.nbytes  # the crop, in float64 mono: ~2 MB
    assert query.track_frames == len(track) and query.offset > 0
    cands = index.search(track, SR, gap, k=5, include_track=False)
    # the same query cut to 30 s around its gap gives the same candidates and costs
    lo = int(round(10 * tile * SR))
    cut = index.search(track[lo:lo + int(30 * SR)], SR, (GAP_START_S, GAP_START_S + 1.0), k=5, include_track=False)
    assert [(c.path, c.start_sample) for c in cands] == [(c.path, c.start_sample) for c in cut]
    np.testing.assert_allclose([c.cost for c in cands], [c.cost for c in cut], rtol=1e-9)
    with pytest.raises(SimDPSError, match="NaN|non-finite|finite"):
        index.search(track, SR, gap, k=5)


def _overlaps_gap_context(c, gap):
    lo, hi = gap[0] - CFG.context_s, gap[1] + CFG.context_s
    return c.start_s < hi and c.start_s + (gap[1] - gap[0]) > lo


@pytest.mark.parametrize("give_path", [True, False])
def test_the_query_track_in_the_corpus_obeys_the_in_track_rule(planted, give_path):
    index, q, root, _ = planted
    gap = (GAP_START_S, GAP_START_S + 1.0)
    path = root / "query.wav" if give_path else None
    cands = index.search(q, SR, gap, k=20, include_track=False, path=path,
                         params=SearchParams(n_rescore=64))
    own = [c for c in cands if Path(c.path).name == "query.wav"]
    # the corpus copy holds the gap's true audio: without the rule it would match itself at J = 0
    assert own, "the query track's other passages are still candidates"
    assert not [c for c in own if _overlaps_gap_context(c, gap)]
    assert Path(cands[0].path).name == "host.flac"


def _reencoded(q: np.ndarray, seed: int = 3) -> tuple[np.ndarray, int]:
    """The query's recording as another program might have saved it: at 48 kHz, 20 ms later
    (a codec's delay), 0.12 s longer, with noise 40 dB down (a lossy codec's error)."""
    from simdps.audio import resample

    y = resample(q, SR, 48_000)
    y = np.concatenate([np.zeros(960), y, np.zeros(4800)])
    return y + 0.01 * np.std(y) * np.random.default_rng(seed).standard_normal(len(y)), 48_000


def test_the_query_recording_at_another_rate_or_encoding_is_excluded_as_the_track_itself(planted):
    """A corpus copy of the query's recording at another rate or through a lossy codec has the
    gap's own audio: it used to come back first at J ~ 0 (the same file or samples only were
    recognised); it now obeys the in-track rule as the file itself does."""
    index, q, root, _ = planted
    gap = (GAP_START_S, GAP_START_S + 1.0)
    y, sr = _reencoded(q)
    cands = index.search(y, sr, gap, k=20, include_track=False, params=SearchParams(n_rescore=64))
    own = [c for c in cands if Path(c.path).name == "query.wav"]
    assert own and not [c for c in own if _overlaps_gap_context(c, gap)]
    assert Path(cands[0].path).name == "host.flac" and cands[0].cost > 1e-3
    cands = index.search(y, sr, gap, k=10)
    assert not [c for c in cands if c.source == "index" and Path(c.path).name == "query.wav"]
    assert cands[0].source == "index" and Path(cands[0].path).name == "host.flac"


def test_a_recording_of_the_same_length_is_not_taken_for_the_query(tmp_path):
    from simdps.retrieval.index_search import same_recording

    root = tmp_path / "corpus"
    root.mkdir()
    q = _query_track()
    sf.write(root / "other.wav", piano_like(24.0, SR, seed=101), SR)  # the query's length, other music
    sf.write(root / "copy.wav", _reencoded(q)[0], 48_000)
    silent = q.copy()
    silent[int(7.0 * SR):int(11.0 * SR)] = 0.0
    index = Index.build(root, tmp_path / "idx", config=SMALL)
    rows = {Path(p).name: i for i, p in enumerate(index.tracks.path)}
    query = prepare_query(q, SR, (9.0, 10.0), CFG)
    assert same_recording(index.tracks, rows["copy.wav"], query)
    assert not same_recording(index.tracks, rows["other.wav"], query)
    assert not same_recording(index.tracks, rows["copy.wav"], prepare_query(silent, SR, (9.0, 10.0), CFG))
    # other.wav's own passages beside the gap's time stay candidates
    near = [c for c in index.search(q, SR, (9.0, 10.0), k=30, include_track=False) if Path(c.path).name == "other.wav"]
    assert [c for c in near if _overlaps_gap_context(c, (9.0, 10.0))]


def test_search_merges_the_query_tracks_own_candidates(planted):
    index, q, root, _ = planted
    gap = (GAP_START_S, GAP_START_S + 1.0)
    cands = index.search(q, SR, gap, k=10, path=root / "query.wav")
    assert {c.source for c in cands} == {"index", "track"}
    assert [c.cost for c in cands] == sorted(c.cost for c in cands)
    # the query's recording is searched exhaustively by the track search, not through the index
    assert not [c for c in cands if c.source == "index" and Path(c.path).name == "query.wav"]

    cands = index.search(_with_in_track_repeat(q), SR, gap, k=10)  # a recording not in the corpus
    best_track = min((c for c in cands if c.source == "track"), key=lambda c: c.cost)
    best_index = min((c for c in cands if c.source == "index"), key=lambda c: c.cost)
    # both repetitions: 10 s later in the track itself, and the planted copy in host.flac
    assert abs(best_track.start_sample - round((GAP_START_S + 10.0) * SR)) <= 1 and best_track.cost < 0.05
    assert Path(best_index.path).name == "host.flac" and best_index.cost < 0.05


def test_a_track_too_short_for_in_track_candidates_still_gets_corpus_ones(planted):
    index, q, _, shift = planted
    clip = q[int(5.5 * SR):int(12.5 * SR)]  # 7 s around the gap: no room for an in-track candidate
    cands = index.search(clip, SR, (3.5, 4.5), k=3)
    assert all(c.source == "index" for c in cands)
    # the clip's passage is in host.flac (planted) and in query.wav (where it was cut from)
    found = {Path(c.path).name: c.start_sample for c in cands[:2]}
    assert abs(found["host.flac"] - (round(9.0 * SR) + shift)) <= 1
    assert abs(found["query.wav"] - round(9.0 * SR)) <= 1


# ---- recall against the exhaustive exact cost, through an approximate (IVF-PQ) index ----------

def _phrase_music(rng, pool, n_phrases, sr):
    """Music with structure: phrases from a shared pool, at random gains, in random order."""
    parts = [pool[i] * rng.uniform(0.5, 1.0) for i in rng.integers(0, len(pool), n_phrases)]
    x = np.concatenate(parts)
    return x + 1e-3 * rng.standard_normal(len(x))


@pytest.fixture(scope="module")
def phrase_corpus(tmp_path_factory):
    sr = 16_000
    rng = np.random.default_rng(0)
    pool = [piano_like(2.0, sr, seed=1000 + i) for i in range(24)]
    root = tmp_path_factory.mktemp("phrases")
    for i in range(12):
        sf.write(root / f"f{i:02d}.flac", _phrase_music(rng, pool, 20, sr), sr)
    config = IndexConfig(pca_train_positions=3000, factory="IVF16,PQ16", nprobe=4)
    index = Index.build(root, tmp_path_factory.mktemp("ivf"), config=config)
    signals = {str(p): decode_search_signal(p)[0] for p in sorted(root.glob("*.flac"))}
    queries = [_phrase_music(rng, pool, 7, sr) for _ in range(8)]
    return index, signals, queries, sr


def _exhaustive_top(query, signals, k, radius):
    """Best k starts over the whole corpus by exact J (eq. 10) on every frame-grid start;
    a start within ``radius`` of a better one in the same file is the same match."""
    rows = []
    for path, s12 in signals.items():
        costs = grid_costs(query.context, s12)
        rows += [(float(c), path, int(t)) for c, t in zip(costs.total, costs.starts)]
    rows.sort()
    top: list[tuple[float, str, int]] = []
    for r in rows:
        if all(r[1] != o[1] or abs(r[2] - o[2]) > radius for o in top):
            top.append(r)
            if len(top) == k:
                break
    return top


def test_ann_plus_rescore_reaches_recall_at_10_of_the_exhaustive_exact_search(phrase_corpus):
    index, signals, queries, sr = phrase_corpus
    assert index.factory == "IVF16,PQ16"  # approximate: 4 of 16 lists visited, 16-byte PQ codes as the default's
    recalls = []
    for i, y in enumerate(queries):
        gap = (5.3, 5.3 + (0.5, 1.0, 2.0, 1.5)[i % 4])
        truth = _exhaustive_top(prepare_query(y, sr, gap), signals, 10, CFG.coarse_hop)
        got = index.search(y, sr, gap, k=10, include_track=False, refine_offsets=False)
        assert len(got) == 10
        found = sum(any(c.path == p and abs(round(c.start_s * 12_000) - t) <= CFG.hop_length // 2 for c in got)
                    for _, p, t in truth)
        recalls.append(found / 10)
        # same cost function on the same grid: a found start has the exhaustive J
        assert got[0].cost >= truth[0][0] - 1e-6
    assert np.mean(recalls) >= 0.95, recalls


def test_a_rescore_window_skips_a_long_gaps_middle_but_reads_it_on_demand(tmp_path):
    from simdps.retrieval.index_search import _Window

    x = piano_like(6.0, SR, seed=3)
    path = tmp_path / "w.flac"
    sf.write(path, x, SR, subtype="PCM_24")
    full = _Window(str(path), len(x), SR, 1000, 100_000)
    holed = _Window(str(path), len(x), SR, 1000, 100_000, hole=(30_000, 70_000))
    assert not holed.data[30_000 - 1000:70_000 - 1000].any()  # not decoded
    np.testing.assert_array_equal(holed.data[:29_000], full.data[:29_000])
    np.testing.assert_array_equal(holed.data[69_000:], full.data[69_000:])
    np.testing.assert_array_equal(holed.read(2000, 29_000), full.read(2000, 29_000))
    np.testing.assert_array_equal(holed.read(29_000, 31_000), full.read(29_000, 31_000))  # from the file
    assert _Window(str(path), len(x), SR, 1000, 100_000, hole=(500, 70_000)).hole is None  # not inside: ignored


def test_a_gap_at_the_end_of_the_query_finds_its_match_at_the_very_end_of_a_source(tmp_path):
    """No context after the gap, and the match ends where its source ends: the next grid start
    would overrun the source, so the best one lies ~200 samples (12 kHz) below the truth, beyond
    eq. 11's half hop; refinement must still reach the exact sample."""
    root = tmp_path / "corpus"
    root.mkdir()
    q = piano_like(12.0, SR, seed=31)
    truth = 611_888  # 333_000.27 at 12 kHz: 200 above the frame grid (256 * 1300)
    host = piano_like(30.0, SR, seed=32)[:truth + SR // 2]
    tail = int(6.0 * SR)
    host[-tail:] = GAIN * q[-tail:]
    sf.write(root / "host.flac", host, SR)
    sf.write(root / "other.wav", piano_like(20.0, SR, seed=33), SR)
    index = Index.build(root, tmp_path / "idx", config=SMALL)
    best = index.search(q, SR, (11.5, 12.0), k=3, include_track=False)[0]
    assert Path(best.path).name == "host.flac"
    assert abs(best.start_sample - truth) <= 1 and best.cost < 0.05


def test_mp3_sources_are_read_through_kept_handles_with_the_same_results(tmp_path):
    """MP3 decoders stay open between re-score windows and queries (a seek from a fresh handle
    scans the file); the candidates are those of fresh handles, costs equal to rounding."""
    from simdps.audio import KeptHandles

    root = tmp_path / "corpus"
    root.mkdir()
    q = piano_like(12.0, SR, seed=41)
    host = piano_like(40.0, SR, seed=42)
    host[20 * SR:30 * SR] = 0.7 * q[1 * SR:11 * SR]  # the query's 5-6 s lie at the host's 24-25 s
    sf.write(root / "host.mp3", np.stack([host, host], axis=1), SR, format="MP3")
    sf.write(root / "other.mp3", piano_like(20.0, SR, seed=43), SR, format="MP3")
    index = Index.build(root, tmp_path / "idx", config=SMALL)
    kept = index.search(q, SR, (5.0, 6.0), k=5, include_track=False)
    assert len(index._handles) >= 1
    index._handles = KeptHandles(max_open=0)  # every handle closed after its read
    fresh = index.search(q, SR, (5.0, 6.0), k=5, include_track=False)
    assert [(c.path, c.start_sample) for c in kept] == [(c.path, c.start_sample) for c in fresh]
    np.testing.assert_allclose([c.cost for c in kept], [c.cost for c in fresh], rtol=1e-5, atol=1e-6)
    assert Path(kept[0].path).name == "host.mp3" and abs(kept[0].start_s - 24.0) < 0.002


def test_byte_identical_copies_in_the_corpus_are_searched_and_returned_once(tmp_path):
    """A file in two folders (and a symlink to it) holds the same vectors three times; its
    matches come back once, from the first copy, leaving room for other candidates."""
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    q = piano_like(20.0, SR, seed=51)
    host = piano_like(30.0, SR, seed=52)
    host[5 * SR:20 * SR] = 0.8 * q[2 * SR:17 * SR]  # the query's 10-11 s lie at the host's 13-14 s
    sf.write(root / "a.flac", host, SR)
    (root / "b" / "a copy.flac").write_bytes((root / "a.flac").read_bytes())
    (root / "link.flac").symlink_to(root / "a.flac")
    sf.write(root / "other.flac", piano_like(20.0, SR, seed=53), SR)
    index = Index.build(root, tmp_path / "idx", config=SMALL)
    assert len(index.tracks) == 4 and len(set(index.tracks.content_hash)) == 2
    cands = index.search(q, SR, (10.0, 11.0), k=6, include_track=False)
    assert Path(cands[0].path).name == "a.flac" and abs(cands[0].start_s - 13.0) < 1e-3
    assert {Path(c.path).name for c in cands} <= {"a.flac", "other.flac"}
    starts = sorted(c.start_sample for c in cands if Path(c.path).name == "a.flac")
    assert all(b - a > CFG.coarse_hop * SR / CFG.sample_rate for a, b in zip(starts, starts[1:]))


def test_the_best_k_from_the_index_are_the_first_k_of_a_longer_list(tmp_path):
    """eq. 11 re-ranks the refined candidates: asked for fewer, the search returns the first of
    the longer list, from the index and from the track itself."""
    root = tmp_path / "corpus"
    root.mkdir()
    sf.write(root / "tune.wav", repeating_tune(SR, 60.0), SR)
    sf.write(root / "other.wav", piano_like(30.0, SR, seed=3), SR)
    index = Index.build(root, tmp_path / "idx", config=SMALL)
    q = repeating_tune(SR, 40.0, noise_seed=99)  # the same tune in other noise: many near-equal matches
    for include_track in (False, True):
        ten = [(c.path, c.start_sample, c.cost) for c in index.search(q, SR, (20.0, 22.0), k=10,
                                                                       include_track=include_track)]
        assert len(ten) == 10
        for k in (1, 3):
            got = index.search(q, SR, (20.0, 22.0), k=k, include_track=include_track)
            assert [(c.path, c.start_sample, c.cost) for c in got] == ten[:k]


def test_bad_arguments_to_search_give_clear_errors_and_pcm_integers_are_scaled(planted):
    from simdps.errors import AudioError, GapError
    from simdps.retrieval.track import search_track

    index, q, root, _ = planted
    gap = (GAP_START_S, GAP_START_S + 1.0)
    ref = index.search(q, SR, gap, k=3, path=root / "query.wav")
    # int16 PCM of the same recording: scaled as soundfile reads it, so the query's own file in the
    # corpus is recognised (in-track rule) and every guide is at the corpus's scale
    q16 = np.round(np.clip(q, -1, 1) * 32767).astype(np.int16)
    got = index.search(q16, SR, gap, k=3)
    assert [(Path(c.path).name, c.start_sample) for c in got] == [(Path(c.path).name, c.start_sample) for c in ref]
    assert max(np.abs(c.extract(SR)).max() for c in got) < 2.0
    assert np.abs(search_track(q16, SR, gap, k=1)[0].extract(SR)).max() < 2.0
    assert [c.start_sample for c in index.search(q, SR, "9:10", k=3, include_track=False)] == \
        [c.start_sample for c in index.search(q, SR, gap, k=3, include_track=False)]
    for bad_gap in ("57", (8.0, 10.0, 12.0), (float("nan"), 10.0), (8.0, float("nan"))):
        with pytest.raises(GapError):
            index.search(q, SR, bad_gap)
    for bad_sr in (0, -SR, None, SR + 0.7):
        with pytest.raises(AudioError, match="sample rate"):
            index.search(q, bad_sr, gap)
    for bad_k in (0, 1.5, None, "3", True):
        with pytest.raises(SimDPSError, match="k"):
            index.search(q, SR, gap, k=bad_k)
    with pytest.raises(SimDPSError, match="k"):
        search_track(q, SR, gap, k=0)
    with pytest.raises(SimDPSError, match="SearchParams"):
        index.search(q, SR, gap, params={"k_ann": 5})
    with pytest.raises(AudioError, match=r"looks like \(channels, samples\).*audio.T"):
        index.search(np.stack([q, q]), SR, gap)
    with pytest.raises(AudioError, match="real numbers"):
        index.search(q.astype(np.complex64), SR, gap)


def test_an_index_opened_while_a_build_replaces_its_generation_opens_the_new_one(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    root.mkdir()
    sf.write(root / "a.wav", piano_like(15.0, SR, seed=1), SR)
    index_dir = tmp_path / "idx"
    Index.build(root, index_dir, config=SMALL)
    sf.write(root / "b.wav", piano_like(15.0, SR, seed=2), SR)
    Index.build(root, index_dir)  # generation 2 live, generation 1's folder deleted
    real, calls = Index._live.__func__, []

    def stale_first(cls, d, url):  # the first read of the catalog happened before the build's commit
        live = real(cls, d, url)
        calls.append(live[3])
        return live[:3] + (live[3] - 1,) + live[4:] if len(calls) == 1 else live

    monkeypatch.setattr(Index, "_live", classmethod(stale_first))
    assert Index.open(index_dir).info()["tracks"] == 2 and len(calls) == 3


def test_extracting_a_guide_from_a_file_shortened_since_the_search_is_a_clear_error(tmp_path):
    from simdps.errors import AudioError

    root, q, host = _host_corpus(tmp_path)
    index = Index.build(root, tmp_path / "idx", config=SMALL)
    best = index.search(q, SR, (GAP_START_S, GAP_START_S + 1.0), k=1, include_track=False)[0]
    assert best.extract(SR).shape == (SR,)
    sf.write(root / "host.flac", host[:int(9.0 * SR)], SR)  # cut short: the guide would be zeros
    with pytest.raises(AudioError, match="now holds .* the file changed since indexing"):
        best.extract(SR)
