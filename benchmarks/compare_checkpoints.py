"""EDM loss of several checkpoints on the same fixed crops, noise levels and noise.

Training's loss curve is noisy (each step draws new crops and sigmas); this compares
checkpoint folders on one fixed draw, per noise level and in total, so that a longer run can
be told apart from a lucky batch:

    python benchmarks/compare_checkpoints.py DATA CKPT [CKPT ...] [--crops 32] [--seed 0]

DATA is an audio file or a folder of them (crops are taken at the checkpoint's rate).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from simdps.audio import read_audio_mono
from simdps.diffusion.checkpoint import load_model
from simdps.diffusion.train import edm_loss

SIGMAS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def fixed_crops(data: Path, sample_rate: int, length: int, n: int, seed: int) -> torch.Tensor:
    """``n`` crops of ``length`` samples, spread over the files, the same for every checkpoint."""
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in {".flac", ".wav", ".ogg"}) \
        if data.is_dir() else [data]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        x, _ = read_audio_mono(files[i % len(files)], sample_rate)
        start = int(rng.integers(0, max(1, len(x) - length)))
        crop = np.zeros(length, np.float32)
        piece = x[start:start + length]
        crop[:len(piece)] = piece
        crops.append(crop)
    return torch.from_numpy(np.stack(crops))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("checkpoints", type=Path, nargs="+")
    ap.add_argument("--crops", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    crops = None
    for ckpt in args.checkpoints:
        denoiser, info = load_model(ckpt, "cpu")
        sr, length = info["sample_rate"], info["segment_samples"]
        if crops is None:
            crops = fixed_crops(args.data, sr, length, args.crops, args.seed)
            noise = torch.randn(crops.shape, generator=torch.Generator().manual_seed(args.seed))
        losses = []
        with torch.no_grad():
            for s in SIGMAS:
                losses.append(float(edm_loss(denoiser, crops, torch.full((len(crops),), s), noise)))
        rows.append((f"{ckpt} (step {info.get('step', '?')})", losses))
    print(f"EDM-weighted loss on {args.crops} fixed crops of {args.data}, per sigma and mean:")
    print(f"{'checkpoint':<60}" + "".join(f"{s:>8g}" for s in SIGMAS) + f"{'mean':>8}")
    for name, losses in rows:
        print(f"{name:<60}" + "".join(f"{v:8.3f}" for v in losses) + f"{np.mean(losses):8.3f}")


if __name__ == "__main__":
    main()
