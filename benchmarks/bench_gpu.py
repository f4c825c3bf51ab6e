"""GPU figures of the diffusion backend: a whole 50-step SimDPS run and training throughput.

On one device, in one process (issue targets: the full-width model's 50-step SimDPS run on
6 s at 44.1 kHz in <= 20 s on one H100, and its training throughput):

1. **sampling**: ``inpaint`` with the ``full`` preset (43 M parameters, untrained weights:
   speed does not depend on them) on a 2^18-sample window (5.94 s at 44.1 kHz, the valid
   CQT length nearest 6 s) with a 2-s gap, ``simdps-l`` (both eq. 8 terms, 99 network
   evaluations, each a forward and two backward passes), beside the unguided sampler
   (probability-flow slope, forward only, no autograd) on the same window: the baseline.
   Both in float32 and under bf16 autocast (``inpaint(bf16=True)``, ``--precisions``).
   Medians of ``--repeats``, after a 2-step warm-up run of each.
2. **training**: ``simdps-train``'s own loop (``diffusion.train.train``) on synthetic
   audio written to a temporary folder: ``--warmup-steps`` steps first (cuDNN autotuning,
   allocator), then ``--train-steps`` more resumed from that checkpoint, timed; prints
   steps/s, seconds of audio seen per second, and peak memory. bf16 autocast on CUDA as in
   real runs.

    python benchmarks/bench_gpu.py                       # on a GPU machine
    python benchmarks/bench_gpu.py --device cpu --tiny   # a small smoke run of the same code

``--json FILE`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from simdps.diffusion.checkpoint import build_model, resolve_device
from simdps.diffusion.sampler import inpaint
from simdps.diffusion.train import TrainConfig, train
from simdps.diffusion.unet import UNetConfig


def tiny_model() -> UNetConfig:
    """A few-thousand-parameter stand-in for ``--tiny`` (same code paths, seconds on a CPU)."""
    return UNetConfig(sample_rate=8000, segment_s=2**13 / 8000, n_octaves=4, bins_per_octave=(4, 4, 4, 4),
                      base_channels=4, channel_mults=(1, 1, 1, 1), time_patch=4)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def synthetic_audio(folder: Path, sample_rate: int, files: int = 4, seconds: float = 20.0) -> None:
    """Decaying harmonic notes with a little noise: enough signal for the loss to be meaningful."""
    rng = np.random.default_rng(0)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    for i in range(files):
        x = np.zeros(n)
        for start in np.arange(0.0, seconds, 0.25):
            f0 = 55.0 * 2 ** (rng.integers(0, 48) / 12)
            env = np.where(t >= start, np.exp(-3.0 * (t - start)), 0.0)
            x += env * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5) if k * f0 < sample_rate / 2)
        x = 0.25 * x / np.max(np.abs(x)) + 1e-3 * rng.standard_normal(n)  # std near sigma_data
        sf.write(folder / f"synthetic-{i}.flac", x.astype(np.float32), sample_rate)


def bench_sampling(model_cfg: UNetConfig, device: torch.device, n: int, gap_s: float, steps: int,
                   repeats: int, precisions: list[str]) -> dict:
    denoiser = build_model(model_cfg, 0.063).to(device).eval().requires_grad_(False)
    sr = model_cfg.sample_rate
    g = torch.Generator().manual_seed(0)
    y = 0.05 * torch.randn(1, n, generator=g)
    mask = torch.ones(1, n)
    gs = (n - int(gap_s * sr)) // 2
    mask[:, gs:gs + int(gap_s * sr)] = 0
    guide = 0.05 * torch.randn(1, n, generator=g)
    y, mask, guide = y.to(device), mask.to(device), guide.to(device)

    def run(preset: str, w_y: float | None, bf16: bool, n_steps: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        inpaint(denoiser, y, mask, guide, preset=preset, w_y=w_y, w_guide=0.0 if w_y == 0 else None,
                steps=n_steps, seed=0, progress=False, bf16=bf16)
        _sync(device)
        return time.perf_counter() - t0

    out = {"params": sum(p.numel() for p in denoiser.parameters()), "samples": n, "seconds_audio": n / sr,
           "gap_s": gap_s, "steps": steps}
    for precision in precisions:
        bf16 = precision == "bf16"
        for name, preset, w_y in (("unguided", "dps", 0.0), ("simdps-l", "simdps-l", None)):
            key = name if precision == "fp32" else f"{name}-{precision}"
            run(preset, w_y, bf16, min(steps, 2))  # warm-up: CQT tables, cuDNN autotuning, allocator
            _reset_peak(device)
            times = [run(preset, w_y, bf16, steps) for _ in range(repeats)]
            out[key] = {"median_s": statistics.median(times), "min_s": min(times), "peak_mb": _peak_mb(device)}
    if "unguided" in out and "simdps-l" in out:
        out["guided_over_unguided"] = out["simdps-l"]["median_s"] / out["unguided"]["median_s"]
    if "simdps-l" in out and "simdps-l-bf16" in out:
        out["fp32_over_bf16"] = out["simdps-l"]["median_s"] / out["simdps-l-bf16"]["median_s"]
    return out


def bench_training(model_cfg: UNetConfig, device: torch.device, batch: int, warmup_steps: int,
                   timed_steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data, run_dir = Path(tmp) / "data", Path(tmp) / "run"
        data.mkdir()
        synthetic_audio(data, model_cfg.sample_rate, seconds=max(20.0, 4 * model_cfg.segment_s))
        cfg = TrainConfig(model=model_cfg, batch_size=batch, steps=warmup_steps, warmup_steps=10,
                          checkpoint_every=10**9, lr=2e-4)
        train(data, run_dir, cfg, device=device, progress=False)
        _reset_peak(device)
        _sync(device)
        t0 = time.perf_counter()
        history = train(data, run_dir, resume=True, steps=warmup_steps + timed_steps, device=device, progress=False)
        _sync(device)
        wall = time.perf_counter() - t0
    crop = int(round(model_cfg.segment_s * model_cfg.sample_rate))
    return {"batch": batch, "crop_samples": crop, "timed_steps": timed_steps, "wall_s": wall,
            "steps_per_s": timed_steps / wall, "audio_s_per_s": timed_steps * batch * crop / model_cfg.sample_rate / wall,
            "final_loss": history[-1].loss if history else None, "peak_mb": _peak_mb(device)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny model and window: a smoke run of the same code")
    ap.add_argument("--steps", type=int, default=50, help="sampler steps")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2,
                    help="training crops per step (the full model at 8 crops of 2^18 ran out of an H100's 80 GB)")
    ap.add_argument("--warmup-steps", type=int, default=20)
    ap.add_argument("--train-steps", type=int, default=100)
    ap.add_argument("--precisions", default="fp32,bf16",
                    help="network precisions of the sampling runs: fp32 and/or bf16 (autocast)")
    ap.add_argument("--skip-training", action="store_true", help="time sampling only")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True
    model_cfg = tiny_model() if args.tiny else UNetConfig.full()
    n = 2**13 if args.tiny else 2**18
    gap_s = 0.25 if args.tiny else 2.0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}; model {'tiny' if args.tiny else 'full'}", flush=True)

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions or set(precisions) - {"fp32", "bf16"}:
        ap.error(f"--precisions takes fp32 and/or bf16, got {args.precisions!r}")
    sampling = bench_sampling(model_cfg, device, n, gap_s, args.steps, args.repeats, precisions)
    print(f"sampling: {sampling['params']:,} parameters, {n} samples ({sampling['seconds_audio']:.2f} s at "
          f"{model_cfg.sample_rate} Hz), {gap_s:g}-s gap, {args.steps} steps, medians of {args.repeats}")
    for key, r in sampling.items():
        if isinstance(r, dict):
            peak = f", peak {r['peak_mb']:.0f} MB" if r["peak_mb"] is not None else ""
            print(f"  {key:>14}: {r['median_s']:.2f} s (min {r['min_s']:.2f}){peak}")
    for key, label in (("guided_over_unguided", "simdps-l / unguided"), ("fp32_over_bf16", "simdps-l fp32 / bf16")):
        if key in sampling:
            print(f"  {label}: {sampling[key]:.2f}x")
    print("  target: <= 20 s for the 50-step simdps-l run on one H100", flush=True)

    report = {"device": name, "torch": torch.__version__, "sampling": sampling}
    if args.skip_training:
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return report
    training = bench_training(model_cfg, device, args.batch, args.warmup_steps, args.train_steps)
    peak = f", peak {training['peak_mb']:.0f} MB" if training["peak_mb"] is not None else ""
    print(f"training: batch {args.batch} x {training['crop_samples']} samples, {args.train_steps} steps in "
          f"{training['wall_s']:.1f} s = {training['steps_per_s']:.2f} steps/s, "
          f"{training['audio_s_per_s']:.0f} s of audio per second{peak}", flush=True)
    report["training"] = training
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
