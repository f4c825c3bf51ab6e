"""``simdps-index build``: corpus folder -> embeddings -> FAISS + Parquet + SQL catalog.

Incremental and resumable:

* a file whose size and mtime match its catalog row is skipped unread; a file whose stat
  changed is hashed and skipped if its content hash did not change;
* each new file's embeddings go to a content-addressed shard in ``cache/`` as soon as it
  is done, so a killed build (even ``kill -9``) restarts without redoing finished files;
* the new index files are written into a fresh ``gen-<build>`` folder, and the catalog
  transaction that names that generation is the single commit point. Until then the
  previous generation stays live and consistent;
* a file that cannot be read is recorded with its error and skipped; non-audio files are
  ignored (and counted).

Vectors are added to the live FAISS index incrementally (removed or changed files'
id ranges are removed first); the index is rebuilt from the shard cache when the
structure changes (e.g. the corpus outgrew ``Flat``), when it cannot remove ids (HNSW),
or on ``--rebuild`` (which also refits the PCA and re-embeds every file).
"""

from __future__ import annotations

import fcntl
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from simdps.atomic import temp_file, write_json_atomic, write_text_atomic
from simdps.audio import audio_info, content_hash
from simdps.errors import SimDPSError
from simdps.indexer import store
from simdps.indexer.catalog import BuildStats, Catalog, TrackRow, default_url, display_url
from simdps.indexer.config import CONFIG_FILE, FORMAT_VERSION, IndexConfig, read_index_config
from simdps.indexer.embed import PCA_FILE, fit_pca
from simdps.indexer.generation import live_factory, write_generation
from simdps.indexer.layout import (
    SIGNALS_DIR,
    gen_dir,
    generation_config,
    pca_fingerprint,
    remove_other_generations,
    shard_path,
    signal_path,
)
from simdps.indexer.scan import CorpusFile, scan_corpus
from simdps.indexer.work import FileResult, FileTask, decode_search_signal, init_worker, process_file
from simdps.retrieval.features import frame_features

__all__ = ["build_index", "BuildResult", "EMBEDDING_FIELDS"]

CACHE_DIR = "cache"
CURRENT_PCA = "current"  # cache/current names the shard folder of a PCA not yet committed
LOCK_FILE = ".build.lock"

# IndexConfig fields that change the vectors: an existing index cannot switch them in place.
EMBEDDING_FIELDS = ("search", "stft_frame_dims", "stft_dims", "chroma_dims")
# IndexConfig fields a generation is written with that change neither the vectors nor the files
# (pca_*, seed: a fit already made; keep_signals: the signals/ folder): changed on an existing
# index, they make a new generation even when no file changed.
STRUCTURE_FIELDS = ("factory", "flat_max_vectors", "pq_m", "pq_nbits", "train_vectors_per_list", "nprobe",
                    "ef_search")


@dataclass
class BuildResult:
    """What a build did."""

    index_dir: Path
    generation: int | None
    factory: str | None
    stats: BuildStats
    seconds: float
    errors: list[tuple[str, str]] = field(default_factory=list)  # (relative path, message)
    full_rebuild: bool = False
    # Files that failed in an earlier build and are unchanged since, so not tried again
    # (``--rebuild`` tries them): (relative path, the recorded message).
    still_failing: list[tuple[str, str]] = field(default_factory=list)
    # Of ``stats.files_added``, files already in the catalog under the same path whose content
    # changed (re-embedded).
    changed: int = 0


def _utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (a file name in another encoding holds lone surrogates)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _crashed(task: FileTask) -> FileResult:
    """The result of a file whose processing killed its worker process twice (once alone)."""
    try:
        digest = content_hash(task.abs_path)
    except OSError:
        digest = None
    return FileResult(task.rel_path, digest, False,
                      "decoding or embedding it crashed the worker process (a decoder bug, or a damaged "
                      "file); it is left out: check the file or re-encode it")


def build_index(corpus_dir: str | os.PathLike, index_dir: str | os.PathLike, *,
                config: IndexConfig | None = None, db_url: str | None = None, workers: int = 1,
                rebuild: bool = False, progress: bool = True) -> BuildResult:
    """Build or update the index of ``corpus_dir`` in ``index_dir``.

    Parameters
    ----------
    corpus_dir : folder searched recursively for audio files.
    index_dir : index folder (created if missing).
    config : settings for a new index; for an existing one, ``None`` keeps its settings
        (the FAISS factory and search knobs may change, the embedding settings only with
        ``rebuild``).
    db_url : SQLAlchemy URL of the catalog; default SQLite in ``index_dir`` (or the URL
        the index was built with).
    workers : processes that hash, decode and embed files.
    rebuild : refit the PCA, re-embed every file and rebuild the FAISS index.
    progress : show a tqdm bar (files, hours of audio).
    """
    t_start = time.perf_counter()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise SimDPSError(f"workers must be a whole number of processes, at least 1; got {workers!r}")
    workers = int(workers)
    index_dir = Path(index_dir)
    if index_dir.exists() and not index_dir.is_dir():
        raise SimDPSError(f"{index_dir} is a file, not a folder; choose a folder for the index")
    corpus_root = Path(corpus_dir)
    if not corpus_root.is_dir():
        raise SimDPSError(f"{corpus_dir}: corpus folder not found; pass a folder of audio files")
    corpus_root = corpus_root.resolve()
    if (index_dir / CONFIG_FILE).exists():  # another program's folder is refused before a lock is left in it
        read_index_config(index_dir, any_version=True)
    index_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(index_dir):
        return _build_locked(t_start, corpus_root, index_dir, config, db_url, workers, rebuild, progress)


@contextmanager
def _exclusive(index_dir: Path):
    """One build per index at a time (an advisory lock the OS drops if the build is killed)."""
    with open(index_dir / LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SimDPSError(f"{index_dir}: another `simdps-index build` is running on this index; "
                              "wait for it to finish") from None
        yield


def _build_locked(t_start: float, corpus_root: Path, index_dir: Path, config: IndexConfig | None,
                  db_url: str | None, workers: int, rebuild: bool, progress: bool) -> BuildResult:
    new_folder = not (index_dir / CONFIG_FILE).exists()
    config, db_url = _settings(index_dir, corpus_root, config, db_url, rebuild)
    config.check()
    catalog = Catalog(db_url)
    try:
        if new_folder and not rebuild and catalog.live_generation() is not None:
            last = catalog.last_build() or {}
            raise SimDPSError(f"{display_url(db_url)} already holds the catalog of another index (of "
                              f"{last.get('corpus_root', 'another corpus')}); one database serves one index: "
                              "give this one its own --db, or pass --rebuild to make this folder that catalog's "
                              "index (the other index folder then no longer matches it)")
        write_json_atomic(index_dir / CONFIG_FILE, {
            "format_version": FORMAT_VERSION, "corpus_root": str(corpus_root),
            "db_url": None if db_url == default_url(index_dir) else display_url(db_url),
            "index": config.to_dict(),
        }, sort_keys=True)
        store.configure_threads(workers)
        build_id = catalog.begin_build(config=config.to_dict(), corpus_root=str(corpus_root),
                                       factory=config.factory, workers=workers)
    except BaseException:
        catalog.dispose()
        raise
    try:
        result = _Build(catalog, build_id, corpus_root, index_dir, config, workers, rebuild, progress).run()
    except BaseException as exc:  # KeyboardInterrupt too: the build row must not stay 'running'
        catalog.fail_build(build_id, f"{type(exc).__name__}: {exc}")
        catalog.dispose()
        raise
    catalog.dispose()
    result.seconds = time.perf_counter() - t_start
    return result


def _settings(index_dir: Path, corpus_root: Path, config: IndexConfig | None, db_url: str | None,
              rebuild: bool) -> tuple[IndexConfig, str]:
    """Reconcile the requested settings with those the index was built with."""
    path = index_dir / CONFIG_FILE
    if not path.exists():
        return config or IndexConfig(), db_url or default_url(index_dir)
    stored = read_index_config(index_dir, any_version=rebuild)
    if stored["format_version"] != FORMAT_VERSION:  # an index of another version, rebuilt from scratch
        return config or IndexConfig(), db_url or default_url(index_dir)
    stored_cfg = IndexConfig.from_dict(stored["index"])
    stored_url = stored.get("db_url") or default_url(index_dir)
    if db_url is None:
        if "***" in stored_url:
            raise SimDPSError(f"{index_dir}: its catalog URL holds a password, which is not stored; "
                              "pass it again with --db URL")
        db_url = stored_url
    elif display_url(db_url) != stored_url and not rebuild:
        raise SimDPSError(f"{index_dir} keeps its catalog at {stored_url}, not {display_url(db_url)}; "
                          "pass the same --db URL, or --rebuild to start a new catalog")
    if stored["corpus_root"] != str(corpus_root) and not rebuild:
        raise SimDPSError(f"{index_dir} indexes {stored['corpus_root']}, not {corpus_root}; "
                          "use another --index folder, or --rebuild to re-index this corpus there")
    if config is None:
        return stored_cfg, db_url
    changed = [f for f in EMBEDDING_FIELDS if getattr(config, f) != getattr(stored_cfg, f)]
    if changed and not rebuild:
        raise SimDPSError(f"{index_dir} was built with other embedding settings ({', '.join(changed)}); "
                          "pass --rebuild to re-embed the corpus with the new ones")
    return config, db_url


class _Build:
    """One build's state; :meth:`run` is the algorithm of the module docstring."""

    def __init__(self, catalog: Catalog, build_id: int, corpus_root: Path, index_dir: Path,
                 config: IndexConfig, workers: int, rebuild: bool, progress: bool):
        self.catalog, self.build_id, self.corpus_root = catalog, build_id, corpus_root
        self.index_dir, self.config, self.workers = index_dir, config, workers
        self.rebuild, self.progress = rebuild, progress
        self.cfg = config.search
        self.stats = BuildStats()

    # ------------------------------------------------------------------------------
    def run(self) -> BuildResult:
        live_gen = self.catalog.live_generation()
        live_dir = gen_dir(self.index_dir, live_gen) if live_gen is not None else None
        if live_dir is not None and not live_dir.exists():
            if not self.rebuild:
                raise SimDPSError(f"{live_dir}: the live index files are missing; "
                                  "rebuild with `simdps-index build --rebuild`")
            live_dir = None  # a rebuild needs none of them
        remove_other_generations(self.index_dir, keep=live_gen)
        use_live = live_dir is not None and not self.rebuild

        files, self.stats.files_ignored = scan_corpus(self.corpus_root, exclude=[self.index_dir])
        misnamed = [f for f in files if not _utf8(f.rel_path)]  # the catalog stores UTF-8 text
        files = [f for f in files if _utf8(f.rel_path)]
        self.stats.files_seen = len(files)
        rows = self.catalog.tracks()
        scanned = {f.rel_path for f in files}

        pca_path = self._pca(live_dir if use_live else None, files)
        self.cache_dir = pca_path.parent
        # ---- diff against the catalog --------------------------------------------------
        unchanged: list[TrackRow] = []
        tasks: list[FileTask] = []
        stat_of: dict[str, CorpusFile] = {}
        signals = str(self.index_dir) if self.config.keep_signals else None
        for f in files:
            stat_of[f.rel_path] = f
            row = rows.get(f.rel_path)
            # A file that failed before is tried again only once it changes, or in a --rebuild
            # (another version of the decoders may read it).
            usable = row is not None and ((row.status == "error" and not self.rebuild) or (
                use_live and shard_path(self.cache_dir, row.content_hash).exists()))
            if usable and row.size_bytes == f.size_bytes and row.mtime_ns == f.mtime_ns:
                if not (signals and row.status == "ok"
                        and not signal_path(self.index_dir, row.content_hash, self.cfg.sample_rate).exists()):
                    unchanged.append(row)
                    continue
                # keep_signals turned on, or a signal gone: the worker finds the file unchanged and
                # decodes it only to keep its signal
            tasks.append(FileTask(f.rel_path, f.abs_path, row.content_hash if usable else None,
                                  str(self.cache_dir), str(pca_path), signals))
        removed_paths = [p for p in rows if p not in scanned]

        # ---- hash / decode / embed -----------------------------------------------------
        results = self._process(tasks)
        self.side_counts = {r.rel_path: (r.n_pre, r.n_post) for r in results}
        touched: list[TrackRow] = []  # same content, new stat
        new_ok: list[FileResult] = []
        errors: list[FileResult] = []
        for r in results:
            f = stat_of[r.rel_path]
            if r.unchanged:
                touched.append(replace(rows[r.rel_path], size_bytes=f.size_bytes, mtime_ns=f.mtime_ns))
            elif r.error is not None:
                errors.append(r)
            else:
                new_ok.append(r)
        kept_ok = [t for t in unchanged + touched if t.status == "ok"]
        # rows whose vectors leave the index: deleted files, changed files, files now failing
        leaving = set(removed_paths) | {r.rel_path for r in new_ok + errors}
        dropped = [rows[p] for p in sorted(leaving) if p in rows and rows[p].status == "ok"] if use_live else []

        self.stats.files_added = len(new_ok)
        self.stats.files_unchanged = len(unchanged) + len(touched)
        self.stats.files_removed = len(removed_paths)
        self.stats.files_failed = len(errors) + len(misnamed)

        next_id = self.catalog.next_track_id()
        new_rows: list[TrackRow] = []
        for r in sorted(new_ok, key=lambda r: r.rel_path):
            f = stat_of[r.rel_path]
            new_rows.append(TrackRow(next_id, r.rel_path, r.content_hash, f.size_bytes, f.mtime_ns, r.sample_rate,
                                     r.channels, r.frames, r.duration_s, "ok", None, None, r.n_positions,
                                     self.build_id))
            next_id += 1
        error_rows: list[TrackRow] = []
        for r in sorted(errors, key=lambda r: r.rel_path):
            f = stat_of[r.rel_path]
            error_rows.append(TrackRow(next_id, r.rel_path, r.content_hash or "", f.size_bytes, f.mtime_ns,
                                       r.sample_rate, r.channels, r.frames, r.duration_s or None, "error",
                                       r.error, None, 0, self.build_id))
            next_id += 1

        # ---- assemble and commit a new generation -----------------------------------------
        generation, full = live_gen, False
        placed: list[TrackRow] = []
        if new_rows or dropped or self.rebuild or not use_live or self._structure_changed(live_dir):
            generation = self.build_id
            factory, full, placed = write_generation(
                self.index_dir, generation, self.config, self.cache_dir, pca_path,
                live_dir if use_live else None, kept_ok, new_rows, dropped, self.side_counts)
        else:
            factory = live_factory(live_dir)
        upserts = {t.path: t for t in touched + error_rows}
        upserts.update({t.path: t for t in placed})  # placed rows carry their (new) first_row
        live_rows = {t.path: t for t in kept_ok} | {t.path: t for t in placed}
        ok_hashes = {t.content_hash for t in live_rows.values()}
        self.stats.hours = sum(t.duration_s or 0.0 for t in live_rows.values()) / 3600.0
        self.stats.vectors = self._vector_count(generation)
        self.catalog.commit_build(self.build_id, generation=generation, upserts=list(upserts.values()),
                                  delete_paths=removed_paths, stats=self.stats, factory=factory)
        # ---- after the commit: left-overs can go ------------------------------------------
        remove_other_generations(self.index_dir, keep=generation)
        self._prune_cache(ok_hashes)
        still = sorted((t.path, t.error or "") for t in unchanged + touched if t.status == "error")
        failed = [(r.rel_path, r.error or "") for r in errors] + [
            (f.rel_path.encode("utf-8", "backslashreplace").decode("utf-8"),
             "its name is not valid UTF-8 (another encoding, such as Latin-1), which the catalog cannot "
             "record; rename it to UTF-8 (for example with `convmv -f latin1 -t utf8`)") for f in misnamed]
        changed = sum(1 for r in new_ok if r.rel_path in rows and rows[r.rel_path].content_hash != r.content_hash)
        return BuildResult(self.index_dir, generation, factory, self.stats, 0.0, sorted(failed), full, still,
                           changed)

    def _structure_changed(self, live_dir: Path) -> bool:
        """Whether the FAISS structure or search settings asked for (``--factory``, ``--nprobe``, ...)
        differ from those the live generation was written with."""
        try:
            live = IndexConfig.from_dict(generation_config(live_dir)["index"])
        except (OSError, ValueError, KeyError, TypeError, SimDPSError):
            return True  # unreadable: write a sound one
        return any(getattr(live, f) != getattr(self.config, f) for f in STRUCTURE_FIELDS)

    # ------------------------------------------------------------------------------
    def _pca(self, live_dir: Path | None, files: list[CorpusFile]) -> Path:
        """The PCA file the shards are made with: the live one, a pending one, or a new fit."""
        cache_root = self.index_dir / CACHE_DIR
        if live_dir is not None:
            fp = pca_fingerprint(live_dir / PCA_FILE)
            path = cache_root / fp / PCA_FILE
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(live_dir / PCA_FILE, path)
            return path
        pending = cache_root / CURRENT_PCA
        if not self.rebuild and pending.exists():
            path = cache_root / pending.read_text().strip() / PCA_FILE
            if path.exists():
                return path  # a killed first build: its shards stay valid
        if not files:
            ignored = self.stats.files_ignored
            raise SimDPSError(f"{self.corpus_root}: no audio files found ({ignored} other file{'s' * (ignored != 1)} "
                              "ignored); the index reads WAV, FLAC, OGG, AIFF, MP3 and the other formats "
                              "libsndfile knows by their extension")
        samples, unreadable = self._pca_sample(files)
        try:
            pca = fit_pca(samples, self.config)
        except SimDPSError as exc:
            if not unreadable:
                raise
            raise SimDPSError(f"{exc}; {len(unreadable)} of the {len(unreadable) + len(samples)} files tried could "
                              f"not be read, e.g. {unreadable[0]}") from None
        cache_root.mkdir(parents=True, exist_ok=True)
        # Saved beside the cache first: its content names the folder it moves into.
        tmp = temp_file(cache_root, prefix=".pca.", suffix=".npz")
        try:
            pca.save(tmp)
            fp = pca_fingerprint(tmp)
            path = cache_root / fp / PCA_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        write_text_atomic(pending, fp)
        return path

    def _pca_sample(self, files: list[CorpusFile]) -> tuple[list, list[str]]:
        """Phase-0 features of excerpts of up to ``pca_train_files`` files (seeded choice), and why
        each file tried that could not be read failed (its error, which names it)."""
        rng = np.random.default_rng(self.config.seed)
        order = rng.permutation(len(files))
        n_files = min(len(files), self.config.pca_train_files)
        per_file = math.ceil(self.config.pca_train_positions / max(1, n_files))
        from simdps.indexer.embed import side_extent

        excerpt_12k = per_file * self.cfg.coarse_hop + 2 * side_extent(self.cfg)
        samples, unreadable = [], []
        bar = tqdm(total=n_files, unit="file", desc="fitting PCA", disable=not self.progress, leave=False)
        for i in order:
            if len(samples) >= n_files:
                break
            f = files[i]
            try:
                info = audio_info(f.abs_path)
                length = int(math.ceil(excerpt_12k * info.sample_rate / self.cfg.sample_rate))
                start = int(rng.integers(0, max(1, info.frames - length + 1)))
                x12k, _ = decode_search_signal(f.abs_path, self.cfg, start=start, stop=start + length)
            except SimDPSError as exc:
                unreadable.append(str(exc))
                continue  # recorded as an error when the file itself is processed
            samples.append(frame_features(x12k, self.cfg))
            bar.update(1)
        bar.close()
        return samples, unreadable

    def _process(self, tasks: list[FileTask]) -> list[FileResult]:
        results: list[FileResult] = []
        hours = 0.0
        bar = tqdm(total=len(tasks), unit="file", desc="indexing", disable=not self.progress or not tasks)

        def done(r: FileResult) -> None:
            nonlocal hours
            results.append(r)
            if not r.unchanged and r.error is None:
                hours += r.duration_s / 3600.0
            bar.set_postfix_str(f"{hours:.2f} h audio", refresh=False)
            bar.update(1)

        if self.workers == 1 or len(tasks) <= 1:
            for t in tasks:
                done(process_file(t, self.cfg))
        else:
            pending = list(tasks)
            while pending:
                before = len(results)
                unfinished = self._pool_run(pending, self.workers, done)
                if not unfinished:
                    break
                # A worker process died: a decoder crashed on a file (libsndfile has such bugs),
                # or the system killed it. The tasks it may have held are the first unfinished
                # ones (the pool starts tasks in order); each of those runs alone, so a file that
                # kills its process is known and left out, and the rest go on in a fresh pool.
                suspects, pending = unfinished[:self.workers + 1], unfinished[self.workers + 1:]
                crashed = [t for t in suspects if self._pool_run([t], 1, done)]
                if len(crashed) == len(suspects) and len(results) == before:
                    raise SimDPSError(
                        f"the build's worker processes die before finishing any file ({crashed[0].rel_path} "
                        "and others). From Python, call the build under `if __name__ == \"__main__\":` in a "
                        "script file (its worker processes import that file again); otherwise run it with "
                        "--workers 1 to see why")
                for t in crashed:
                    done(_crashed(t))
        bar.close()
        return results

    def _pool_run(self, tasks: list[FileTask], workers: int, done) -> list[FileTask]:
        """Process ``tasks`` in a fresh pool of ``workers`` processes, passing each result to
        ``done``; returns the tasks left unfinished if a worker process died (else none)."""
        finished: set[int] = set()
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init_worker) as pool:
            futures = {pool.submit(process_file, t, self.cfg): i for i, t in enumerate(tasks)}
            try:
                for fut in as_completed(futures):
                    done(fut.result())
                    finished.add(futures[fut])
            except BrokenProcessPool:
                for fut, i in futures.items():  # results that came in before the pool broke
                    if i not in finished and fut.done() and fut.exception() is None:
                        done(fut.result())
                        finished.add(i)
        return [t for i, t in enumerate(tasks) if i not in finished]

    # ------------------------------------------------------------------------------
    def _vector_count(self, generation: int | None) -> int:
        if generation is None:
            return 0
        return int(sum(generation_config(gen_dir(self.index_dir, generation))["vectors"].values()))

    def _prune_cache(self, live_hashes: set[str]) -> None:
        """Drop shards no live track uses and shard folders of other PCAs (after the commit)."""
        cache_root = self.index_dir / CACHE_DIR
        for folder in cache_root.iterdir() if cache_root.exists() else []:
            if folder.is_dir() and folder != self.cache_dir:
                shutil.rmtree(folder, ignore_errors=True)
            elif folder.name == CURRENT_PCA or folder.name.startswith("."):
                folder.unlink(missing_ok=True)
        for shard in self.cache_dir.glob("*.npz"):
            if shard.name != PCA_FILE and shard.stem not in live_hashes:
                shard.unlink(missing_ok=True)
        for partial in self.cache_dir.glob(".*.tmp"):  # a shard being written when a build was killed
            partial.unlink(missing_ok=True)
        for partial in self.cache_dir.parent.glob(".pca.*.npz"):  # a PCA being saved when one was killed
            partial.unlink(missing_ok=True)
        signals = self.index_dir / SIGNALS_DIR
        if signals.exists() and not self.config.keep_signals:
            shutil.rmtree(signals, ignore_errors=True)  # keep_signals turned off: the disk space back
        live = {signal_path(self.index_dir, h, self.cfg.sample_rate).name for h in live_hashes}
        for signal in signals.iterdir() if signals.exists() else []:
            if signal.is_file() and signal.name not in live:  # a partial one, another rate's, no live file's
                signal.unlink(missing_ok=True)
