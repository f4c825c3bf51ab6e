"""Cost of one sampler evaluation with and without eq. 8 guidance, and of one training step.

With the CQT U-Net at a given preset, on a batch of windows, times in the same process:

* ``unguided``: the probability-flow slope (x - D(x; sigma)) / sigma, one forward pass
  without autograd: the baseline;
* ``dps``: the slope with the observed-context term (forward with autograd + 1 backward);
* ``simdps``: both terms (forward + 2 backward passes);
* ``train step``: EDM loss, backward, clipping, Adam and EMA on a batch of training crops.

Prints medians and ratios to the baseline, and the implied time of a 50-step inpainting
(99 evaluations, Algorithm 2). Untrained weights: speed does not depend on them.

    python benchmarks/bench_sampler.py [--model small|full] [--seconds 2] [--batch 1] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
from typing import Callable

import torch

from _timing import median_s  # benchmarks/_timing.py
from simdps.diffusion.checkpoint import build_model
from simdps.diffusion.guidance import Guidance
from simdps.diffusion.train import TrainConfig, _update_ema, edm_loss
from simdps.diffusion.unet import UNetConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["small", "full"], default="small")
    parser.add_argument("--seconds", type=float, default=2.0, help="window length")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model_cfg = UNetConfig.full() if args.model == "full" else UNetConfig.small()
    denoiser = build_model(model_cfg, 0.063).to(device)
    n = denoiser.valid_length(int(round(args.seconds * model_cfg.sample_rate)))
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(args.batch, n, generator=g) * 0.5).to(device)
    y = (torch.randn(args.batch, n, generator=g) * 0.063).to(device)
    mask = torch.ones(args.batch, n, device=device)
    mask[:, n // 3: 2 * n // 3] = 0
    sigma = torch.full((args.batch,), 0.5, device=device)
    frozen = copy.deepcopy(denoiser).requires_grad_(False).eval()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def slope(guidance: Guidance) -> Callable[[], object]:
        def run() -> None:
            guidance.slope(frozen, x, sigma)
            sync()
        return run

    cases = {
        "unguided": slope(Guidance(y, mask, w_y=0.0)),
        "dps": slope(Guidance(y, mask, w_y=0.3)),
        "simdps": slope(Guidance(y, mask, y, w_y=0.3, w_guide=0.15)),
    }
    n_params = sum(p.numel() for p in denoiser.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, {args.model} model "
          f"({n_params:,} parameters), batch {args.batch} x {n} samples ({n / model_cfg.sample_rate:.2f} s "
          f"at {model_cfg.sample_rate} Hz), medians of {args.repeats}")
    print(f"{'evaluation':>12} {'ms':>9} {'x unguided':>11} {'50-step inpaint s':>18}")
    base = None
    for name, fn in cases.items():
        t = median_s(fn, args.repeats)
        base = base or t
        print(f"{name:>12} {t * 1e3:9.1f} {t / base:11.2f} {99 * t:18.1f}")

    train_cfg = TrainConfig(model=model_cfg)
    model = denoiser.train()
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    crops = (torch.randn(train_cfg.batch_size, n, generator=g) * 0.063).to(device)
    sig = torch.full((train_cfg.batch_size,), 0.1, device=device)
    noise = torch.randn(crops.shape, generator=g).to(device)

    def step() -> None:
        loss = edm_loss(model, crops, sig, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        _update_ema(ema, model, 0.999)
        sync()

    t = median_s(step, args.repeats)
    print(f"{'train step':>12} {t * 1e3:9.1f} {t / base:11.2f}   (batch {train_cfg.batch_size} x {n})")


if __name__ == "__main__":
    main()
