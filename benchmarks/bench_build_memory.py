"""Peak memory and time of indexing one long file: embedded while decoded, or after.

A build worker's work on one corpus file (``indexer/work.process_file``: decode, resample
to 12 kHz, embed every position, write the shard), two ways, each run in a fresh process so
that its peak resident memory is its own, alternated:

* ``whole``: the file decoded whole into its 12-kHz signal (``decode_search_signal``), then
  embedded block by block (``embed_signal``): what a worker did until session 9 (baseline);
* ``stream``: ``process_file`` as it is now: each block of positions embedded as soon as its
  contexts have been decoded (``embed_stream``), the samples behind it dropped.

Both write their shard; the benchmark checks that the embeddings are the same bit for bit.
The files are the shared piano set joined (``bench_long_track.make_track``) at ``--rate``
with ``--channels`` channels, one per ``--minutes`` value; the PCA is fitted on the
shortest one's first two minutes.

    python benchmarks/bench_build_memory.py [--minutes 20 60 120] [--rate 44100]
        [--channels 2] [--repeats 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, which starts afresh at exec, where
    ``ru_maxrss`` would carry a large parent's peak into its child."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, track: str, pca_path: str) -> dict:
    """One measurement in this fresh process: index ``track`` into a new shard."""
    import numpy as np

    from simdps.audio import audio_info
    from simdps.config import SearchConfig
    from simdps.indexer.embed import ContextPCA, embed_signal
    from simdps.indexer.layout import read_shard, shard_path, write_shard
    from simdps.indexer.work import FileTask, decode_search_signal, process_file

    cfg = SearchConfig()
    ContextPCA.load(pca_path)  # imports and first use outside the measurement
    base_mb = peak_rss_mb()
    with tempfile.TemporaryDirectory() as cache:
        wall, cpu = time.perf_counter(), time.process_time()
        if mode == "stream":
            result = process_file(FileTask("t", track, None, cache, pca_path), cfg)
            assert result.error is None, result.error
            shard = shard_path(cache, result.content_hash)
        else:
            info = audio_info(track)
            x12k, _ = decode_search_signal(track, cfg)
            emb = embed_signal(x12k, ContextPCA.load(pca_path), cfg)
            shard = shard_path(cache, "whole")
            write_shard(shard, emb, {"sample_rate": info.sample_rate, "channels": info.channels,
                                     "frames": info.frames, "n_samples_12k": int(len(x12k))})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        peak_mb = peak_rss_mb()  # before the check below reads the shard back
        emb, _ = read_shard(shard)
        digest = hashlib.sha1(np.ascontiguousarray(emb.pre).tobytes() + np.ascontiguousarray(emb.post).tobytes())
    return {"mode": mode, "wall_s": wall, "cpu_s": cpu, "base_mb": base_mb,
            "peak_mb": peak_mb,
            "positions": len(emb), "digest": digest.hexdigest()}


def fit_small_pca(track: Path, path: Path) -> None:
    from simdps.config import SearchConfig
    from simdps.indexer.config import IndexConfig
    from simdps.indexer.embed import fit_pca
    from simdps.indexer.work import decode_search_signal
    from simdps.audio import audio_info
    from simdps.retrieval.features import frame_features

    cfg = SearchConfig()
    sr = audio_info(track).sample_rate
    x12k, _ = decode_search_signal(track, cfg, stop=120 * sr)
    fit_pca([frame_features(x12k, cfg)], IndexConfig()).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[20.0, 60.0, 120.0])
    ap.add_argument("--rate", type=int, default=44_100)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", default="/tmp/simdps-bench-long", help="where the files are written (kept)")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "TRACK", "PCA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_long_track import make_track

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tracks = []
    for minutes in sorted(args.minutes):
        track = work / f"long-{minutes:g}min-{args.rate}-{args.channels}ch.flac"
        if not track.exists():
            print(f"writing {track} ...", flush=True)
            make_track(track, minutes, args.rate, args.channels)
        tracks.append((minutes, track))
    pca = work / "bench-build-memory-pca.npz"
    if not pca.exists():
        fit_small_pca(tracks[0][1], pca)
    rows = []
    for minutes, track in tracks:
        results: dict[str, list[dict]] = {"whole": [], "stream": []}
        for r in range(args.repeats):
            for mode in ("whole", "stream") if r % 2 == 0 else ("stream", "whole"):
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(track), str(pca)],
                                     check=True, capture_output=True, text=True).stdout
                got = json.loads(out.strip().splitlines()[-1])
                results[mode].append(got)
                print(f"  {minutes:5g} min  {mode:6s} wall {got['wall_s']:6.2f} s  CPU {got['cpu_s']:6.2f} s  "
                      f"peak {got['peak_mb']:6.0f} MB (imports {got['base_mb']:.0f})", flush=True)
        same = len({g["digest"] for rs in results.values() for g in rs}) == 1
        rows.append((minutes, {m: {k: statistics.median(g[k] for g in rs) for k in ("wall_s", "cpu_s", "peak_mb")}
                               for m, rs in results.items()}, same))
    print(f"\n{args.rate}-Hz {args.channels}-channel FLAC, one file indexed (decode, embed, shard); "
          f"medians of {args.repeats}, peak resident memory of the process:")
    print(f"  {'minutes':>7s}  {'whole: CPU s':>12s}  {'peak MB':>7s}  {'stream: CPU s':>13s}  {'peak MB':>7s}  "
          f"{'peak ratio':>10s}  same vectors")
    for minutes, med, same in rows:
        w, s = med["whole"], med["stream"]
        print(f"  {minutes:7g}  {w['cpu_s']:12.2f}  {w['peak_mb']:7.0f}  {s['cpu_s']:13.2f}  {s['peak_mb']:7.0f}  "
              f"{w['peak_mb'] / s['peak_mb']:9.2f}x  {same}")
    if len(rows) > 1:
        (m0, a, _), (m1, b, _) = rows[0], rows[-1]
        per_hour = {m: (b[m]["peak_mb"] - a[m]["peak_mb"]) / ((m1 - m0) / 60) for m in ("whole", "stream")}
        print(f"  peak growth per hour of audio: whole {per_hour['whole']:.0f} MB, stream {per_hour['stream']:.0f} MB")


if __name__ == "__main__":
    main()
