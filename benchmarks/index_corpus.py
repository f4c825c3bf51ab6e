"""A 10-hour corpus and held-out queries for ``bench_index.py``, made from the shared piano set.

The shared set (``/work/shared/data/piano``: 124 FLAC files, 2.6 h at 22.05 kHz) is
copied four times: as it is, and played 1 semitone up (gain 0.8), 1 semitone down (0.9)
and 2 semitones up (0.7), each a soxr resampling written back at 22.05 kHz (a speed and
pitch change): 10.2 h of FLAC in all. Queries are 20-s excerpts of the originals played a
quarter tone up at gain 0.85: no corpus file holds them, the nearest material is the
original and its 1-semitone-up copy, a quarter tone away on either side (moderately
similar matches, the paper's interesting case).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SOURCE = Path("/work/shared/data/piano")
VARIANTS = (("orig", 0.0, 1.0), ("up1", 1.0, 0.8), ("down1", -1.0, 0.9), ("up2", 2.0, 0.7))


def _shift(x: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Play ``x`` 2**(semitones/12) times faster: pitch up by ``semitones``, same rate."""
    if semitones == 0:
        return x
    return soxr.resample(x, sr * 2 ** (semitones / 12), sr, quality="HQ")


def _make_one(args: tuple[str, str, float, float]) -> float:
    src, dst, semitones, gain = args
    if os.path.exists(dst):
        return sf.info(dst).duration
    x, sr = sf.read(src, dtype="float32")
    y = np.clip(gain * _shift(x, sr, semitones), -1, 1)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + ".part"
    sf.write(tmp, y, sr, format="FLAC")
    os.replace(tmp, dst)
    return len(y) / sr


def make_corpus(out_dir: str | Path, *, workers: int = 2, source: Path = SOURCE) -> tuple[list[Path], float]:
    """Write (or reuse) the corpus under ``out_dir``; return its files and hours."""
    out_dir = Path(out_dir)
    files = sorted(source.rglob("*.flac"))
    if not files:
        raise SystemExit(f"{source}: no FLAC files; the benchmark needs the shared piano set")
    jobs = [(str(f), str(out_dir / name / f.relative_to(source)), st, g)
            for name, st, g in VARIANTS for f in files]
    with ProcessPoolExecutor(workers) as pool:
        seconds = sum(pool.map(_make_one, jobs, chunksize=4))
    return [Path(j[1]) for j in jobs], seconds / 3600


@dataclass(frozen=True)
class BenchQuery:
    name: str
    audio: np.ndarray
    sr: int
    gap: tuple[float, float]


def make_queries(n: int, gap_lengths_s=(0.5, 1.0, 2.0, 3.0), *, seed: int = 0,
                 source: Path = SOURCE) -> list[BenchQuery]:
    """``n`` held-out queries: 20-s excerpts a quarter tone up, gap in the middle."""
    rng = np.random.default_rng(seed)
    files = sorted(source.rglob("*.flac"))
    out = []
    while len(out) < n:
        f = files[int(rng.integers(len(files)))]
        info = sf.info(f)
        if info.duration < 30:
            continue
        start = int(rng.integers(0, info.frames - 21 * info.samplerate))
        x, sr = sf.read(f, start=start, stop=start + 21 * info.samplerate, dtype="float64")
        y = 0.85 * _shift(x, sr, 0.5)[: 20 * sr]
        length = gap_lengths_s[len(out) % len(gap_lengths_s)]
        out.append(BenchQuery(f"{f.stem}@{start / sr:.1f}s", y, sr, (10.0 - length / 2, 10.0 + length / 2)))
    return out
