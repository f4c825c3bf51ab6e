"""CPU cost of the CQT U-Net score model: forward pass, guided step and peak memory.

A guided step is what diffusion posterior sampling does at every sampler evaluation:
``x0_hat = F(x, c_noise)``, a scalar loss ``||m * (y - x0_hat)||_2`` and its gradient with
respect to the input ``x`` (through the network), with the weights frozen.

Every configuration runs in a fresh subprocess, so its peak resident memory
(``resource.getrusage(...).ru_maxrss``; tracemalloc does not see torch allocations) is its
own. Inside that process the baseline, the CQT analysis + synthesis of the same length
(the floor every pass pays), is timed interleaved with the model, and the ratios are
printed next to the medians.

    python benchmarks/bench_model.py                      # small preset, 5.94 s at 22.05 kHz
    python benchmarks/bench_model.py --configs small,small-unpatched,full --repeats 5

Configurations: ``small`` (CPU preset), ``small-unpatched`` (the same network with
``time_patch=1``, MR-CQTdiff's layout, to show what time patching buys) and ``full``
(MR-CQTdiff size at 44.1 kHz; by default one pass on a 2^16-sample window, 1.49 s, as a full
6-s guided step needs ~minutes and more memory than a shared 2-core machine should give).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _config(name: str):
    from simdps.diffusion.unet import UNetConfig

    if name == "small":
        return UNetConfig.small()
    if name == "small-unpatched":
        return dataclasses.replace(UNetConfig.small(), time_patch=1)
    if name == "full":
        return UNetConfig.full()
    raise SystemExit(f"unknown configuration {name!r}; use small, small-unpatched or full")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(name: str, n_samples: int, repeats: int, threads: int) -> dict:
    """Time one configuration in this (fresh) process; return the figures as a dict."""
    import torch

    from simdps.diffusion.cqt import get_cqt
    from simdps.diffusion.unet import CQTUNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = _config(name)
    model = CQTUNet(cfg).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    n = model.valid_length(n_samples)
    cqt = get_cqt(n, cfg.sample_rate, cfg.n_octaves, cfg.bins_per_octave)
    gen = torch.Generator().manual_seed(1)
    x = 0.5 * torch.randn(1, n, generator=gen)
    y = 0.063 * torch.randn(1, n, generator=gen)
    mask = torch.ones(1, n)
    mask[:, n // 3: 2 * n // 3] = 0  # a central gap, as in the paper's protocol
    c_noise = torch.tensor([0.25])
    rss_model = _peak_rss_mb()

    def baseline() -> None:
        with torch.no_grad():
            cqt.inverse(cqt(x))

    def forward() -> None:
        with torch.no_grad():
            model(x, c_noise)

    def guided_step() -> None:
        x_t = x.clone().requires_grad_(True)
        x0_hat = model(x_t, c_noise)
        loss = torch.linalg.vector_norm(mask * (y - x0_hat))  # eq. 5, not squared (Moliner's DPS)
        (grad,) = torch.autograd.grad(loss, x_t)
        assert torch.isfinite(grad).all()

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    # Forward phase first (its peak RSS is read before any backward), then guided steps.
    times: dict[str, list[float]] = {"baseline": [], "forward": [], "guided": []}
    if repeats > 1:
        baseline(), forward()  # warm-up: oneDNN primitive creation, allocator
    for _ in range(repeats):
        times["baseline"].append(timed(baseline))
        times["forward"].append(timed(forward))
    rss_forward = _peak_rss_mb()
    if repeats > 1:
        guided_step()
    for _ in range(repeats):
        times["baseline"].append(timed(baseline))
        times["guided"].append(timed(guided_step))
    rss_guided = _peak_rss_mb()
    return {
        "config": name,
        "n_params": n_params,
        "sample_rate": cfg.sample_rate,
        "n_samples": n,
        "seconds": n / cfg.sample_rate,
        "threads": threads,
        "repeats": repeats,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "min_s": {k: min(v) for k, v in times.items()},
        "peak_rss_mb": {"model_built": rss_model, "forward": rss_forward, "guided": rss_guided},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="small,small-unpatched")
    parser.add_argument("--seconds", type=float, default=5.94,
                        help="window length; rounded up to the model's next valid length (default 5.94 s)")
    parser.add_argument("--full-samples", type=int, default=2**16,
                        help="window of the full model in samples (default 65536 = 1.49 s at 44.1 kHz)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per configuration (full: 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n-samples", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, args.n_samples, args.repeats, args.threads)))
        return

    rows = []
    load_before = os.getloadavg()[0]
    for name in args.configs.split(","):
        cfg = _config(name)
        n = args.full_samples if name == "full" else int(round(args.seconds * cfg.sample_rate))
        repeats = 1 if name == "full" else args.repeats
        cmd = [sys.executable, __file__, "--worker", name, "--n-samples", str(n),
               "--repeats", str(repeats), "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))

    print(f"CQT U-Net on CPU, {args.threads} threads, batch 1; medians (min) over the repeats; "
          "baseline = CQT analysis + synthesis of the same window, timed in the same process")
    print(f"1-min load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(other processes on the machine inflate the wall times, most of all with several threads)")
    head = (f"{'config':16} {'params':>7} {'window':>16} {'baseline':>15} {'forward':>15} "
            f"{'guided step':>15} {'fwd/base':>8} {'guided/fwd':>10} {'RSS model/fwd/guided MB':>24}")
    print(head)
    for r in rows:
        med, mn, rss = r["median_s"], r["min_s"], r["peak_rss_mb"]
        window = f"{r['n_samples']} ({r['seconds']:.2f}s@{r['sample_rate'] // 1000}k)"
        print(f"{r['config']:16} {r['n_params'] / 1e6:6.2f}M {window:>16} "
              f"{med['baseline']:7.3f} ({mn['baseline']:.3f}) {med['forward']:7.3f} ({mn['forward']:.3f}) "
              f"{med['guided']:7.3f} ({mn['guided']:.3f}) {med['forward'] / med['baseline']:8.1f} "
              f"{med['guided'] / med['forward']:10.2f} "
              f"{rss['model_built']:7.0f}/{rss['forward']:.0f}/{rss['guided']:.0f}")
    for r in rows:
        if r["config"] == "small":
            # A 2-s gap: 50 sampler steps x 2 Heun evaluations, each a guided step.
            print(f"small: 100 guided steps (50 Heun steps, 2-s gap in a {r['seconds']:.2f}-s window) "
                  f"= {100 * r['median_s']['guided']:.0f} s")
    names = [r["config"] for r in rows]
    if "small" in names and "small-unpatched" in names:
        a, b = rows[names.index("small")], rows[names.index("small-unpatched")]
        print(f"time patching (small vs small-unpatched): forward x{b['median_s']['forward'] / a['median_s']['forward']:.1f}"
              f", guided step x{b['median_s']['guided'] / a['median_s']['guided']:.1f} faster")


if __name__ == "__main__":
    main()
