"""Test excerpts: seeded choice of 6-s windows with a 2-s central gap (paper sec. 4-5).

An excerpt is a window ``[start, start + L)`` of a track (``L`` = ``excerpt_s``) whose
central ``gap_s`` seconds are treated as missing. Positions are drawn at random (numpy
``default_rng(seed)``) on a grid of ``grid_s`` among windows where the context before the
gap, the gap, and the context after it are all non-silent: every ``block_s`` block of each
region must have an RMS level of at least ``track RMS + silence_db`` dB and above
``floor_db`` dBFS (so no stretch of silence as long as a block fits in the window). Tracks are visited
round-robin in a seeded order, so ``N`` excerpts spread over ``min(N, tracks)`` tracks, and
excerpts from one track never overlap. All positions are held in samples at the track's own
rate, so every stage cuts exactly the same samples.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from simdps.audio import audio_info, read_audio, to_mono
from simdps.errors import SimDPSError
from simdps.atomic import write_json_atomic
from simdps.gaps import Gap

__all__ = [
    "AUDIO_SUFFIXES",
    "ExcerptConfig",
    "Excerpt",
    "find_recordings",
    "choose_excerpts",
    "nonsilent_starts",
    "write_manifest",
    "read_manifest",
]

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3"})


@dataclass(frozen=True)
class ExcerptConfig:
    """How excerpts are cut; the defaults are the paper's listening-test protocol."""

    count: int = 10  # N excerpts in all
    excerpt_s: float = 6.0  # excerpt length (paper: 6 s)
    gap_s: float = 2.0  # central gap length (paper: 2 s)
    seed: int = 0  # seeds the track order and the positions
    grid_s: float = 0.25  # candidate excerpt starts lie on this grid
    block_s: float = 0.5  # the level is checked on blocks this long
    silence_db: float = -30.0  # a block quieter than track RMS + this is silent
    floor_db: float = -70.0  # and so is any region below this level (dBFS)

    def check(self) -> None:
        if self.count < 1:
            raise SimDPSError("--excerpts must be at least 1")
        if not 0 < self.gap_s < self.excerpt_s:
            raise SimDPSError(
                f"the gap ({self.gap_s} s) must be shorter than the excerpt ({self.excerpt_s} s) "
                "and longer than 0, so that context is left on both sides"
            )
        if self.grid_s <= 0 or self.block_s <= 0:
            raise SimDPSError("the excerpt grid and level blocks must be positive")


@dataclass(frozen=True)
class Excerpt:
    """One test item: a window of a track and the gap inside it, in samples at ``sample_rate``."""

    excerpt_id: str
    track: str  # path of the recording
    sample_rate: int
    start_sample: int  # window start in the track
    length_samples: int  # window length
    gap_start_sample: int  # gap start, relative to the window
    gap_end_sample: int  # gap end (exclusive), relative to the window

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def gap_in_excerpt(self) -> tuple[int, int]:
        """``(start, end)`` of the gap in samples of the excerpt."""
        return self.gap_start_sample, self.gap_end_sample

    @property
    def gap_in_track_samples(self) -> tuple[int, int]:
        return self.start_sample + self.gap_start_sample, self.start_sample + self.gap_end_sample

    @property
    def track_gap(self) -> Gap:
        """The gap in seconds of the whole track (what retrieval searches around)."""
        g0, g1 = self.gap_in_track_samples
        return Gap(g0 / self.sample_rate, g1 / self.sample_rate)

    @property
    def excerpt_gap(self) -> Gap:
        """The gap in seconds of the excerpt (what restoration fills)."""
        return Gap(self.gap_start_sample / self.sample_rate, self.gap_end_sample / self.sample_rate)

    def cut(self, track_audio: np.ndarray) -> np.ndarray:
        """The excerpt's samples from the whole track's ``(frames, ...)`` array."""
        return track_audio[self.start_sample:self.start_sample + self.length_samples]


def find_recordings(folder: str | os.PathLike) -> list[Path]:
    """Audio files under ``folder`` (recursive, by extension), sorted, as absolute paths."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise SimDPSError(f"{folder}: not a folder; pass the folder that holds the test recordings")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                   and not p.name.startswith("."))
    if not paths:
        raise SimDPSError(f"{folder}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) found")
    return paths


def _window_lengths(config: ExcerptConfig, sample_rate: int) -> tuple[int, int, int]:
    """``(L, gap_start, gap_end)`` in samples, the gap centred in the window."""
    length = int(round(config.excerpt_s * sample_rate))
    gap = int(round(config.gap_s * sample_rate))
    g0 = (length - gap) // 2
    return length, g0, g0 + gap


def nonsilent_starts(mono: np.ndarray, sample_rate: int, config: ExcerptConfig) -> np.ndarray:
    """Window starts on the grid whose context-gap-context regions are all non-silent."""
    length, g0, g1 = _window_lengths(config, sample_rate)
    if mono.size < length:
        return np.zeros(0, dtype=np.int64)
    grid = max(1, int(round(config.grid_s * sample_rate)))
    starts = np.arange(0, mono.size - length + 1, grid, dtype=np.int64)
    # Prefix sums of x^2 give any region's mean square in O(1).
    energy = np.concatenate([[0.0], np.cumsum(np.asarray(mono, dtype=np.float64) ** 2)])
    track_db = 10 * math.log10(max(energy[-1] / mono.size, 1e-30))
    threshold_db = max(track_db + config.silence_db, config.floor_db)
    block = max(1, int(round(config.block_s * sample_rate)))
    ok = np.ones(starts.size, dtype=bool)
    for lo, hi in ((0, g0), (g0, g1), (g1, length)):
        # Blocks tile each region; the last one is shortened to end at the region's end.
        edges = np.append(np.arange(lo, hi, block), hi)
        for a, b in zip(edges[:-1], edges[1:]):
            mean_square = (energy[starts + b] - energy[starts + a]) / (b - a)
            ok &= 10 * np.log10(np.maximum(mean_square, 1e-30)) >= threshold_db
    return starts[ok]


def choose_excerpts(paths: list[Path], config: ExcerptConfig) -> list[Excerpt]:
    """Seeded, non-overlapping, non-silent excerpts spread round-robin over ``paths``."""
    config.check()
    rng = np.random.default_rng(config.seed)
    order = [paths[i] for i in rng.permutation(len(paths))]
    options: dict[Path, np.ndarray] = {}
    rates: dict[Path, int] = {}
    for path in order:
        sr = audio_info(path).sample_rate
        data, _ = read_audio(path)
        starts = nonsilent_starts(to_mono(data), sr, config)
        if starts.size:
            options[path], rates[path] = starts, sr
    if not options:
        raise SimDPSError(
            f"no track holds a non-silent {config.excerpt_s:g}-s excerpt; use longer recordings "
            "or a shorter --excerpt-s"
        )
    chosen: list[Excerpt] = []
    while len(chosen) < config.count and options:
        for path in [p for p in order if p in options]:
            if len(chosen) == config.count:
                break
            sr, starts = rates[path], options[path]
            length, g0, g1 = _window_lengths(config, sr)
            start = int(starts[rng.integers(starts.size)])
            remaining = starts[np.abs(starts - start) >= length]  # no overlap within a track
            if remaining.size:
                options[path] = remaining
            else:
                del options[path]
            chosen.append(Excerpt(_excerpt_id(len(chosen), path, start / sr), str(path), sr,
                                  start, length, g0, g1))
    return chosen


def _excerpt_id(k: int, path: Path, start_s: float) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-")[:40] or "track"
    return f"{k:03d}_{slug}_{start_s:.2f}s"


def write_manifest(path: str | os.PathLike, recordings_dir: str | os.PathLike,
                   config: ExcerptConfig, excerpts: list[Excerpt]) -> None:
    """Excerpt list and the settings that chose it, as JSON (written atomically)."""
    doc = {
        "recordings_dir": str(Path(recordings_dir).resolve()),
        "config": asdict(config),
        "excerpts": [asdict(e) for e in excerpts],
    }
    write_json_atomic(path, doc)


def read_manifest(path: str | os.PathLike) -> tuple[str, ExcerptConfig, list[Excerpt]]:
    """``(recordings_dir, config, excerpts)`` from :func:`write_manifest`'s file."""
    try:
        doc = json.loads(Path(path).read_text())
        return (doc["recordings_dir"], ExcerptConfig(**doc["config"]),
                [Excerpt(**e) for e in doc["excerpts"]])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SimDPSError(f"{path}: unreadable excerpt list ({exc}); delete it to choose excerpts anew") from None
