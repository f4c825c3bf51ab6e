"""Cost of scoring one restoration (``simdps.evaluation.metrics.gap_metrics``) beside one STFT.

On a 6-s excerpt with a 2-s central gap (synthetic music, 22.05 and 44.1 kHz), times in
the same process: the baseline, one ``librosa.stft`` of the excerpt (window ~46 ms, hop a
quarter, what the spectral metrics compute twice), then each metric group and the whole
``gap_metrics``. Prints medians over repeated runs and the ratio to the baseline, so the
scoring overhead of ``simdps-eval`` can be set against a restoration's time. With the
optional basic-pitch installed it also times one note transcription of the excerpt.

    python benchmarks/bench_eval_metrics.py [--repeats 9]
"""

from __future__ import annotations

import argparse

import librosa
import numpy as np

from _timing import median_s  # benchmarks/_timing.py
from simdps.evaluation import metrics as M
from simdps.evaluation.notes import NoteTranscriber, notes_unavailable_reason


def _music(seconds: float, sr: int) -> np.ndarray:
    """Decaying harmonic notes every 0.25 s (a stand-in for piano)."""
    rng = np.random.default_rng(0)
    n = int(seconds * sr)
    out = np.zeros(n)
    t = np.arange(sr) / sr
    for start in range(0, n, sr // 4):
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        note = np.exp(-4 * t) * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
        out[start:start + sr] += note[: n - start]
    return 0.5 * out / np.abs(out).max()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    cfg = M.MetricConfig()
    print(f"6-s excerpt, 2-s central gap, medians of {args.repeats}; ratio = time / one STFT of the excerpt")
    print(f"{'rate':>6} {'what':<28} {'ms':>9} {'ratio':>7}")
    for sr in (22_050, 44_100):
        x = _music(6.0, sr)
        x_hat = x.copy()
        gap = (2 * sr, 4 * sr)
        x_hat[gap[0]:gap[1]] = np.random.default_rng(1).standard_normal(2 * sr) * 0.1
        n_fft = M._frame_length(cfg.frame_s, sr)
        base = median_s(lambda: librosa.stft(x, n_fft=n_fft, hop_length=n_fft // 4), args.repeats)
        rows = [
            ("baseline: one STFT", base),
            ("lsd_db", median_s(lambda: M.log_spectral_distance(x, x_hat, sr, gap, cfg), args.repeats)),
            ("mel_l1_db", median_s(lambda: M.log_mel_l1(x, x_hat, sr, gap, cfg), args.repeats)),
            ("chroma_sim", median_s(lambda: M.chroma_similarity(x, x_hat, sr, gap, cfg), args.repeats)),
            ("snr_db", median_s(lambda: M.snr_db(x, x_hat, sr, gap), args.repeats)),
            ("loudness_diff_db", median_s(lambda: M.loudness_difference_db(x, x_hat, sr, gap), args.repeats)),
            ("flux (both edges)", median_s(lambda: [M.edge_flux_ratio_db(x, x_hat, sr, e, cfg) for e in gap],
                                            args.repeats)),
            ("diff (both edges)", median_s(lambda: [M.edge_diff_energy_ratio_db(x, x_hat, sr, e, cfg)
                                                     for e in gap], args.repeats)),
            ("gap_metrics (all of them)", median_s(lambda: M.gap_metrics(x, x_hat, sr, gap, cfg), args.repeats)),
        ]
        if notes_unavailable_reason() is None:
            transcriber = NoteTranscriber()
            rows.append(("basic-pitch transcription", median_s(lambda: transcriber.transcribe(x, sr),
                                                                 max(1, args.repeats // 3))))
        for name, seconds in rows:
            print(f"{sr:>6} {name:<28} {1e3 * seconds:>9.2f} {seconds / base:>7.1f}")
    if notes_unavailable_reason() is not None:
        print("(basic-pitch not installed: the note transcription is not timed)")


if __name__ == "__main__":
    main()
