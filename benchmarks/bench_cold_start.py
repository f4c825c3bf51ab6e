"""A process's first in-track search: the chroma filterbank shipped with the package against librosa's.

Every process that searches without an index (``simdps-restore`` with the track's own
guide, ``search_track`` from Python, a new index build) needs the chroma filterbank. The
paper's settings' filterbank ships as ``simdps/assets/chroma_12000_1024.npy`` (librosa's,
saved once); the baseline builds it with librosa as before, which imports librosa (and
scipy.signal, numba). Each run is a fresh interpreter that imports SimDPS and searches a
30-s track once; the two ways alternate. Prints medians and their ratio.

    python benchmarks/bench_cold_start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CODE = """
import time
start = time.perf_counter()
import numpy as np
import simdps.retrieval.features as features
if {librosa}:
    features._SHIPPED_CHROMA = {{}}  # the baseline: librosa builds the filterbank
from simdps.retrieval.track import search_track
x = (0.1 * np.random.default_rng(0).standard_normal(30 * 22_050)).astype(np.float32)
search_track(x, 22_050, (15.0, 16.0), k=5)
print(time.perf_counter() - start)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.repeats):
        for librosa in (True, False) if r % 2 == 0 else (False, True):
            out = subprocess.run([sys.executable, "-c", CODE.format(librosa=librosa)], capture_output=True,
                                 text=True, check=True).stdout
            times[librosa].append(float(out.strip().splitlines()[-1]))
    base, now = statistics.median(times[True]), statistics.median(times[False])
    print(f"import + first search_track of a 30-s track, fresh process, medians of {args.repeats}:")
    print(f"  filterbank from librosa (baseline) {base:6.2f} s")
    print(f"  shipped filterbank                 {now:6.2f} s")
    print(f"  ratio {base / now:.1f}x")


if __name__ == "__main__":
    main()
