"""In-track similarity search (eq. 10 exhaustive + eq. 11) beside per-candidate exact costing.

Times, on a synthetic track (``piano_like``) at 44.1 kHz with a 2-s gap in the middle:

* ``grid``: :func:`simdps.retrieval.cost.grid_costs`, the vectorised exact cost at every
  start on the 256-sample grid of the 12 kHz search signal (both parts of the track);
* ``per-cand``: the baseline, :func:`simdps.retrieval.cost.costs_at` evaluating the same
  exact cost one candidate at a time (timed on an evenly spread subset and scaled to the
  whole grid; per-candidate time does not depend on the grid);
* ``search``: the whole :func:`simdps.retrieval.track.search_track` call (resampling,
  features, grid cost, top-k, eq. 11 refinement, re-scoring), beside
* ``resample``: soxr 44.1 -> 12 kHz of the same track, the floor any search pays.

Prints medians, per-start times and ratios; also checks that the two cost paths agree.

    python benchmarks/bench_track_search.py [--minutes 5] [--repeats 5] [--subset 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from _timing import median_s  # benchmarks/_timing.py
from simdps.audio import resample
from simdps.config import SearchConfig
from simdps.retrieval.cost import costs_at, grid_costs, query_context
from simdps.retrieval.features import search_signal
from simdps.retrieval.track import search_track

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import piano_like  # noqa: E402  (the test suite's synthetic music)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--subset", type=int, default=200, help="candidates timed one by one for the baseline")
    args = parser.parse_args()

    cfg = SearchConfig()
    sr = 44_100
    duration_s = args.minutes * 60
    x = piano_like(duration_s, sr, seed=0)
    gap = (duration_s / 2, duration_s / 2 + 2.0)
    y12 = search_signal(x, sr, cfg)
    gs12, ge12 = int(gap[0] * cfg.sample_rate), int(gap[1] * cfg.sample_rate)
    query = query_context(y12, gs12, ge12, cfg)
    parts = (y12[:gs12], y12[ge12:])

    t_grid = median_s(lambda: [grid_costs(query, p, cfg) for p in parts], args.repeats)
    n_starts = sum(len(grid_costs(query, p, cfg)) for p in parts)
    grid = grid_costs(query, parts[0], cfg)
    subset = grid.starts[np.linspace(0, len(grid) - 1, args.subset).astype(int)]
    t_subset = median_s(lambda: costs_at(query, parts[0], subset, cfg), max(1, args.repeats // 2))
    t_per_cand = t_subset / len(subset) * n_starts
    check = costs_at(query, parts[0], subset, cfg)
    exact = grid.total[np.searchsorted(grid.starts, subset)]
    rel_err = float(np.max(np.abs(check.total - exact) / check.total))

    t_search = median_s(lambda: search_track(x, sr, gap, k=10, cfg=cfg), args.repeats)
    t_resample = median_s(lambda: resample(x, sr, cfg.sample_rate), args.repeats)

    print(f"track {duration_s:g} s at {sr} Hz, gap 2 s, {n_starts} grid starts, medians of {args.repeats}")
    print(f"{'what':<34} {'total ms':>10} {'us/start':>9}")
    print(f"{'grid_costs (vectorised, exact)':<34} {1e3 * t_grid:>10.1f} {1e6 * t_grid / n_starts:>9.2f}")
    print(f"{'costs_at one by one (baseline)':<34} {1e3 * t_per_cand:>10.1f} {1e6 * t_per_cand / n_starts:>9.2f}")
    print(f"speed-up of grid_costs over the baseline: {t_per_cand / t_grid:.0f}x "
          f"(max relative difference {rel_err:.1e})")
    print(f"{'search_track, whole call':<34} {1e3 * t_search:>10.1f}")
    print(f"{'soxr 44.1 -> 12 kHz (floor)':<34} {1e3 * t_resample:>10.1f}")
    print(f"search_track / resampling: {t_search / t_resample:.1f}x")


if __name__ == "__main__":
    main()
