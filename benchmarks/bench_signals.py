"""Index queries with kept search signals (``--keep-signals``) against decoding every re-score window.

A query re-scores ~35 windows of ~7 s of source audio; without kept signals each is decoded
and resampled to 12 kHz, with them it is read from the file's stored 12-kHz signal. The
script copies an existing index (default: ``bench_index.py``'s) into ``--work``, turns
``keep_signals`` on in the copy (the build decodes each file once more, to keep its signal;
nothing is re-embedded), then times the same held-out queries both ways in one process,
alternating query by query (``SearchParams(use_signals=...)``). Prints medians, p90s, their
ratio, whether both ways return the same top 10, and recall@10 where the exhaustive truth
of ``bench_index.py`` lies beside the index.

    python benchmarks/bench_signals.py [--index DIR] [--work DIR] [--queries 40] [--query-seed 0]

For the 44.1-kHz stereo corpus of ``bench_index_rates.py``:
``--index /tmp/simdps-bench-rates/index-44.1``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import recall  # noqa: E402
from index_corpus import make_queries  # noqa: E402

from simdps import Index  # noqa: E402
from simdps.indexer.build import build_index  # noqa: E402
from simdps.indexer.config import IndexConfig, read_index_config  # noqa: E402
from simdps.indexer.layout import folder_bytes  # noqa: E402
from simdps.retrieval.index_search import SearchParams  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default="/tmp/simdps-bench-index/index", help="an index built without kept signals")
    ap.add_argument("--work", default="/tmp/simdps-bench-signals", help="where the copy with kept signals goes")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--query-seed", type=int, default=0)
    args = ap.parse_args()
    source = Path(args.index)
    copy = Path(args.work) / source.name
    if not copy.exists():
        print(f"copying {source} to {copy} and keeping its signals ...", flush=True)
        shutil.copytree(source, copy)
        stored = IndexConfig.from_dict(read_index_config(copy)["index"])
        corpus = read_index_config(copy)["corpus_root"]
        start = time.perf_counter()
        result = build_index(corpus, copy, config=replace(stored, keep_signals=True), workers=2, progress=True)
        print(f"  signals kept in {time.perf_counter() - start:.0f} s ({result.stats.files_unchanged} files "
              f"unchanged, {result.stats.files_added} added)", flush=True)
    index = Index.open(copy)
    info = index.info()
    print(f"index: {info['tracks']} files, {info['hours']:.2f} h; kept signals {info['signals_bytes'] / 1e6:.0f} MB "
          f"({info['signals_bytes'] / 1e6 / info['hours']:.0f} MB per hour) beside an index of "
          f"{info['size_bytes'] / 1e6:.1f} MB")
    queries = make_queries(args.queries, seed=args.query_seed)
    truth_file = source.parent / (f"exhaustive-{args.queries}.json" if args.query_seed == 0
                                  else f"exhaustive-{args.queries}-seed{args.query_seed}.json")
    truth = json.loads(truth_file.read_text()) if truth_file.exists() else None
    modes = {"decoded": SearchParams(use_signals=False), "kept": SearchParams(use_signals=True)}
    for q in queries[:3]:  # warm-up: page cache, FFT plans, thread pool
        for p in modes.values():
            index.search(q.audio, q.sr, q.gap, k=10, include_track=False, params=p)
    times: dict[str, list[float]] = {m: [] for m in modes}
    found: dict[str, list] = {m: [] for m in modes}
    for i, q in enumerate(queries):
        for m in modes if i % 2 == 0 else reversed(list(modes)):
            start = time.perf_counter()
            found[m].append(index.search(q.audio, q.sr, q.gap, k=10, include_track=False, params=modes[m]))
            times[m].append(time.perf_counter() - start)
    same = sum([(c.path, c.start_sample) for c in a] == [(c.path, c.start_sample) for c in b]
               for a, b in zip(found["decoded"], found["kept"]))
    print(f"\n{len(queries)} held-out queries (seed {args.query_seed}), Index.search(include_track=False, k=10), "
          "alternated query by query:")
    for m in modes:
        ms = 1e3 * np.array(times[m])
        line = f"  {m:8s} median {statistics.median(ms):6.1f} ms  p90 {np.percentile(ms, 90):6.1f} ms"
        if truth is not None:  # bench_index.py's measure: the frame-grid starts against the exhaustive top 10
            grid = [index.search(q.audio, q.sr, q.gap, k=10, include_track=False, params=modes[m],
                                 refine_offsets=False) for q in queries]
            line += f"  recall@10 {np.mean([recall(f, t) for f, t in zip(grid, truth)]):.4f}"
        print(line)
    print(f"  ratio (decoded / kept): {statistics.median(times['decoded']) / statistics.median(times['kept']):.2f}x; "
          f"the same top 10 (files and starts) in {same} of {len(queries)} queries")
    print(f"  (signals folder {folder_bytes(copy / 'signals') / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
