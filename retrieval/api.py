"""The public corpus index: ``Index.build(corpus, dir)``, ``Index.open(dir).search(audio, sr, gap, k)``.

``search`` returns :class:`~simdps.retrieval.candidate.Candidate` objects ranked by ``J``
(eq. 10): the corpus candidates of ``retrieval/index_search.py`` merged with the query
track's own candidates (``retrieval/track.py``), unless ``include_track=False``.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from simdps.audio import KeptHandles, audio_input
from simdps.threads import default_threads, one_blas_thread
from simdps.config import SearchConfig
from simdps.errors import AudioError, GapError, SimDPSError, SimDPSWarning
from simdps.gaps import Gap
from simdps.indexer import store
from simdps.indexer.catalog import Catalog, default_url, display_url
from simdps.indexer.config import CONFIG_FILE, IndexConfig, read_index_config
from simdps.indexer.embed import PCA_FILE, ContextPCA
from simdps.indexer.layout import (SIGNALS_DIR, folder_bytes, gen_dir, generation_config, kept_signal_hashes,
                                   signal_path)
from simdps.retrieval.candidate import Candidate, check_k
from simdps.retrieval.index_search import (
    SearchParams,
    ann_k,
    ann_query,
    TrackTable,
    complete_sides,
    hash_if_file,
    is_query_track,
    same_recording,
    SAME_RECORDING_S,
    merge_hits,
    prepare_query,
    side_distances,
    refine,
    group_windows,
    rescore,
)
from simdps.retrieval.refine import MIN_RANKED

__all__ = ["Index"]


class Index:
    """A built corpus index, loaded for searching (FAISS indexes in memory, audio read on demand)."""

    def __init__(self, index_dir: Path, config: IndexConfig, generation: int, factory: str,
                 pca: ContextPCA, faiss_pre, faiss_post, tracks: TrackTable, corpus_root: str,
                 db_url: str, gen_info: dict):
        self.index_dir = index_dir
        self.config = config
        self.generation = generation
        self.factory = factory
        self.pca = pca
        self._faiss = {"pre": faiss_pre, "post": faiss_post}
        self._lookups = {side: store.VectorLookup(idx) for side, idx in self._faiss.items()}
        self._pools: dict[tuple[int, int], ThreadPoolExecutor] = {}  # by (threads, pid), kept between queries
        self._pools_lock = threading.Lock()
        self._handles = KeptHandles()  # MP3 decoders kept open between re-score windows and queries
        self.tracks = tracks
        self.corpus_root = corpus_root
        self.db_url = db_url
        self._gen_info = gen_info
        # Files whose search signal the index kept (IndexConfig.keep_signals): their re-score
        # windows are read from it instead of decoded and resampled.
        self._signal_hashes = kept_signal_hashes(index_dir, config.search.sample_rate)
        store.set_search_params(faiss_pre, nprobe=config.nprobe, ef_search=config.ef_search)
        store.set_search_params(faiss_post, nprobe=config.nprobe, ef_search=config.ef_search)

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def build(cls, corpus_dir: str | os.PathLike, index_dir: str | os.PathLike, *,
              config: IndexConfig | None = None, db_url: str | None = None, workers: int = 1,
              rebuild: bool = False, progress: bool = False) -> "Index":
        """Build or update the index (see :func:`simdps.indexer.build.build_index`), then open it.

        Files that could not be indexed (unreadable, damaged) are skipped and named in one
        :class:`SimDPSWarning`; ``info()["failed_files"]`` counts them later."""
        from simdps.indexer.build import build_index  # (the build's modules stay out of a process that only searches)

        result = build_index(corpus_dir, index_dir, config=config, db_url=db_url, workers=workers,
                             rebuild=rebuild, progress=progress)
        failed = result.errors + result.still_failing
        if failed:
            shown = "; ".join(f"{path}: {why}" for path, why in failed[:3])
            more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
            warnings.warn(f"{len(failed)} file(s) under {corpus_dir} could not be indexed and were skipped "
                          f"({shown}{more})", SimDPSWarning, stacklevel=2)
        return cls.open(index_dir, db_url=db_url)

    @classmethod
    def open(cls, index_dir: str | os.PathLike, *, db_url: str | None = None) -> "Index":
        """Load the live generation of the index in ``index_dir``.

        A build in another process may make a new generation live, and delete the one being
        read, while this reads it: the open then starts again on the new one (a few times)."""
        for attempt in range(4):
            live = cls._live(index_dir, db_url)
            try:
                return cls._load(*live)
            except SimDPSError:
                if attempt == 3 or cls._live(index_dir, db_url)[3] == live[3]:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _live(cls, index_dir: str | os.PathLike, db_url: str | None) -> tuple:
        """``(index_dir, top config, catalog URL, live generation, its track rows)`` from the catalog."""
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise SimDPSError(f"{index_dir}: no such index folder; build one with "
                              "`simdps-index build CORPUS --index DIR`")
        if re.fullmatch(r"gen-\d+", index_dir.name) and (index_dir.parent / CONFIG_FILE).exists():
            raise SimDPSError(f"{index_dir} is one generation of the index in {index_dir.parent}; "
                              f"open that folder (--index {index_dir.parent})")
        top = read_index_config(index_dir)
        if db_url is None:
            db_url = top.get("db_url") or default_url(index_dir)
            if "***" in db_url:
                raise SimDPSError(f"{index_dir}: its catalog URL needs a password, which is not stored; "
                                  "pass it with --db URL (Python: db_url=...)")
        catalog = Catalog(db_url, create=False)
        try:
            generation = catalog.live_generation()
            if generation is None:
                raise SimDPSError(f"{index_dir}: no build has finished yet; run `simdps-index build` "
                                  "(an interrupted build resumes where it stopped)")
            rows = sorted((t for t in catalog.tracks(status="ok").values() if t.first_row is not None),
                          key=lambda t: t.first_row)
        finally:
            catalog.dispose()
        return index_dir, top, db_url, generation, rows

    @classmethod
    def _load(cls, index_dir: Path, top: dict, db_url: str, generation: int, rows: list) -> "Index":
        """The index of generation ``generation``, whose tracks are ``rows``."""
        gdir = gen_dir(index_dir, generation)
        if not gdir.is_dir():
            raise SimDPSError(f"{gdir}: the live index files are missing; rebuild with "
                              "`simdps-index build --rebuild`")
        try:
            gen_info = generation_config(gdir)
            config = IndexConfig.from_dict(gen_info["index"])
            factory = gen_info["factory"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SimDPSError(f"{gdir / CONFIG_FILE}: missing or damaged ({type(exc).__name__}: {exc}); rebuild "
                              "the index with `simdps-index build --rebuild`") from None
        root = top["corpus_root"]
        tracks = TrackTable(
            track_id=np.array([t.id for t in rows], dtype=np.int64),
            first_row=np.array([t.first_row for t in rows], dtype=np.int64),
            n_positions=np.array([t.n_positions for t in rows], dtype=np.int64),
            sample_rate=np.array([t.sample_rate for t in rows], dtype=np.int64),
            frames=np.array([t.frames for t in rows], dtype=np.int64),
            content_hash=[t.content_hash for t in rows],
            path=[os.path.join(root, *t.path.split("/")) for t in rows],
            stat=[(t.size_bytes, t.mtime_ns) for t in rows],
        )
        pca = ContextPCA.load(gdir / PCA_FILE)
        pca.use_filterbank(config.search)  # the features the index was built with (and no librosa import)
        return cls(index_dir, config, generation, factory, pca,
                   store.read_index(gdir / "pre.faiss.zst"), store.read_index(gdir / "post.faiss.zst"), tracks,
                   root, db_url, gen_info)

    # ---- search ---------------------------------------------------------------------
    @property
    def search_config(self) -> SearchConfig:
        return self.config.search

    def search(self, audio: np.ndarray, sr: int, gap: Gap | tuple[float, float], k: int = 10, *,
               include_track: bool = True, path: str | os.PathLike | None = None,
               params: SearchParams | None = None, refine_offsets: bool = True) -> list[Candidate]:
        """The ``k`` best segments to fill ``gap`` of ``audio``, lowest ``J`` first.

        Parameters
        ----------
        audio : ``(n,)`` or ``(n, channels)`` samples of the query recording at ``sr``.
        sr : its sample rate.
        gap : ``(start_s, end_s)`` in seconds, or a :class:`~simdps.gaps.Gap`.
        k : how many candidates.
        include_track : also search the query track itself (A1's ``search_track``) and merge.
        path : the query's file, if it has one: identifies it in the corpus (the in-track
            exclusion applies to it) and names its own candidates.
        params : ANN and re-score knobs (:class:`SearchParams`).
        refine_offsets : apply eq. 11. ``False`` returns the corpus candidates at their
            frame-grid starts with the exact ``J`` there (what the exhaustive search
            computes, so recall can be measured against it).

        Raises
        ------
        GapError if the gap lies outside the recording or leaves no context.

        Warns
        -----
        SimDPSWarning when indexed files could not be read (gone, damaged, or of another rate
        or length than indexed): they are left out, and the message says to rebuild.
        """
        audio, sr = audio_input(audio, sr, what="the query audio")
        k = check_k(k)
        if params is not None and not isinstance(params, SearchParams):
            raise SimDPSError(f"params must be a SearchParams(...), got {type(params).__name__}")
        params = params or SearchParams()
        cfg = self.config.search
        query = prepare_query(audio, sr, gap, cfg)
        ranked = max(k, MIN_RANKED)  # eq. 11 re-ranks: the best k of at least 10 (refine.MIN_RANKED)
        with one_blas_thread():
            found = self._search_index(query, ranked, params, path, exclude_query_track=include_track,
                                       refine_offsets=refine_offsets)
        if include_track:
            from simdps.retrieval.track import search_track

            try:
                found += search_track(audio, sr, query.gap, k=ranked, cfg=cfg,
                                      path=str(path) if path is not None else "<query>")
            except GapError:
                pass  # the track leaves no room for an in-track candidate: the corpus alone answers
        found.sort(key=lambda c: (c.cost, c.path, c.start_sample))
        return found[:k]

    def _search_index(self, query, k: int, params: SearchParams, query_path, *, exclude_query_track: bool,
                      refine_offsets: bool = True) -> list[Candidate]:
        cfg = self.config.search
        if len(self.tracks) == 0:
            return []
        if params.nprobe is not None:
            for idx in self._faiss.values():
                store.set_search_params(idx, nprobe=params.nprobe)
        pool, workers = self._pool(params)
        ann = ann_query(query, cfg)
        ctx = ann.context

        def ann_side(side: str):
            """The side's embedding and its FAISS hits as ``(estimates, ids)``; None without context."""
            idx, block = self._faiss[side], getattr(ctx, side)
            if getattr(ctx, f"{side}_extent") == 0 or idx.ntotal == 0:
                return None
            vector = self.pca.embed_block(block, side)
            nlist, nprobe = store.ivf_lists(idx)
            sims, ids = store.search_best(idx, vector, ann_k(params.k_ann, idx.ntotal, nlist, nprobe))
            return vector, (side_distances(sims, block, cfg), ids)

        # Both sides' searches at once (FAISS releases the GIL): 7.2 -> 3.9 ms on the benchmark.
        if workers > 1:
            pre = pool.submit(ann_side, "pre")
            sides = {"post": ann_side("post"), "pre": pre.result()}
        else:  # one thread asked for: one at a time
            sides = {side: ann_side(side) for side in ("pre", "post")}
        ann_hits = {side: got[1] if got else None for side, got in sides.items()}
        vectors = {side: got[0] for side, got in sides.items() if got}
        blocks = {side: getattr(ctx, side) for side in vectors}
        merged = merge_hits(self.tracks, ann, cfg.coarse_hop, ann_hits["pre"], ann_hits["post"])
        if params.n_complete:
            head = complete_sides(list(itertools.islice(merged, params.n_complete)), self.tracks, ann,
                                  cfg.coarse_hop, {s: self._lookups[s] for s in vectors}, vectors, blocks, cfg)
            merged = itertools.chain(head, merged)
        query_path = str(query_path) if query_path is not None else None
        query_hash = hash_if_file(query_path)
        own: dict[int, bool] = {}
        context = int(round(cfg.context_s * query.sr))
        length = query.gap_end - query.gap_start
        tracks = self.tracks
        reach12 = params.reach_hops * cfg.coarse_hop
        covered = reach12 - cfg.coarse_hop
        span12 = query.context.pre_extent + query.length12 + query.context.post_extent + 2 * reach12

        checked_copy: set[int] = set()
        near = reach12 * query.sr / cfg.sample_rate + SAME_RECORDING_S * query.sr + context

        def near_gap(c) -> bool:
            """Whether a candidate's window could reach the gap or its context, were its source the
            query's recording (shifted by up to SAME_RECORDING_S)."""
            start = c.start12 * query.sr / cfg.sample_rate
            return query.gap_start - near - length < start < query.gap_end + near

        def admissible(c):
            """``(track, bounds)`` key of a candidate that may be re-scored, or None."""
            n12 = int(tracks.frames[c.track] * cfg.sample_rate / tracks.sample_rate[c.track])
            if c.start12 < 0 or c.start12 + query.length12 > n12:
                return None  # the segment itself must lie in the source
            bounds = None
            if c.track not in own:
                own[c.track] = is_query_track(tracks, c.track, query, query_path, query_hash)
            if not own[c.track] and c.track not in checked_copy and near_gap(c):
                # Another rate or encoding of the query's recording has the gap's own audio here;
                # looked for only when a candidate comes this near (a read, a resample, an FFT).
                checked_copy.add(c.track)
                own[c.track] = same_recording(tracks, c.track, query)
            if own[c.track]:
                if exclude_query_track:
                    return None  # the exhaustive in-track search covers this recording
                # in-track rule: the segment stays clear of the gap and its Lc context
                start = c.start12 * query.sr / cfg.sample_rate
                if start + length > query.gap_start - context and start < query.gap_end + context:
                    return None
                # (in the source's samples: another encoding of the recording may have another rate)
                ratio = int(tracks.sample_rate[c.track]) / query.sr
                bounds = ((0, math.floor((query.gap_start - context - length) * ratio)) if start < query.gap_start
                          else (math.ceil((query.gap_end + context) * ratio),
                                int(tracks.frames[c.track]) - math.ceil(length * ratio)))
            return (c.track, bounds)

        # Every candidate taken so far, per key: [start12, estimate of its window, round taken].
        taken: dict[tuple[int, tuple[int, int] | None], list[tuple[int, float, int]]] = {}
        merged = iter(merged)
        pending: list = []  # a candidate read from ``merged`` but above the last round's limit

        def take(n_windows: int, round_no: int, max_bound: float = math.inf) -> tuple[dict, int]:
            """The next candidates, best first, until ``n_windows`` new windows are open or an
            estimate exceeds ``max_bound``: ``({key: starts}, windows opened)``."""
            new: dict = {}
            opened = 0
            while opened < n_windows:
                c = pending.pop() if pending else next(merged, None)
                if c is None:
                    break
                if c.bound > max_bound:
                    pending.append(c)
                    break
                key = admissible(c)
                if key is None:
                    continue
                near = taken.setdefault(key, [])
                slot = next(((e, r) for t, e, r in near if abs(c.start12 - t) <= covered), None)
                if slot is not None and slot[1] < round_no:
                    continue  # inside a window re-scored in an earlier round
                # near a better candidate of this round: its window grows to hold it, no new slot
                near.append((c.start12, c.bound if slot is None else slot[0], round_no))
                new.setdefault(key, []).append(c.start12)
                opened += 0 if slot is not None else 1
            return new, opened

        def estimate_of(hit, key) -> float:
            """The ANN estimate of the window that produced ``hit`` (its nearest candidate's)."""
            return min(taken[key], key=lambda entry: abs(entry[0] - hit.start12))[1]

        def best_distinct(hits: list) -> list:
            """The ``k`` best ``(hit, key)`` pairs, a hit within Lh of a better one in its file being the same match.

            Leaves out the hits of a track recognised as the query's recording after some of its
            windows were taken (``same_recording``) when the in-track search covers it."""
            best: list = []
            if exclude_query_track:
                hits = [(h, key) for h, key in hits if not own[key[0]]]
            for h, key in sorted(hits, key=lambda pair: (pair[0].cost, pair[0].path, pair[0].start12)):
                if all(h.path != o.path or abs(h.start12 - o.start12) > cfg.coarse_hop for o, _ in best):
                    best.append((h, key))
                    if len(best) == k:
                        break
            return best

        use_signals = params.use_signals and bool(self._signal_hashes) and tracks.stat is not None
        skipped: dict[str, str] = {}  # indexed file -> why it could not be read
        stood_in: set[str] = set()  # ... of those, files whose byte-identical copy was read instead

        def rescore_job(job) -> list:
            group, (track, bounds) = job
            failed = []
            for copy in tracks.copies(track):  # a byte-identical copy stands in for a file that is gone
                path = tracks.path[copy]
                digest = tracks.content_hash[copy]
                signal = ((signal_path(self.index_dir, digest, cfg.sample_rate), tracks.stat[copy])
                          if use_signals and digest in self._signal_hashes else None)
                try:
                    found = rescore(query, group, path, int(tracks.sample_rate[copy]), int(tracks.frames[copy]),
                                    cfg, reach12=reach12, bounds=bounds, handles=self._handles, signal=signal)
                except AudioError as exc:  # deleted, damaged or changed since indexing: reported once
                    skipped.setdefault(path, str(exc))
                    failed.append(path)
                    continue
                stood_in.update(failed)
                return found
            return []

        hits: list = []  # (FrameHit, key) of every re-scored start
        best: list = []  # best_distinct(hits), kept up to date after each round
        round_no = 0
        batch, n_windows = take(params.n_rescore, round_no)
        while batch:
            jobs = [(group, key) for key, starts in batch.items() for group in group_windows(starts, span12)]
            found = pool.map(rescore_job, jobs)
            hits += [(h, key) for (_, key), window_hits in zip(jobs, found) for h in window_hits]
            # Adaptive extension: candidates not yet re-scored whose estimates lie within
            # ``rescore_margin`` of the worst estimate that produced a current top-k match
            # could still enter the top k (the estimate errs by that much): re-score them
            # too, round by round, up to ``max_rescore`` windows in all.
            best = best_distinct(hits)
            room = params.max_rescore - n_windows
            if room <= 0 or not best:
                break
            worst = max(estimate_of(h, key) for h, key in best)
            if not math.isfinite(worst):
                break  # a match came from a window the estimates could not rank
            round_no += 1
            batch, opened = take(room, round_no, worst + params.rescore_margin * abs(worst))
            n_windows += opened
        best = [h for h, _ in best]
        if refine_offsets:
            refined = pool.map(lambda h: refine(query, h, cfg, self._handles), best)
            out = _distinct([c for c in refined if c is not None],
                            cfg.coarse_hop / cfg.sample_rate)
        else:
            out = [_grid_candidate(h, cfg) for h in best]
        if skipped:
            why = next(iter(skipped.values()))
            more = f"; and {len(skipped) - 1} more" if len(skipped) > 1 else ""
            copied = len(stood_in)  # a subset of skipped
            fate = ("left out of this search" if not copied else
                    "searched through a byte-identical copy instead" if copied == len(skipped) else
                    f"{len(skipped) - copied} left out of this search, {copied} searched through a "
                    "byte-identical copy instead")
            warnings.warn(f"{len(skipped)} indexed file(s) could not be read ({why}{more}): {fate}; "
                          "run `simdps-index build` on the corpus to bring the index up to date",
                          SimDPSWarning, stacklevel=3)
        return out

    def _pool(self, params: SearchParams) -> tuple[ThreadPoolExecutor, int]:
        """Threads for a query's parallel work: both FAISS searches, the re-score windows and eq. 11
        (decoding, resampling, FFTs and FAISS release the GIL). Kept between queries; one
        pool per thread count, shared by queries running at once."""
        workers = default_threads(params.threads)
        key = (workers, os.getpid())  # a forked child has none of its parent's threads: new pools
        with self._pools_lock:
            if key not in self._pools:
                self._pools[key] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="simdps-search")
            return self._pools[key], workers

    # ---- description ----------------------------------------------------------------
    def info(self) -> dict:
        """Tracks, hours, vectors, factory and size on disk (what ``simdps-index info`` prints).

        Tracks, hours, vectors and size describe the generation this ``Index`` searches; the
        failed files and the last build are the catalog's now. When a later build has made
        another generation live, ``live_generation`` says which (``Index.open`` loads it) and
        the size is that of this generation's folder, or None once the build has removed it.
        """
        catalog = Catalog(self.db_url, create=False)
        try:
            rows = catalog.tracks()
            last = catalog.last_build()
            live = catalog.live_generation()
        finally:
            catalog.dispose()
        hours = float(np.sum(self.tracks.frames / self.tracks.sample_rate)) / 3600.0
        gdir = gen_dir(self.index_dir, self.generation)
        index_bytes = folder_bytes(gdir) if gdir.is_dir() else None
        catalog_path = self.index_dir / "catalog.sqlite"
        if index_bytes is not None and catalog_path.exists():
            index_bytes += catalog_path.stat().st_size
        cache_bytes = folder_bytes(self.index_dir / "cache")
        signals_bytes = folder_bytes(self.index_dir / SIGNALS_DIR)
        return {
            "index": str(self.index_dir),
            "corpus_root": self.corpus_root,
            "catalog": display_url(self.db_url),
            "generation": self.generation,
            "live_generation": live,
            "tracks": len(self.tracks.track_id),
            "failed_files": sum(1 for t in rows.values() if t.status == "error"),
            "hours": hours,
            "positions": int(self._gen_info.get("positions", 0)),
            "vectors": {s: int(i.ntotal) for s, i in self._faiss.items()},
            "dim": self.config.dim,
            "factory": self.factory,
            "nprobe": self.config.nprobe,
            "coarse_hop": self.config.search.coarse_hop,
            "pca_variance_kept": self._gen_info.get("pca_variance_kept", {}),
            "size_bytes": index_bytes,
            "bytes_per_hour": index_bytes / hours if index_bytes is not None and hours > 0 else None,
            "cache_bytes": cache_bytes,
            "signals_bytes": signals_bytes,  # kept search signals (keep_signals), not counted in size_bytes
            "last_build": {k: last[k] for k in ("id", "status", "started_at", "finished_at", "files_added",
                                                "files_unchanged", "files_removed", "files_failed")}
            if last else None,
        }


def _grid_candidate(hit, cfg: SearchConfig) -> Candidate:
    """A frame-grid hit as a candidate (start rounded to the source's rate), its exact J unchanged."""
    start = int(round(hit.start12 * hit.sr / cfg.sample_rate))
    return Candidate(hit.path, start / hit.sr, start, hit.sr, hit.cost, hit.cost_stft, hit.cost_chroma,
                     source="index", source_frames=hit.frames)


def _distinct(cands: list[Candidate], radius_s: float) -> list[Candidate]:
    """Best first; a candidate within ``radius_s`` of a better one in the same file is the same match."""
    cands = sorted(cands, key=lambda c: (c.cost, c.start_sample))
    kept: list[Candidate] = []
    for c in cands:
        if all(c.path != o.path or abs(c.start_s - o.start_s) > radius_s for o in kept):
            kept.append(c)
    return kept
