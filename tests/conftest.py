"""Shared fixtures: small synthetic audio made in code, never files from outside the repo."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf


def piano_like(duration_s: float, sr: int, *, seed: int = 0, note_s: float = 0.25) -> np.ndarray:
    """A deterministic sequence of decaying harmonic notes (a stand-in for music) in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sr))
    out = np.zeros(n)
    t = np.arange(int(note_s * 4 * sr)) / sr
    for start in range(0, n, int(note_s * sr)):
        f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
        env = np.exp(-t * rng.uniform(3, 8))
        tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))
        seg = (env * tone)[: n - start]
        out[start:start + len(seg)] += 0.2 * seg
    out += 1e-3 * rng.standard_normal(n)
    return (0.9 * out / np.max(np.abs(out))).astype(np.float64)


@pytest.fixture
def make_wav(tmp_path):
    """Write a synthetic file: ``make_wav(name, duration_s, sr=..., channels=..., subtype=...)``."""

    def _make(name: str, duration_s: float = 5.0, *, sr: int = 16_000, channels: int = 1,
              subtype: str | None = None, seed: int = 0, data: np.ndarray | None = None):
        if data is None:
            data = np.stack([piano_like(duration_s, sr, seed=seed + c) for c in range(channels)], axis=1)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data, sr, subtype=subtype)
        return path

    return _make


def repeating_tune(sr: int, duration_s: float, *, seed: int = 10, noise_seed: int | None = None) -> np.ndarray:
    """Sixteen half-second notes played over and over (every 8 s) in faint noise: many near-equal matches.

    ``noise_seed`` (default ``seed``) draws other noise over the same tune."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * duration_s)) / sr
    notes = rng.choice([220, 247, 262, 294, 330, 349, 392, 440], 16)
    if noise_seed is not None:
        rng = np.random.default_rng(noise_seed)
    i = (t / 0.5).astype(int)
    f = notes[i % 16]
    x = 0.3 * np.exp(-3 * (t - 0.5 * i)) * (np.sin(2 * np.pi * f * t) + 0.5 * np.sin(4 * np.pi * f * t))
    return (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
