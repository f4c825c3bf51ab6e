"""Per-gap cost of restoring in a window (simdps-restore) versus sampling the whole track.

``simdps-restore`` runs the diffusion model on a window around each gap (the training
segment, or gap + 1 s of context on each side, rounded up to a valid CQT length). The
baseline is the naive alternative: posterior sampling over the whole track with the same
gap masked. For each track length, one SimDPS sampler evaluation (forward + 2 backward
passes, eq. 8, the unit of which a 50-step run takes 99) is timed for both, each in a fresh
process so that its peak resident memory (``ru_maxrss``) is its own. Prints medians, the
ratio baseline/window, and the peak memory of each.

Untrained weights of the small preset (speed does not depend on them); one thread by
default, as the shared 2-core CI machine is contended.

    python benchmarks/bench_restore.py [--lengths 6,12,24] [--gap 2] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time


def _measure(n_samples: int, gap_samples: int, repeats: int, threads: int, queue) -> None:
    """Child process: median seconds of one SimDPS evaluation on ``n_samples``, and peak RSS in MiB."""
    import torch

    from simdps.diffusion.checkpoint import build_model
    from simdps.diffusion.guidance import Guidance
    from simdps.diffusion.unet import UNetConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = UNetConfig.small()
    model = build_model(cfg, 0.063).eval().requires_grad_(False)
    n = model.valid_length(n_samples)
    y = 0.1 * torch.randn(1, n)
    mask = torch.ones(1, n)
    g0 = (n - gap_samples) // 2
    mask[:, g0:g0 + gap_samples] = 0
    guidance = Guidance(y * mask, mask, 0.1 * torch.randn(1, n), w_y=0.3, w_guide=0.15)
    x = torch.randn(1, n)
    sigma = torch.tensor([1.0])
    guidance.slope(model, x, sigma)  # warm-up: CQT tables, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        guidance.slope(model, x, sigma)
        times.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    queue.put((statistics.median(times), n, peak_mib))


def _run(n_samples: int, gap_samples: int, repeats: int, threads: int) -> tuple[float, int, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(n_samples, gap_samples, repeats, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="6,12,24", help="track lengths in seconds, comma-separated")
    parser.add_argument("--gap", type=float, default=2.0, help="gap length in seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from simdps.diffusion.unet import UNetConfig
    from simdps.restore.config import RestoreConfig
    from simdps.restore.window import plan_window
    from simdps.diffusion.unet import valid_length

    cfg = UNetConfig.small()
    sr = cfg.sample_rate
    segment = valid_length(int(round(cfg.segment_s * sr)), cfg)
    gap = int(round(args.gap * sr))
    restore_cfg = RestoreConfig()
    print(f"small CQT U-Net at {sr} Hz, {args.gap:g}-s gap, one SimDPS evaluation "
          f"(forward + 2 backward), {args.threads} thread(s), median of {args.repeats}")
    print(f"{'track s':>8} {'window samples':>15} {'window s':>9} {'window MiB':>11} "
          f"{'whole samples':>14} {'whole s':>8} {'whole MiB':>10} {'time x':>7}")
    for length_s in (float(v) for v in args.lengths.split(",")):
        n_track = int(round(length_s * sr))
        g0 = (n_track - gap) // 2
        window = plan_window(g0, g0 + gap, n_track, sr, model_rate=sr, segment_samples=segment,
                             context_s=restore_cfg.context_s, max_window_factor=restore_cfg.max_window_factor,
                             valid_length=lambda n: valid_length(n, cfg))
        t_win, n_win, mem_win = _run(window.model_length, gap, args.repeats, args.threads)
        t_all, n_all, mem_all = _run(n_track, gap, args.repeats, args.threads)
        print(f"{length_s:8g} {n_win:15d} {t_win:9.2f} {mem_win:11.0f} {n_all:14d} {t_all:8.2f} "
              f"{mem_all:10.0f} {t_all / t_win:7.2f}")


if __name__ == "__main__":
    main()
