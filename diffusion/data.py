"""Training data: which files (a folder, or a MAESTRO root filtered by split and year) and random mono crops.

MAESTRO (Hawthorne et al. 2019, paper ref. [28]) ships ``maestro-v3.0.0.csv`` with the
columns ``canonical_composer, canonical_title, split, year, midi_filename,
audio_filename, duration``; ``audio_filename`` is relative to the root. The paper
trained on the ``train`` split, then fine-tuned on the 2017-2018 recordings (sec. 4.1).

Crops are drawn uniformly over the total duration (a file is chosen with probability
proportional to its length, then a uniform start inside it), mixed to mono and
resampled to the model's rate with soxr. Every batch is a pure function of
``(seed, step)``, so an interrupted run resumes with exactly the crops it would have
drawn, whatever was prefetched before the interruption.
"""

from __future__ import annotations

import csv
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simdps.audio import audio_info, read_audio, resample, to_mono
from simdps.errors import SimDPSError

__all__ = [
    "AUDIO_EXTENSIONS",
    "find_maestro_csv",
    "maestro_files",
    "folder_files",
    "training_files",
    "CropSampler",
    "BatchPrefetcher",
]

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".opus"})
MAESTRO_SPLITS = ("train", "validation", "test")

# Resampling a crop in isolation distorts its ends (the filter sees zeros beyond them);
# read this much more on each side and cut it away.
_RESAMPLE_MARGIN_S = 0.01


def find_maestro_csv(root: str | os.PathLike) -> Path | None:
    """The MAESTRO metadata CSV in ``root`` (``maestro-v3.0.0.csv`` or another ``maestro-v*.csv``), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    preferred = root / "maestro-v3.0.0.csv"
    if preferred.is_file():
        return preferred
    found = sorted(root.glob("maestro-v*.csv"))
    return found[-1] if found else None


def maestro_files(root: str | os.PathLike, split: str | None = "train",
                  years: tuple[int, ...] | list[int] = ()) -> list[Path]:
    """Audio files of a MAESTRO root, keeping rows of ``split`` (None: all) and of ``years`` (empty: all)."""
    root = Path(root)
    csv_path = find_maestro_csv(root)
    if csv_path is None:
        raise SimDPSError(f"{root}: no maestro-v*.csv found; point DATA at the MAESTRO root folder")
    if split is not None and split not in MAESTRO_SPLITS:
        raise SimDPSError(f"unknown MAESTRO split {split!r}; choose one of {', '.join(MAESTRO_SPLITS)}")
    wanted_years = {int(y) for y in years}
    files: list[Path] = []
    missing: list[str] = []  # listed in the CSV, absent on disk
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        needed = {"split", "year", "audio_filename"}
        if not needed <= set(reader.fieldnames or ()):
            raise SimDPSError(f"{csv_path}: expected columns {sorted(needed)}, found {reader.fieldnames}")
        for row in reader:
            if split is not None and row["split"] != split:
                continue
            if wanted_years and int(row["year"]) not in wanted_years:
                continue
            path = root / row["audio_filename"]
            if path.is_file():
                files.append(path)
            else:
                missing.append(row["audio_filename"])
    if missing:
        raise SimDPSError(
            f"{csv_path}: {len(missing)} listed audio files are missing under {root} "
            f"(first: {missing[0]}); download the full MAESTRO audio or fix the root"
        )
    if not files:
        raise SimDPSError(
            f"{csv_path}: no recordings match split={split!r} years={sorted(wanted_years) or 'all'}; "
            "check --split and --years"
        )
    return files


def folder_files(folder: str | os.PathLike) -> list[Path]:
    """Audio files under ``folder`` (recursively, by extension), sorted."""
    folder = Path(folder)
    if not folder.exists():
        raise SimDPSError(f"{folder}: no such folder; check the DATA path")
    if folder.is_file():
        return [folder]
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise SimDPSError(
            f"{folder}: no audio files found (looked for {', '.join(sorted(AUDIO_EXTENSIONS))})"
        )
    return files


def training_files(data: str | os.PathLike, split: str | None = "train",
                   years: tuple[int, ...] | list[int] = ()) -> list[Path]:
    """A MAESTRO root's filtered files if ``data`` holds ``maestro-v*.csv``, else every audio file under it."""
    if find_maestro_csv(data) is not None:
        return maestro_files(data, split, years)
    return folder_files(data)


@dataclass(frozen=True)
class _Source:
    path: Path
    sample_rate: int
    frames: int


class CropSampler:
    """Random mono crops of ``crop_samples`` at ``sample_rate`` from a list of files.

    Parameters
    ----------
    files : audio files (any format soundfile reads, any rate, any channel count).
    sample_rate : rate of the crops in Hz (the model's rate).
    crop_samples : crop length in samples at ``sample_rate``; files shorter than that
        give zero-padded crops.
    """

    def __init__(self, files: list[Path] | list[str], sample_rate: int, crop_samples: int):
        if not files:
            raise SimDPSError("no training files given")
        if crop_samples < 1 or sample_rate < 1:
            raise SimDPSError(f"crop length and rate must be positive, got {crop_samples}, {sample_rate}")
        self.sample_rate = int(sample_rate)
        self.crop_samples = int(crop_samples)
        self.sources = []
        for f in files:
            info = audio_info(f)
            self.sources.append(_Source(Path(f), info.sample_rate, info.frames))
        durations = np.array([s.frames / s.sample_rate for s in self.sources])
        self._p = durations / durations.sum()

    @property
    def total_duration_s(self) -> float:
        return float(sum(s.frames / s.sample_rate for s in self.sources))

    def batch(self, batch_size: int, seed: int, step: int) -> np.ndarray:
        """``(batch_size, crop_samples)`` float32 crops, a pure function of ``(seed, step)``."""
        rng = np.random.default_rng([int(seed), int(step)])
        picks = rng.choice(len(self.sources), size=batch_size, p=self._p)
        return np.stack([self._crop(self.sources[i], rng.random()) for i in picks])

    def level_std(self, n_crops: int = 16, *, seed: int = 0) -> float:
        """Standard deviation of ``n_crops`` random crops (drawn apart from the training batches)."""
        return float(self.batch(n_crops, seed, step=2**62).std())

    def _crop(self, src: _Source, u: float) -> np.ndarray:
        """The crop starting at fraction ``u`` of the admissible start range of ``src``."""
        ratio = src.sample_rate / self.sample_rate
        length = math.ceil(self.crop_samples * ratio)  # native frames covering one crop
        margin = 0 if src.sample_rate == self.sample_rate else math.ceil(_RESAMPLE_MARGIN_S * src.sample_rate)
        start = int(u * max(src.frames - length, 0) + 0.5) if src.frames > length else 0
        lo, hi = max(start - margin, 0), min(start + length + margin, src.frames)
        data, _ = read_audio(src.path, start=lo, stop=hi, dtype="float32")
        mono = to_mono(data)
        if src.sample_rate != self.sample_rate:
            mono = resample(mono, src.sample_rate, self.sample_rate)
            skip = int(round((start - lo) / ratio))
            mono = mono[skip:]
        crop = np.zeros(self.crop_samples, dtype=np.float32)
        n = min(self.crop_samples, mono.shape[0])
        crop[:n] = mono[:n]
        return crop


class BatchPrefetcher:
    """Prepares the batches of the next steps in background threads while the model trains.

    ``get(step)`` returns ``sampler.batch(batch_size, seed, step)``; the result does not
    depend on prefetching (batches are functions of the step).
    """

    def __init__(self, sampler: CropSampler, batch_size: int, seed: int, *, workers: int = 1, ahead: int = 2):
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed
        self.ahead = max(int(ahead), 0)
        self._pool = ThreadPoolExecutor(max_workers=max(int(workers), 1)) if self.ahead else None
        self._pending: dict[int, Future] = {}

    def get(self, step: int) -> np.ndarray:
        if self._pool is None:
            return self.sampler.batch(self.batch_size, self.seed, step)
        for s in range(step, step + self.ahead + 1):
            if s not in self._pending:
                self._pending[s] = self._pool.submit(self.sampler.batch, self.batch_size, self.seed, s)
        for s in [s for s in self._pending if s < step]:
            self._pending.pop(s).cancel()
        return self._pending.pop(step).result()

    def close(self) -> None:
        if self._pool is not None:
            for fut in self._pending.values():
                fut.cancel()
            self._pool.shutdown(wait=True)
            self._pending.clear()

    def __enter__(self) -> BatchPrefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
