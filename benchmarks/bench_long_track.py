"""A query on a long recording: wall time and peak memory of reading the track and searching it.

``simdps-index query`` and ``search_track`` on a recording of an hour or more, where the
whole track (the in-track search reads all of it) dominates time and memory. Two ways,
each run in a fresh process so that its peak resident memory is its own, alternated:

* ``frames``: the track read whole as float64 frames (``read_audio``, what the CLI did
  until session 8) and ``grid_costs`` in one pass over each side of the gap (the blocks
  of starts turned off): the baseline;
* ``mono``: the track decoded block by block into a float32 mono mix (``read_audio_mono``,
  what the CLI does now) and ``grid_costs`` in blocks of starts (the default).

The track is the shared piano set joined and resampled to ``--rate`` with ``--channels``
channels (the second at 0.9 gain), written as 16-bit FLAC; without the shared set, a
synthetic piano-like track. With ``--index DIR`` the search is ``Index.search`` (the
corpus and the track itself, what the CLI runs); without, ``search_track`` alone.

    python benchmarks/bench_long_track.py [--minutes 60] [--rate 44100] [--channels 2]
        [--index DIR] [--repeats 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GAP_LENGTH_S = 2.0


def make_track(path: Path, minutes: float, rate: int, channels: int) -> None:
    import soundfile as sf
    import soxr

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from index_corpus import SOURCE

    need = int(minutes * 60 * rate)
    parts, have = [], 0
    for f in sorted(SOURCE.glob("**/*.flac")) if SOURCE.is_dir() else []:
        x, sr = sf.read(f, dtype="float32")
        x = soxr.resample(x.mean(axis=1) if x.ndim > 1 else x, sr, rate)
        parts.append(x)
        have += len(x)
        if have >= need:
            break
    if have < need:  # no shared set (or too little of it): a synthetic piano-like track
        rng = np.random.default_rng(0)
        t = np.arange(need - have) / rate
        notes = 110.0 * 2 ** (rng.integers(0, 48, size=len(t) // rate + 1) / 12)
        f0 = notes[(t).astype(int)]
        parts.append((0.2 * np.sin(2 * np.pi * np.cumsum(f0) / rate) * np.exp(-3 * (t % 1.0))).astype(np.float32))
    mono = np.concatenate(parts)[:need]
    data = np.stack([mono * (1.0 if c == 0 else 0.9) for c in range(channels)], axis=1)
    sf.write(path, data, rate, subtype="PCM_16")


def child(mode: str, track: str, index_dir: str | None) -> dict:
    """One measurement in this fresh process: read the track, search it, report time and peak RSS."""
    import simdps.retrieval.cost as cost
    from simdps.audio import audio_info, read_audio, read_audio_mono

    if mode == "frames":
        cost._GRID_BLOCK = 1 << 62  # one pass over every start, as before blocks
    duration = audio_info(track).duration_s
    gap = (duration / 2, duration / 2 + GAP_LENGTH_S)
    index = None
    if index_dir:
        from simdps.retrieval.api import Index

        index = Index.open(index_dir)
    else:
        from simdps.retrieval.features import chroma_basis

        chroma_basis(12_000, 1024)  # librosa's import, once, outside the timing
    start = time.perf_counter()
    audio, sr = read_audio(track) if mode == "frames" else read_audio_mono(track)
    read_s = time.perf_counter() - start
    if index is not None:
        found = index.search(audio, sr, gap, k=5, path=track)
    else:
        from simdps.retrieval.track import search_track

        found = search_track(audio, sr, gap, k=5, path=track)
    total_s = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "read_s": read_s, "total_s": total_s, "peak_mb": peak_mb,
            "top": [(c.path, c.start_sample, round(c.cost, 5)) for c in found]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rate", type=int, default=44_100)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--index", help="an index folder: time Index.search (corpus + track) instead of search_track")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", default="/tmp/simdps-bench-long", help="where the track is written (kept)")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "TRACK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.index)))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    track = work / f"long-{args.minutes:g}min-{args.rate}-{args.channels}ch.flac"
    if not track.exists():
        print(f"writing {track} ...", flush=True)
        make_track(track, args.minutes, args.rate, args.channels)
    results: dict[str, list[dict]] = {"frames": [], "mono": []}
    for r in range(args.repeats):
        for mode in ("frames", "mono") if r % 2 == 0 else ("mono", "frames"):
            cmd = [sys.executable, __file__, "--child", mode, str(track)] + (["--index", args.index] if args.index else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[mode].append(json.loads(out.strip().splitlines()[-1]))
            got = results[mode][-1]
            print(f"  {mode:6s} read {got['read_s']:6.2f} s  total {got['total_s']:6.2f} s  "
                  f"peak {got['peak_mb']:7.0f} MB", flush=True)
    what = "Index.search (corpus + track)" if args.index else "search_track"
    print(f"\n{args.minutes:g}-min {args.rate}-Hz {args.channels}-channel FLAC, {what}, "
          f"{GAP_LENGTH_S:g}-s gap in the middle; medians of {args.repeats}:")
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("read_s", "total_s", "peak_mb")}
           for m, rs in results.items()}
    for mode, label in (("frames", "float64 frames, one pass (baseline)"), ("mono", "float32 mono mix, blocks")):
        m = med[mode]
        print(f"  {label:38s} read {m['read_s']:6.2f} s  total {m['total_s']:6.2f} s  peak {m['peak_mb']:7.0f} MB")
    print(f"  ratio (baseline / now): time {med['frames']['total_s'] / med['mono']['total_s']:.2f}x, "
          f"peak memory {med['frames']['peak_mb'] / med['mono']['peak_mb']:.2f}x")
    same = all(a["top"][0][:2] == b["top"][0][:2] for a, b in zip(results["frames"], results["mono"]))
    print(f"  same best candidate in every pair: {same}")


if __name__ == "__main__":
    main()
