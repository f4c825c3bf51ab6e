"""Forward + inverse time of the multi-resolution CQT beside torch.stft + istft.

Times, on 6-s batches of white noise at 22.05 and 44.1 kHz, one CQT analysis and
synthesis (``diffusion/cqt.py``, MR-CQTdiff's 9 octaves, 8-8-8-16-16-16-16-32-32 bins)
and, in the same process as the baseline, a Hann STFT (window 1024, hop 256) with its
inverse. Prints medians over repeated runs, their ratio, the round-trip error and the
redundancy (real coefficients per sample) of each transform, plus the one-off cost of
building the CQT window tables.

    python benchmarks/bench_cqt.py [--batch 4] [--repeats 9] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from _timing import median_s  # benchmarks/_timing.py
from simdps.diffusion.cqt import CQT, _cqt_tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.seconds:g} s, float32, medians of {args.repeats}")
    print(f"{'rate':>6} {'build ms':>9} {'CQT ms':>8} {'STFT ms':>8} {'CQT/STFT':>9} "
          f"{'CQT err':>9} {'CQT red.':>8} {'STFT red.':>9}")
    for sample_rate in (22_050, 44_100):
        n = int(round(args.seconds * sample_rate))
        x = torch.randn(args.batch, n, generator=torch.Generator().manual_seed(0))

        _cqt_tables.cache_clear()
        start = time.perf_counter()
        cqt = CQT(n, sample_rate)
        build_s = time.perf_counter() - start

        window = torch.hann_window(1024)

        def stft_round_trip() -> torch.Tensor:
            spec = torch.stft(x, 1024, 256, window=window, return_complex=True)
            return torch.istft(spec, 1024, 256, window=window, length=n)

        def cqt_round_trip() -> torch.Tensor:
            return cqt.inverse(cqt(x))

        with torch.inference_mode():
            cqt_s = median_s(cqt_round_trip, args.repeats)
            stft_s = median_s(stft_round_trip, args.repeats)
            err = float((cqt_round_trip() - x).norm() / x.norm())
        cqt_red = 2 * sum(k * t for k, t in zip(cqt.bins, cqt.frames)) / n
        stft_red = 2 * 513 * (n // 256 + 1) / n
        print(f"{sample_rate:>6} {1e3 * build_s:>9.1f} {1e3 * cqt_s:>8.1f} {1e3 * stft_s:>8.1f} "
              f"{cqt_s / stft_s:>9.2f} {err:>9.1e} {cqt_red:>8.2f} {stft_red:>9.2f}")


if __name__ == "__main__":
    main()
