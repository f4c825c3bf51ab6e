"""Where the time of one network evaluation goes: torch.profiler over the score model.

The H100 run of session 4 (docs/PERFORMANCE.md, section GPU) found the full-width model's
50-step ``simdps-l`` run at 35.5 s, against a 20-s target, and bf16 autocast no faster
than float32: the convolutions' arithmetic is not what limits it. This script profiles
one unguided evaluation (forward, no autograd) and one guided evaluation (forward and the
two eq. 8 gradients), both after warm-up, and prints the operators that take the most
device time, so the next GPU session can see what to change before it spends its time.

    python benchmarks/profile_gpu.py --out DIR              # on a GPU machine
    python benchmarks/profile_gpu.py --device cpu --tiny    # the same code, small, anywhere

It writes ``DIR/ops-unguided.txt``, ``DIR/ops-guided.txt`` (the operator tables) and
``DIR/trace-guided.json`` (a Chrome trace, viewable in chrome://tracing or Perfetto).

``--variants fp32,bf16,channels_last,compile`` first times one unguided and one guided
evaluation (medians of ``--repeats``) for each way of running the same weights, so one
device call can also say which change is worth making: ``channels_last`` stores the
feature maps channel-last (cuDNN's tensor-core kernels prefer it for few channels),
``compile`` is ``torch.compile`` of the network (fuses the GroupNorm/FiLM/SiLU passes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from simdps.diffusion.checkpoint import build_model, resolve_device
from simdps.diffusion.guidance import Guidance, ode_slope
from simdps.diffusion.sampler import bf16_autocast
from simdps.diffusion.unet import UNetConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_s  # noqa: E402  benchmarks/_timing.py


def tiny_model() -> UNetConfig:
    return UNetConfig(sample_rate=8000, segment_s=2**13 / 8000, n_octaves=4, bins_per_octave=(4, 4, 4, 4),
                      base_channels=4, channel_mults=(1, 1, 1, 1), time_patch=4)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny model and window (a smoke run of the same code)")
    ap.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast")
    ap.add_argument("--rows", type=int, default=30, help="operators listed per table")
    ap.add_argument("--out", type=Path, default=Path("profile-gpu"), help="folder for the tables and trace")
    ap.add_argument("--variants", default="", help="comma-separated: fp32, bf16, channels_last, compile")
    ap.add_argument("--repeats", type=int, default=5, help="timed evaluations per variant")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True
    cfg = tiny_model() if args.tiny else UNetConfig.full()
    n = 2**13 if args.tiny else 2**18
    model = build_model(cfg, 0.063).to(device).eval().requires_grad_(False)

    g = torch.Generator().manual_seed(0)
    x = (0.5 * torch.randn(1, n, generator=g)).to(device)
    y = (0.05 * torch.randn(1, n, generator=g)).to(device)
    guide = (0.05 * torch.randn(1, n, generator=g)).to(device)
    mask = torch.ones(1, n, device=device)
    mask[:, n // 3: 2 * n // 3] = 0
    guidance = Guidance(y * mask, mask, guide, w_y=0.3, w_guide=0.15)
    sigma = torch.full((1,), 0.5, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def evaluations(net, bf16: bool) -> dict:
        """One unguided and one guided evaluation of ``net`` (each ends synchronised)."""
        denoiser = bf16_autocast(net, device) if bf16 else net
        return {"unguided": lambda: (ode_slope(denoiser, x, sigma), sync()),
                "guided": lambda: (guidance.slope(denoiser, x, sigma), sync())}

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - {"fp32", "bf16", "channels_last", "compile"}
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from fp32, bf16, channels_last, compile")
    if variants:
        lines = [f"one evaluation, median of {args.repeats} after warm-up ({device}, {n} samples)"]
        for variant in variants:
            net = build_model(cfg, 0.063).to(device).eval().requires_grad_(False)
            net.load_state_dict(model.state_dict())
            if variant == "channels_last":
                net = net.to(memory_format=torch.channels_last)
            if variant == "compile":
                net = torch.compile(net)
            for name, fn in evaluations(net, variant == "bf16").items():
                fn()  # a first warm-up (compilation, cuDNN autotuning); median_s makes a second
                lines.append(f"  {variant:>13} {name:>8}: {1e3 * median_s(fn, args.repeats):.1f} ms")
                print(lines[-1], flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "variants.txt").write_text("\n".join(lines) + "\n")

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort_key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    args.out.mkdir(parents=True, exist_ok=True)
    for name, run in evaluations(model, args.bf16).items():
        for _ in range(2):  # warm-up: cuDNN autotuning, CQT tables, allocator (each run ends synchronised)
            run()
        t0 = time.perf_counter()
        with profile(activities=activities, record_shapes=True) as prof:
            run()
        wall = time.perf_counter() - t0
        table = prof.key_averages(group_by_input_shape=False).table(sort_by=sort_key, row_limit=args.rows)
        header = f"{name}: one evaluation, {wall * 1e3:.1f} ms wall under the profiler ({device}, bf16={args.bf16})"
        print(header + "\n" + table, flush=True)
        (args.out / f"ops-{name}.txt").write_text(header + "\n" + table)
        if name == "guided":
            prof.export_chrome_trace(str(args.out / "trace-guided.json"))


if __name__ == "__main__":
    main()
