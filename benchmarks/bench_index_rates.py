"""Index query latency at the source format users have: 22.05 kHz mono beside 44.1 kHz stereo.

``bench_index.py`` measures on the shared piano set as rendered, 22.05 kHz mono FLAC. Real
collections are mostly 44.1 kHz stereo, and a query's exact re-score decodes and resamples
~7 s of source audio for each of its windows, so its cost follows the source format. This
script takes the same music, half of the ``bench_index.py`` corpus (the originals and their
1-semitone-up copies, 5.1 h), once as it is and once converted to 44.1 kHz stereo FLAC
(16-bit; the right channel at 0.9 gain, so the mono mix is the same music: a delayed channel
would comb-filter it and change the matches), builds an index of each with the default
settings, and times the same held-out queries (``index_corpus.make_queries``) on both in one
process: median and p90 latency of ``Index.search(include_track=False, k=10)`` (second pass,
warm page cache), windows re-scored per query, and the decode + resample cost of one window
(7 s of audio) in each format. No recall here: the truth for it is ``bench_index.py``'s.

    python benchmarks/bench_index_rates.py [--work /tmp/simdps-bench-rates] [--queries 40] [--rebuild]

An index is built when missing (``--rebuild``: always); each build is timed in CPU seconds
of the process and its workers, beside the decode + resample floor of the same files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import cpu_s, median_s  # noqa: E402
from bench_index import floor  # noqa: E402
from index_corpus import make_corpus, make_queries  # noqa: E402

from simdps.audio import read_audio, resample, to_mono  # noqa: E402
from simdps.indexer.build import build_index  # noqa: E402
from simdps.retrieval import api, index_search  # noqa: E402
from simdps.retrieval.api import Index  # noqa: E402

SUBSET = ("orig", "up1")


def to_44k_stereo(job: tuple[str, str]) -> None:
    src, dst = job
    if os.path.exists(dst):
        return
    x, sr = sf.read(src, dtype="float32")
    y = soxr.resample(x, sr, 44_100)
    stereo = np.stack([y, 0.9 * y], axis=1)  # mono mix 0.95 y: the same music to the level-invariant cost
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + ".part.flac"
    sf.write(tmp, stereo, 44_100, subtype="PCM_16")
    os.replace(tmp, dst)


def window_cost_ms(path: Path) -> float:
    """Decode 7 s from the middle of ``path`` and resample its mono mix to 12 kHz (median of 20)."""
    info = sf.info(path)
    start, stop = info.frames // 2, info.frames // 2 + 7 * info.samplerate
    return 1e3 * median_s(lambda: resample(to_mono(read_audio(path, start=start, stop=stop, dtype="float32")[0]),
                                           info.samplerate, 12_000), 20)


def time_queries(index: Index, queries) -> tuple[list[float], list[int]]:
    """Latency (ms) and re-score windows of each query, after one untimed pass."""
    counted = [0]
    real = index_search.rescore

    def counting(*args, **kwargs):
        counted[0] += 1
        return real(*args, **kwargs)

    for q in queries:
        index.search(q.audio, q.sr, q.gap, k=10, include_track=False)
    latency, windows = [], []
    api.rescore = counting
    try:
        for q in queries:
            counted[0] = 0
            t0 = time.perf_counter()
            index.search(q.audio, q.sr, q.gap, k=10, include_track=False)
            latency.append(1e3 * (time.perf_counter() - t0))
            windows.append(counted[0])
    finally:
        api.rescore = real
    return latency, windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/simdps-bench-rates", help="corpora and indexes")
    ap.add_argument("--corpus", default="/tmp/simdps-bench-index/corpus", help="bench_index.py's corpus (made if missing)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--rebuild", action="store_true", help="build (and time) both indexes even if they exist")
    args = ap.parse_args()
    work, corpus = Path(args.work), Path(args.corpus)
    make_corpus(corpus, workers=args.workers)
    sources = sorted(f for name in SUBSET for f in (corpus / name).rglob("*.flac"))
    hi_res = work / "corpus-44k-stereo"
    with ProcessPoolExecutor(args.workers) as pool:
        list(pool.map(to_44k_stereo, [(str(f), str(hi_res / f.relative_to(corpus))) for f in sources], chunksize=4))
    queries = make_queries(args.queries)
    results = {}
    for label, root, files in (("22.05 kHz mono", corpus, sources),
                               ("44.1 kHz stereo", hi_res, sorted(hi_res.rglob("*.flac")))):
        index_dir = work / ("index-" + label.split()[0])
        if args.rebuild:
            shutil.rmtree(index_dir, ignore_errors=True)
        if not index_dir.exists():
            # The 22.05-kHz index covers only the subset: link its files into a folder of their own.
            if root == corpus:
                linked = work / "corpus-22k-mono"
                for f in files:
                    dst = linked / f.relative_to(corpus)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if not dst.exists():
                        dst.symlink_to(f)
                root = linked
            floor_cpu, _ = floor(files)
            t0, c0 = time.perf_counter(), cpu_s()
            build_index(root, index_dir, workers=args.workers)
            build = cpu_s() - c0
            hours = sum(sf.info(f).duration for f in files) / 3600
            print(f"{label}: index built in {time.perf_counter() - t0:.0f} s wall, {build:.1f} CPU s: "
                  f"{hours * 3600 / build:.0f}x real time per core, {build / floor_cpu:.2f}x the decode + resample "
                  f"floor ({floor_cpu:.1f} CPU s)", flush=True)
        index = Index.open(index_dir)
        latency, windows = time_queries(index, queries)
        results[label] = statistics.median(latency)
        print(f"{label}: {index.info()['hours']:.2f} h, {index.factory}; query median {statistics.median(latency):.0f} ms, "
              f"p90 {np.percentile(latency, 90):.0f} ms; windows re-scored per query median "
              f"{statistics.median(windows):.1f}, mean {np.mean(windows):.1f}; decode + resample of a 7-s window "
              f"{window_cost_ms(files[len(files) // 2]):.1f} ms (one thread)", flush=True)
    a, b = results.values()
    print(f"44.1 kHz stereo / 22.05 kHz mono query median: {b / a:.2f}x")


if __name__ == "__main__":
    main()
