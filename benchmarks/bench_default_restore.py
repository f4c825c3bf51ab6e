"""End-to-end CPU cost of restoring a 2-s gap with the shipped default model (issue target: <= 90 s on 2 cores).

Runs ``simdps.restore.restore`` on the shipped example (``examples/chorale.flac``, gap
5-7 s, method ``simdps-l``, 50 steps) and, in the same process and thread setting, the
floor it cannot beat: the sampler's network work alone, i.e. 99 SimDPS evaluations
(one forward and two backward passes through the denoiser, one per eq. 8 term; a 50-step
Heun run with a 0 final sigma takes 99) on the same window length. Prints medians and the ratio end-to-end / floor.

    python benchmarks/bench_default_restore.py [--repeats 3] [--threads 2] [--steps 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "chorale.flac"


def network_floor(denoiser, n_samples: int, evaluations: int) -> float:
    """Seconds for ``evaluations`` SimDPS-like evaluations (forward + 2 backward) on ``n_samples``."""
    x = 0.1 * torch.randn(1, n_samples)
    t0 = time.perf_counter()
    for _ in range(evaluations):
        xi = x.clone().requires_grad_(True)
        x0_hat = denoiser(xi, torch.tensor([0.5]))
        # eq. 8 has two terms, each with its own gradient (normalised separately): two backward passes.
        torch.autograd.grad(x0_hat[..., ::2].square().sum(), xi, retain_graph=True)
        torch.autograd.grad(x0_hat[..., 1::2].square().sum(), xi)
    return time.perf_counter() - t0


def main() -> None:
    from simdps.diffusion.checkpoint import load_model
    from simdps.restore import restore

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(ROOT / "simdps" / "assets" / "default_model", "cpu")
    evaluations = 2 * args.steps - 1

    ends, floors = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            t0 = time.perf_counter()
            rep = restore(EXAMPLE, ["5:7"], output=Path(tmp) / f"out{i}.flac", method="simdps-l",
                          model=model, device="cpu", steps=args.steps, seed=i, progress=False)
            ends.append(time.perf_counter() - t0)
            window = int(round(rep.gaps[0].window_length_s * model[1]["sample_rate"]))
            floors.append(network_floor(model[0], window, evaluations))
            print(f"run {i}: end-to-end {ends[-1]:.1f} s, network floor {floors[-1]:.1f} s "
                  f"({evaluations} evaluations on {window} samples)", flush=True)
    e, f = statistics.median(ends), statistics.median(floors)
    print(f"\n2-s gap, {args.steps} steps, {args.threads} threads: end-to-end median {e:.1f} s "
          f"(target <= 90 s), network floor median {f:.1f} s, ratio {e / f:.2f}")


if __name__ == "__main__":
    main()
