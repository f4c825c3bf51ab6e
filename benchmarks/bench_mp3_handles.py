"""Index queries over an MP3 corpus, with and without MP3 decoders kept open between reads.

A seek in an MP3 file from a fresh libsndfile handle scans the file from its start, so a
re-score window late in a long MP3 costs several times one early in it. ``Index`` keeps
MP3 handles open between windows and queries (``simdps.audio.KeptHandles``). This script
makes an MP3 corpus from the shared piano set (its originals joined into ~10-min files,
44.1-kHz stereo, as CD rips are), indexes it, and times the same held-out queries with the
handles kept and with every handle closed after its read, alternating query by query in one
process. Prints medians and their ratio.

    python benchmarks/bench_mp3_handles.py [--work DIR] [--minutes 80] [--queries 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_corpus import SOURCE, make_queries  # noqa: E402

from simdps import Index  # noqa: E402
from simdps.audio import KeptHandles  # noqa: E402

RATE = 44_100
FILE_MINUTES = 10.0


def _write_mp3(args: tuple[list[str], str]) -> float:
    sources, dst = args
    if Path(dst).exists():
        return sf.info(dst).duration
    parts = []
    for src in sources:
        x, sr = sf.read(src, dtype="float32")
        parts.append(soxr.resample(x, sr, RATE))
    y = np.concatenate(parts)
    tmp = dst + ".part"
    sf.write(tmp, np.stack([y, 0.9 * y], axis=1), RATE, format="MP3")
    Path(tmp).replace(dst)
    return len(y) / RATE


def make_mp3_corpus(out: Path, minutes: float) -> float:
    """The shared originals, in order, joined into ~10-min stereo MP3 files until ``minutes``."""
    files = sorted(SOURCE.rglob("*.flac"))
    groups, group, length, total = [], [], 0.0, 0.0
    for f in files:
        d = sf.info(str(f)).duration
        group.append(str(f))
        length += d
        total += d
        if length >= 60 * FILE_MINUTES:
            groups.append(group)
            group, length = [], 0.0
        if total >= 60 * minutes:
            break
    if group:
        groups.append(group)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(g, str(out / f"part{i:02d}.mp3")) for i, g in enumerate(groups)]
    with ProcessPoolExecutor(2) as pool:
        return sum(pool.map(_write_mp3, jobs)) / 3600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/simdps-bench-mp3")
    ap.add_argument("--minutes", type=float, default=80.0, help="corpus length")
    ap.add_argument("--queries", type=int, default=20)
    args = ap.parse_args()
    work = Path(args.work)
    t = time.perf_counter()
    hours = make_mp3_corpus(work / "corpus", args.minutes)
    print(f"corpus: {len(list((work / 'corpus').glob('*.mp3')))} MP3 files, {hours:.2f} h "
          f"({time.perf_counter() - t:.0f} s to make or check)")
    if not (work / "index").exists():
        t = time.perf_counter()
        Index.build(work / "corpus", work / "index", workers=2)
        print(f"index built in {time.perf_counter() - t:.0f} s")
    index = Index.open(work / "index")
    queries = make_queries(args.queries)
    kept, closed = KeptHandles(), KeptHandles(max_open=0)  # max_open 0: every handle closed after its read
    times: dict[str, list[float]] = {"kept": [], "closed": []}
    same = 0
    for i, q in enumerate(queries):
        found = {}
        for name in (("closed", "kept") if i % 2 == 0 else ("kept", "closed")):
            index._handles = kept if name == "kept" else closed
            t = time.perf_counter()
            cands = index.search(q.audio, q.sr, q.gap, k=10, include_track=False)
            times[name].append(time.perf_counter() - t)
            found[name] = [(c.path, c.start_sample) for c in cands]
        same += found["kept"] == found["closed"]
    med = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    print(f"query median: handles closed after each read {med['closed']:.0f} ms, kept {med['kept']:.0f} ms "
          f"(ratio {med['closed'] / med['kept']:.2f}); same top 10 in {same} of {len(queries)} queries; "
          f"{len(kept)} handles kept at the end")


if __name__ == "__main__":
    main()
