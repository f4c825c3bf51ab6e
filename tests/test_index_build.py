"""simdps-index build: catalog, FAISS and Parquet stay consistent through incremental,
interrupted and failing builds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import piano_like

from simdps.errors import GapError, SimDPSError
from simdps.indexer.build import build_index
from simdps.indexer.catalog import Catalog, default_url, schema_sql
from simdps.indexer import store
from simdps.indexer.config import IndexConfig
from simdps.indexer.layout import gen_dir, list_generations
from simdps.retrieval.api import Index

SMALL = IndexConfig(stft_dims=32, chroma_dims=16, pca_train_positions=1500)
SR = 16_000


def write(path: Path, seconds: float, seed: int, sr: int = SR, gain: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, gain * piano_like(seconds, sr, seed=seed), sr)
    return path


def check_consistent(index_dir: Path, corpus: Path) -> dict:
    """The live generation, its FAISS indexes, Parquet positions and the catalog agree."""
    cat = Catalog(default_url(index_dir), create=False)
    gen = cat.live_generation()
    tracks = cat.tracks()
    cat.dispose()
    gdir = gen_dir(index_dir, gen)
    assert list_generations(index_dir) == [gen], "only the live generation is on disk"
    assert not [p for p in index_dir.iterdir() if ".tmp" in p.name]
    table = pq.read_table(gdir / "positions.parquet").to_pydict()
    ids = np.array(table["id"])
    assert np.all(np.diff(ids) > 0)
    ok = {t.path: t for t in tracks.values() if t.status == "ok"}
    assert sum(t.n_positions for t in ok.values()) == len(ids)
    by_id = {t.id: t for t in ok.values()}
    for tid, pos, native, row in zip(table["track_id"], table["position_12k"], table["native_sample"], ids):
        t = by_id[tid]
        m = row - t.first_row
        assert 0 <= m < t.n_positions and pos == m * SMALL.search.coarse_hop
        assert native == round(pos * t.sample_rate / 12_000)
    for side, flag in (("pre", "has_pre"), ("post", "has_post")):
        index = store.read_index(gdir / f"{side}.faiss.zst")
        assert index.ntotal == int(np.sum(table[flag]))
        stored = np.sort(faiss.vector_to_array(faiss.downcast_index(index).id_map))
        assert np.array_equal(stored, np.sort(ids[np.array(table[flag])]))
    on_disk = {p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file()}
    assert set(tracks) <= on_disk
    return {"generation": gen, "ok": ok, "tracks": tracks}


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    write(root / "a.wav", 12.0, 1)
    write(root / "b.flac", 10.0, 2, sr=22_050)
    write(root / "sub" / "deeper" / "c.wav", 9.0, 3, sr=44_100)
    (root / "notes.txt").write_text("liner notes")
    (root / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEgarbage")
    (root / "empty.flac").write_bytes(b"")
    return root


def test_index_build_in_python_names_the_files_it_skipped(corpus, tmp_path):
    from simdps import IndexConfig as PublicIndexConfig, SearchParams, SimDPSWarning

    assert PublicIndexConfig is IndexConfig and SearchParams().n_rescore == 20  # importable from simdps
    with pytest.warns(SimDPSWarning, match=r"2 file\(s\) .* could not be indexed .*broken\.wav: .*not really WAV"):
        Index.build(corpus, tmp_path / "idx", config=SMALL)
    with pytest.warns(SimDPSWarning, match="empty.flac"):  # still skipped, and still said
        Index.build(corpus, tmp_path / "idx")


def test_build_indexes_audio_records_bad_files_and_ignores_the_rest(corpus, tmp_path):
    index_dir = tmp_path / "idx"
    result = build_index(corpus, index_dir, config=SMALL, progress=False)
    s = result.stats
    assert (s.files_seen, s.files_added, s.files_failed, s.files_ignored) == (5, 3, 2, 2)
    assert result.factory == "Flat" and result.generation is not None
    assert s.hours == pytest.approx((12 + 10 + 9) / 3600)
    state = check_consistent(index_dir, corpus)
    assert sorted(state["ok"]) == ["a.wav", "b.flac", "sub/deeper/c.wav"]
    errors = {p: t.error for p, t in state["tracks"].items() if t.status == "error"}
    assert sorted(errors) == ["broken.wav", "empty.flac"] and all(errors.values())
    c = state["ok"]["sub/deeper/c.wav"]
    assert (c.sample_rate, c.channels, c.frames) == (44_100, 1, 9 * 44_100)
    cfg = json.loads((index_dir / "config.json").read_text())
    assert cfg["corpus_root"] == str(corpus.resolve()) and cfg["index"]["stft_dims"] == 32
    info = Index.open(index_dir).info()
    assert info["tracks"] == 3 and info["failed_files"] == 2 and info["factory"] == "Flat"
    umask = os.umask(0o022)
    os.umask(umask)
    for path in index_dir.rglob("*"):  # others may search an index: no owner-only files or folders
        assert path.stat().st_mode & 0o777 == (0o777 if path.is_dir() else 0o666) & ~umask, path
    assert info["vectors"]["pre"] > 0 and info["size_bytes"] > 0


def test_second_build_adds_new_drops_deleted_and_skips_unchanged(corpus, tmp_path):
    index_dir = tmp_path / "idx"
    first = build_index(corpus, index_dir, config=SMALL, progress=False)
    again = build_index(corpus, index_dir, progress=False)
    assert again.generation == first.generation, "nothing changed: no new index files"
    assert (again.stats.files_added, again.stats.files_unchanged, again.stats.files_removed) == (0, 5, 0)

    before = Index.open(index_dir)
    write(corpus / "d.wav", 11.0, 4)  # new
    (corpus / "a.wav").unlink()  # deleted
    write(corpus / "b.flac", 10.0, 5, sr=22_050)  # same name, new content
    c = corpus / "sub" / "deeper" / "c.wav"
    os.utime(c, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same content
    third = build_index(corpus, index_dir, progress=False)
    s = third.stats
    assert (s.files_added, s.files_removed, s.files_failed) == (2, 1, 0)
    assert third.changed == 1  # b.flac: of the 2 added, 1 was in the index with other content
    assert s.files_unchanged == 3  # c.wav (re-hashed, same content) and the two recorded bad files
    assert third.generation != first.generation and not third.full_rebuild
    state = check_consistent(index_dir, corpus)
    assert sorted(state["ok"]) == ["b.flac", "d.wav", "sub/deeper/c.wav"]
    assert state["ok"]["sub/deeper/c.wav"].mtime_ns == c.stat().st_mtime_ns
    # the changed file's old vectors are gone: its rows are the new content's only
    assert state["ok"]["b.flac"].build_id == state["ok"]["d.wav"].build_id
    # and the cache keeps only live shards
    cache = [p for p in (index_dir / "cache").rglob("*.npz") if p.name != "pca.npz"]
    assert len(cache) == 3
    # an Index opened before describes what it searches, and names the generation now live
    old, new = before.info(), Index.open(index_dir).info()
    assert (old["generation"], old["live_generation"]) == (first.generation, third.generation)
    assert new["generation"] == new["live_generation"] == third.generation
    assert (old["tracks"], new["tracks"]) == (3, 3)
    assert old["hours"] == pytest.approx((12 + 10 + 9) / 3600) and new["hours"] == pytest.approx((11 + 10 + 9) / 3600)
    assert old["size_bytes"] is None and old["bytes_per_hour"] is None  # its folder is gone
    assert new["size_bytes"] > 0


def test_build_refuses_other_embedding_settings_without_rebuild(corpus, tmp_path):
    index_dir = tmp_path / "idx"
    build_index(corpus, index_dir, config=SMALL, progress=False)
    other = IndexConfig(stft_dims=24, chroma_dims=8, pca_train_positions=1500)
    with pytest.raises(SimDPSError, match="--rebuild"):
        build_index(corpus, index_dir, config=other, progress=False)
    rebuilt = build_index(corpus, index_dir, config=other, rebuild=True, progress=False)
    assert rebuilt.full_rebuild and rebuilt.stats.files_added == 3
    assert Index.open(index_dir).pca.dim == 32
    check_consistent(index_dir, corpus)


@pytest.mark.slow
def test_a_build_killed_half_way_leaves_the_live_index_and_resumes(tmp_path):
    corpus = tmp_path / "corpus"
    for i in range(2):
        write(corpus / f"base{i}.wav", 10.0, 10 + i)
    index_dir = tmp_path / "idx"
    build_index(corpus, index_dir, config=SMALL, progress=False)
    before = check_consistent(index_dir, corpus)
    music = piano_like(25.0, 44_100, seed=20)
    for i in range(10):  # ten different files (shifted, at other gains) without synthesising ten
        sf.write(corpus / f"new{i:02d}.wav", (0.5 + 0.04 * i) * np.roll(music, 4410 * i), 44_100)
    shard_dir = next(p for p in (index_dir / "cache").iterdir() if p.is_dir())
    code = "from simdps.cli.index import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "build", str(corpus), "--index", str(index_dir), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(shard_dir.glob("*.npz"))) >= 2 + 3:  # pca + 2 base + >= 2 new shards done
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.npz")}
    assert 5 <= len(finished) < 13, "killed half-way: some but not all new files embedded"

    # The killed build left the previous generation live and searchable.
    cat = Catalog(default_url(index_dir), create=False)
    assert cat.live_generation() == before["generation"]
    assert cat.last_build()["status"] == "running"
    cat.dispose()
    assert Index.open(index_dir).info()["tracks"] == 2

    resumed = build_index(corpus, index_dir, workers=2, progress=False)
    assert resumed.stats.files_added == 10 and resumed.stats.files_unchanged == 2
    state = check_consistent(index_dir, corpus)
    assert len(state["ok"]) == 12
    # shards finished before the kill were reused, not recomputed
    for name, mtime in finished.items():
        assert (shard_dir / name).stat().st_mtime_ns == mtime
    assert not list(shard_dir.glob(".*")), "no half-written shard left behind"
    cat = Catalog(default_url(index_dir), create=False)
    assert [b["status"] for b in cat.builds()] == ["done", "interrupted", "done"]
    cat.dispose()


def test_a_file_that_kills_its_worker_process_is_left_out_and_the_build_goes_on(corpus, tmp_path, monkeypatch):
    """A decoder that crashes (SIGSEGV) on one file no longer takes the whole build down: the
    file is isolated, recorded as failed with the reason, and every other file is indexed."""
    import simdps.indexer.build as build
    from crash_worker import process_file_or_crash

    write(corpus / "crash.wav", 8.0, 4)
    for i in range(3):  # enough files that the crash happens with others queued behind it
        write(corpus / "more" / f"m{i}.wav", 7.0, 10 + i)
    monkeypatch.setattr(build, "process_file", process_file_or_crash)
    result = build_index(corpus, tmp_path / "idx", config=SMALL, workers=2, progress=False)
    errors = dict(result.errors)
    assert set(errors) == {"broken.wav", "empty.flac", "crash.wav"}
    assert "crashed the worker process" in errors["crash.wav"]
    state = check_consistent(tmp_path / "idx", corpus)
    assert set(state["ok"]) == {"a.wav", "b.flac", "sub/deeper/c.wav", "more/m0.wav", "more/m1.wav", "more/m2.wav"}
    assert state["tracks"]["crash.wav"].status == "error"

    monkeypatch.setenv("SIMDPS_TEST_CRASH_ALL", "1")  # workers that die on everything: a clear error
    for i in range(2):  # two new files: a pool runs them (one alone would be processed in-process)
        write(corpus / f"new{i}.wav", 6.0, 20 + i)
    with pytest.raises(SimDPSError, match="die before finishing any file"):
        build_index(corpus, tmp_path / "idx", config=SMALL, workers=2, progress=False)
    check_consistent(tmp_path / "idx", corpus)  # the live index is untouched


def test_cli_build_info_query_and_user_errors(corpus, tmp_path, capsys):
    from simdps.cli.index import main

    index_dir = tmp_path / "idx"
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "--index", str(index_dir)])
    assert exit_info.value.code == 2 and "build one" in capsys.readouterr().err

    main(["build", str(corpus), "--index", str(index_dir), "-q", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == 3 and summary["failed"] == 2 and summary["ignored"] == 2
    assert {e["path"] for e in summary["errors"]} == {"broken.wav", "empty.flac"}
    main(["build", str(corpus), "--index", str(index_dir), "-q", "--json"])  # nothing changed: not tried again
    summary = json.loads(capsys.readouterr().out)
    assert (summary["added"], summary["unchanged"], summary["failed"]) == (0, 5, 0) and not summary["errors"]
    assert {e["path"] for e in summary["still_failing"]} == {"broken.wav", "empty.flac"}
    main(["build", str(corpus), "--index", str(index_dir), "-q"])
    assert "still skipped broken.wav" in capsys.readouterr().err
    main(["build", str(corpus), "--index", str(index_dir), "-q", "--json", "--rebuild"])  # tried again
    summary = json.loads(capsys.readouterr().out)
    assert (summary["added"], summary["failed"]) == (3, 2) and not summary["still_failing"]
    assert summary["changed"] == 0  # re-embedded, but the same content

    main(["info", "--index", str(index_dir), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["tracks"] == 3 and info["factory"] == "Flat" and info["hours"] == pytest.approx(31 / 3600)
    assert info["signals_bytes"] == 0

    query = write(tmp_path / "query.wav", 12.0, 99)
    main(["query", str(query), "--gap", "6:7", "--index", str(index_dir), "--top", "3", "--json"])
    decoded = capsys.readouterr().out
    main(["build", str(corpus), "--index", str(index_dir), "-q", "--keep-signals"])  # kept from now on
    capsys.readouterr()
    main(["info", "--index", str(index_dir), "--json"])
    assert json.loads(capsys.readouterr().out)["signals_bytes"] == 31 * 12_000 * 4  # float32 at 12 kHz
    main(["query", str(query), "--gap", "6:7", "--index", str(index_dir), "--top", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert [(c["path"], c["start_sample"]) for c in out["candidates"]] == \
        [(c["path"], c["start_sample"]) for c in json.loads(decoded)["candidates"]]
    cands = out["candidates"]
    assert 1 <= len(cands) <= 3
    assert set(cands[0]) == {"path", "start_s", "start_sample", "sample_rate", "cost", "cost_stft", "cost_chroma",
                             "source"}
    assert {c["source"] for c in cands} <= {"index", "track"}
    assert [c["cost"] for c in cands] == sorted(c["cost"] for c in cands)
    main(["query", str(query), "--gap", "6:7", "--index", str(index_dir), "--top", "3", "--json",
          "--n-complete", "0", "--k-ann", "64", "--n-rescore", "4"])
    fewer = json.loads(capsys.readouterr().out)["candidates"]
    assert fewer and [c["cost"] for c in fewer] == sorted(c["cost"] for c in fewer)
    main(["query", str(query), "--gap", "6:7", "--index", str(index_dir), "--top", "3", "--json",
          "--n-rescore", "2", "--max-rescore", "6", "--rescore-margin", "0.5"])
    extended = json.loads(capsys.readouterr().out)["candidates"]
    assert extended and [c["cost"] for c in extended] == sorted(c["cost"] for c in extended)
    with pytest.raises(SystemExit) as exit_info:
        main(["query", str(query), "--gap", "6:7", "--index", str(index_dir), "--rescore-margin", "-1"])
    assert exit_info.value.code == 2

    with pytest.raises(SystemExit) as exit_info:
        main(["query", str(query), "--gap", "11.5:13", "--index", str(index_dir)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "outside" in err and "Traceback" not in err
    with pytest.raises(GapError, match="outside"):
        Index.open(index_dir).search(piano_like(12.0, SR), SR, (20.0, 21.0))
    main(["query", str(query), "--gap", "1:11", "--index", str(index_dir), "--json"])  # no 10-s segment has context
    out = capsys.readouterr()
    assert json.loads(out.out) == {"candidates": []}
    assert "no candidate found" in out.err and "10-s segment" in out.err and "shorter gap" in out.err


def test_an_index_of_an_older_format_asks_for_a_rebuild(corpus, tmp_path):
    index_dir = tmp_path / "idx"
    build_index(corpus, index_dir, config=SMALL, progress=False)
    top = json.loads((index_dir / "config.json").read_text())
    top["format_version"] = 1  # e.g. L2 indexes stored uncompressed, before inner products
    (index_dir / "config.json").write_text(json.dumps(top))
    with pytest.raises(SimDPSError, match="format 1 is not .*rebuild"):
        Index.open(index_dir)
    with pytest.raises(SimDPSError, match="format 1 is not .*rebuild"):
        build_index(corpus, index_dir, config=SMALL, progress=False)
    result = build_index(corpus, index_dir, config=SMALL, rebuild=True, progress=False)  # as the message says
    assert result.stats.files_added == 3 and Index.open(index_dir).info()["tracks"] == 3


def test_cli_build_dims_sets_the_embedding_width_and_changing_it_needs_rebuild(corpus, tmp_path, capsys):
    from simdps.cli.index import main

    index_dir = tmp_path / "idx"
    main(["build", str(corpus), "--index", str(index_dir), "-q", "--dims", "24,8"])
    capsys.readouterr()
    assert Index.open(index_dir).pca.dim == 32
    with pytest.raises(SystemExit) as exit_info:
        main(["build", str(corpus), "--index", str(index_dir), "-q", "--dims", "16,8"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--rebuild" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["build", str(corpus), "--index", str(index_dir), "-q", "--dims", "16"])
    assert exit_info.value.code == 2 and "two integers" in capsys.readouterr().err


def test_two_builds_cannot_run_on_one_index_at_once(corpus, tmp_path):
    from simdps.indexer.build import _exclusive

    index_dir = tmp_path / "idx"
    index_dir.mkdir()
    with _exclusive(index_dir):  # as a running build holds it
        with pytest.raises(SimDPSError, match="another `simdps-index build` is running"):
            build_index(corpus, index_dir, config=SMALL, progress=False)


def test_scan_follows_folder_links_once_and_skips_hidden_files_and_the_index(tmp_path):
    from simdps.indexer.scan import scan_corpus

    root = tmp_path / "corpus"
    write(root / "a.wav", 1.0, 1)
    write(root / ".hidden" / "b.wav", 1.0, 2)
    write(tmp_path / "elsewhere" / "c.flac", 1.0, 3)
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    (root / "loop").symlink_to(root)  # a cycle must not be walked forever
    write(root / "idx" / "d.wav", 1.0, 4)  # an index folder inside the corpus
    (root / "readme.md").write_text("x")
    files, ignored = scan_corpus(root, exclude=[root / "idx"])
    assert [f.rel_path for f in files] == ["a.wav", "linked/c.flac"]
    assert ignored == 1


def test_a_link_to_a_missing_audio_file_is_reported_as_failed_and_indexed_once_its_target_is_back(tmp_path):
    root = tmp_path / "corpus"
    write(root / "a.wav", 10.0, 1)
    target = tmp_path / "nas" / "b.flac"  # on a drive that is not mounted yet
    (root / "b.flac").symlink_to(target)
    (root / "gone.txt").symlink_to(tmp_path / "nas" / "gone.txt")  # not audio: ignored as before
    index_dir = tmp_path / "idx"
    result = build_index(root, index_dir, config=SMALL, progress=False)
    assert (result.stats.files_added, result.stats.files_failed, result.stats.files_ignored) == (1, 1, 1)
    errors = dict(result.errors)
    assert list(errors) == ["b.flac"] and "broken link" in errors["b.flac"] and str(target) in errors["b.flac"]
    write(target, 9.0, 2)  # the drive is back
    result = build_index(root, index_dir, config=SMALL, progress=False)
    assert (result.stats.files_added, result.stats.files_failed) == (1, 0)
    assert sorted(check_consistent(index_dir, root)["ok"]) == ["a.wav", "b.flac"]


@pytest.mark.parametrize("guess", [None, 1_000, 0])  # the resampler's output outgrowing a short first guess
def test_a_file_is_decoded_to_the_search_signal_block_by_block(tmp_path, monkeypatch, guess):
    import simdps.indexer.work as work
    from simdps.retrieval.features import search_signal

    x = np.random.default_rng(0).uniform(-0.5, 0.5, (300_001, 2)).astype(np.float32)
    sf.write(tmp_path / "s.flac", x, 44_100, subtype="PCM_24")
    monkeypatch.setattr(work, "_BLOCK_FRAMES", 65_536)
    if guess is not None:
        monkeypatch.setattr(work, "_expected_length", lambda *args: guess)
    got, sr = work.decode_search_signal(tmp_path / "s.flac")
    ref = search_signal(sf.read(tmp_path / "s.flac", dtype="float32")[0], 44_100)
    assert sr == 44_100 and got.dtype == np.float32 and len(got) == len(ref)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_a_full_disk_fails_the_files_it_stops_with_a_clear_error_not_the_build(tmp_path, monkeypatch):
    import errno

    import simdps.indexer.work as work

    root = tmp_path / "corpus"
    write(root / "a.wav", 10.0, 1)
    write(root / "b.wav", 10.0, 2)
    real, written = work.write_shard, []

    def full(path, emb, meta):  # the disk fills up after the first file's shard
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        return real(path, emb, meta)

    monkeypatch.setattr(work, "write_shard", full)
    result = build_index(root, tmp_path / "idx", config=SMALL, workers=1, progress=False)
    assert (result.stats.files_added, result.stats.files_failed) == (1, 1)
    (path, why), = result.errors
    assert path == "b.wav" and "No space left on device" in why and "free some disk space" in why
    assert sorted(check_consistent(tmp_path / "idx", root)["ok"]) == ["a.wav"]


def test_a_disk_filling_up_while_a_kept_signal_is_written_fails_that_file_and_leaves_no_partial_signal(
        tmp_path, monkeypatch):
    """The search signal is written chunk by chunk while the file is embedded: a write that fails
    part-way fails the file with the clear message, and no partial signal or temporary file stays."""
    import dataclasses
    import errno
    from contextlib import contextmanager

    import simdps.indexer.work as work

    root = tmp_path / "corpus"
    write(root / "a.wav", 20.0, 1)
    write(root / "b.wav", 20.0, 2)
    monkeypatch.setattr(work, "_BLOCK_FRAMES", 65_536)  # several chunks a file
    real, opened = work.writing_signal, []

    @contextmanager
    def filling(path):  # the disk fills while the second file's signal is written
        opened.append(path)
        second, written = len(opened) == 2, []
        with real(path) as put:
            def write(samples):
                if second and len(written) == 3:
                    raise OSError(errno.ENOSPC, "No space left on device")
                written.append(len(samples))
                put(samples)

            yield write

    monkeypatch.setattr(work, "writing_signal", filling)
    config = dataclasses.replace(SMALL, keep_signals=True)
    result = build_index(root, tmp_path / "idx", config=config, workers=1, progress=False)
    assert (result.stats.files_added, result.stats.files_failed) == (1, 1)
    (failed, why), = result.errors
    assert "No space left on device" in why and "free some disk space" in why
    ok = {"a.wav", "b.wav"} - {failed}
    assert sorted(check_consistent(tmp_path / "idx", root)["ok"]) == sorted(ok)
    assert [p.name for p in (tmp_path / "idx" / "signals").iterdir()] == [opened[0].name]  # no partial, no .tmp


def test_corpus_folder_must_exist(tmp_path):
    with pytest.raises(SimDPSError, match="corpus folder not found"):
        build_index(tmp_path / "nope", tmp_path / "idx", progress=False)


def test_schema_sql_ships_inside_the_package():
    repo = Path(__file__).resolve().parents[1] / "schema.sql"
    assert schema_sql() == repo.read_text(encoding="utf-8")
    assert "CREATE TABLE IF NOT EXISTS tracks" in schema_sql()


def test_a_file_name_that_is_not_utf8_fails_that_file_not_the_build(tmp_path):
    root = tmp_path / "corpus"
    write(root / "a.wav", 12.0, 1)
    latin1 = os.fsencode(root) + b"/caf\xe9.wav"  # a name written by a Latin-1 system
    with open(latin1, "wb") as f:
        f.write((root / "a.wav").read_bytes())
    result = build_index(root, tmp_path / "idx", config=SMALL, progress=False)
    assert (result.stats.files_added, result.stats.files_failed) == (1, 1)
    (path, why), = result.errors
    assert path == "caf\\udce9.wav" and "not valid UTF-8" in why and "rename" in why
    assert sorted(check_consistent(tmp_path / "idx", root)["ok"]) == ["a.wav"]


def test_float_files_with_nan_inf_or_absurd_levels_fail_with_their_reason_and_queries_too(tmp_path):
    """Squared STFT magnitudes overflow float32 near 1e16, which made every cost of such audio
    NaN (and its file unfindable): a corpus file or a query beyond 2^40 is refused, and says so."""
    root = tmp_path / "corpus"
    x = piano_like(12.0, SR, seed=1)
    sf.write(root.mkdir() or root / "a.wav", x, SR)
    for name, damage in (("nan.wav", np.nan), ("inf.wav", -np.inf)):
        y = x.copy()
        y[SR * 5] = damage
        sf.write(root / name, y, SR, subtype="FLOAT")
    sf.write(root / "huge.wav", 1e20 * x, SR, subtype="FLOAT")
    later = np.concatenate([np.zeros(2 * SR), x])  # 2 s later: another recording, not the query's own
    sf.write(root / "loud.wav", 2.0 ** 39 * later / np.abs(x).max(), SR, subtype="FLOAT")  # in range
    result = build_index(root, tmp_path / "idx", config=SMALL, progress=False)
    errors = dict(result.errors)
    assert sorted(errors) == ["huge.wav", "inf.wav", "nan.wav"]
    assert "NaN/Inf" in errors["nan.wav"] and "NaN/Inf" in errors["inf.wav"]
    assert "samples reach" in errors["huge.wav"] and "rescale" in errors["huge.wav"]
    index = Index.open(tmp_path / "idx")
    cands = index.search(x, SR, (6.0, 7.0), k=3)
    assert cands and all(np.isfinite(c.cost) for c in cands)
    # the loud copy is the same music at another level: it is found where the query's own audio is
    loud = [c for c in cands if Path(c.path).name == "loud.wav"]
    assert loud and abs(loud[0].start_sample - 8 * SR) <= 1 and loud[0].cost < 1e-3
    with pytest.raises(SimDPSError, match="rescale"):
        index.search(1e20 * x, SR, (6.0, 7.0), k=3)


def test_bad_catalog_urls_and_foreign_or_damaged_index_folders_give_clear_errors(corpus, tmp_path, capsys):
    from simdps.cli.index import main

    with pytest.raises(SimDPSError, match="cannot read the catalog URL"):
        build_index(corpus, tmp_path / "a", config=SMALL, db_url="garbage", progress=False)
    with pytest.raises(SimDPSError, match="in-memory SQLite catalog"):
        build_index(corpus, tmp_path / "b", config=SMALL, db_url="sqlite:///:memory:", progress=False)
    foreign = tmp_path / "webapp"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"name": "my web app"}')
    for rebuild in (False, True):
        with pytest.raises(SimDPSError, match="not a SimDPS index"):
            build_index(corpus, foreign, config=SMALL, rebuild=rebuild, progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["config.json"]  # no lock, nothing written
    (foreign / "config.json").write_text("[1, 2]")
    with pytest.raises(SimDPSError, match="not a SimDPS index"):
        Index.open(foreign)

    index_dir = tmp_path / "idx"
    build_index(corpus, index_dir, config=SMALL, progress=False)
    gen = next(index_dir.glob("gen-*"))
    with pytest.raises(SimDPSError, match="one generation of the index"):
        Index.open(gen)
    other = tmp_path / "other.sqlite"
    with pytest.raises(SimDPSError, match="no such catalog file"):
        Index.open(index_dir, db_url=f"sqlite:///{other}")
    assert not other.exists() and not (gen / "catalog.sqlite").exists()  # a read creates no file
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "--index", str(index_dir), "--db", "garbage"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "cannot read the catalog URL" in err and "Traceback" not in err

    (gen / "pca.npz").write_bytes(b"junk")
    with pytest.raises(SimDPSError, match="pca.npz: damaged.*--rebuild"):
        Index.open(index_dir)
    (gen / "config.json").unlink()
    with pytest.raises(SimDPSError, match="config.json: missing or damaged.*--rebuild"):
        Index.open(index_dir)
    (index_dir / "catalog.sqlite").write_bytes(b"junk" * 1000)
    with pytest.raises(SimDPSError, match="not a readable catalog.*--rebuild"):
        Index.open(index_dir)
    with pytest.raises(SimDPSError, match="not a readable catalog"):
        build_index(corpus, index_dir, progress=False)


def test_build_arguments_are_checked(corpus, tmp_path):
    (tmp_path / "file.wav").write_bytes(b"x")
    with pytest.raises(SimDPSError, match="is a file, not a folder"):
        build_index(corpus, tmp_path / "file.wav", progress=False)
    for workers in (0, -1, 1.5):
        with pytest.raises(SimDPSError, match="workers"):
            build_index(corpus, tmp_path / "idx", workers=workers, progress=False)


def test_settings_no_index_can_use_are_refused_before_anything_is_written(corpus, tmp_path, capsys):
    """A first build with an unusable setting used to write it into config.json and fail half-way
    (or in FAISS, with a traceback), after which only --rebuild could get the folder back."""
    from dataclasses import replace

    from simdps.config import SearchConfig

    index_dir = tmp_path / "idx"
    bad = {"hop 1000 (not a multiple of the frame hop)": (replace(SMALL, search=SearchConfig(coarse_hop=1000)),
                                                           "multiple of the frame hop"),
           "stft_dims wider than its block": (replace(SMALL, stft_dims=5000), "stft_dims must be"),
           "chroma_dims wider than its block": (replace(SMALL, chroma_dims=2000), "chroma_dims must be"),
           "an unknown FAISS structure": (replace(SMALL, factory="Garbage"), "FAISS cannot build")}
    for what, (config, message) in bad.items():
        with pytest.raises(SimDPSError, match=message):
            build_index(corpus, index_dir, config=config, progress=False)
        assert not (index_dir / "config.json").exists(), what
    assert build_index(corpus, index_dir, config=SMALL, progress=False).stats.files_added == 3
    from simdps.cli.index import main

    with pytest.raises(SystemExit) as exit_info:  # it was a traceback from FAISS
        main(["build", str(corpus), "--index", str(tmp_path / "cli"), "--dims", "5000,64", "-q"])
    assert exit_info.value.code == 2
    assert "stft_dims must be a whole number from 1 to 1152" in capsys.readouterr().err


def test_one_database_serves_one_index(corpus, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    build_index(corpus, tmp_path / "first", config=SMALL, db_url=url, progress=False)
    with pytest.raises(SimDPSError, match="already holds the catalog of another index"):
        build_index(corpus, tmp_path / "second", config=SMALL, db_url=url, progress=False)
    assert not (tmp_path / "second" / "config.json").exists()
    # --rebuild makes the new folder that catalog's index (it used to stop on the other's missing files)
    result = build_index(corpus, tmp_path / "second", config=SMALL, db_url=url, rebuild=True, progress=False)
    assert result.stats.files_added == 3
    assert Index.open(tmp_path / "second").info()["tracks"] == 3


def test_a_corpus_with_no_readable_audio_says_why(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "notes.txt").write_text("liner notes")
    with pytest.raises(SimDPSError, match="no audio files found .1 other file ignored"):
        build_index(root, tmp_path / "idx", config=SMALL, progress=False)
    (root / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEgarbage")
    with pytest.raises(SimDPSError, match=r"too little audio.*1 of the 1 files tried could not be read.*broken\.wav"):
        build_index(root, tmp_path / "idx", config=SMALL, progress=False)


def test_a_new_structure_or_search_setting_applies_even_when_no_file_changed(corpus, tmp_path):
    """--factory and --nprobe on an up-to-date index used to be saved but not applied until some
    file changed; info kept reporting the old ones."""
    from dataclasses import replace

    index_dir = tmp_path / "idx"
    first = build_index(corpus, index_dir, config=SMALL, progress=False)
    assert first.factory == "Flat"
    ivf = build_index(corpus, index_dir, config=replace(SMALL, factory="IVF4,Flat", nprobe=2), progress=False)
    assert ivf.generation != first.generation and ivf.factory == "IVF4,Flat" and ivf.full_rebuild
    info = Index.open(index_dir).info()
    assert (info["factory"], info["nprobe"], info["generation"]) == ("IVF4,Flat", 2, ivf.generation)
    assert build_index(corpus, index_dir, progress=False).generation == ivf.generation  # nothing asked: no new one
    probe = build_index(corpus, index_dir, config=replace(SMALL, factory="IVF4,Flat", nprobe=3), progress=False)
    assert probe.generation != ivf.generation and not probe.full_rebuild  # the FAISS indexes are not retrained
    index = Index.open(index_dir)
    assert index.info()["nprobe"] == 3
    q, sr = sf.read(corpus / "a.wav")
    assert index.search(q, sr, (5.0, 6.0), k=3, include_track=False)
