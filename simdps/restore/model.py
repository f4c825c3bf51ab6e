"""The diffusion model a restore run uses: ``--checkpoint DIR``, or the one shipped in the package."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from simdps.errors import SimDPSError

__all__ = ["DEFAULT_CHECKPOINT", "default_checkpoint", "load_restore_model"]

# Shipped with the package (pyproject's package-data): config.json + ema.safetensors.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "default_model"


def default_checkpoint() -> Path:
    """The packaged default model's folder; a clear error when it is not installed."""
    if not ((DEFAULT_CHECKPOINT / "config.json").is_file() and (DEFAULT_CHECKPOINT / "ema.safetensors").is_file()):
        raise SimDPSError(
            "no default model is installed; pass --checkpoint DIR (a folder written by simdps-train, "
            "holding config.json and ema.safetensors)"
        )
    return DEFAULT_CHECKPOINT


def load_restore_model(checkpoint: str | os.PathLike | None, device: str = "auto") -> tuple[Any, dict]:
    """``(denoiser, info)`` from ``checkpoint`` (default: the packaged model), on ``device``.

    ``info`` is :func:`simdps.diffusion.checkpoint.load_model`'s (``sample_rate``,
    ``segment_samples``, ``sha256`` ...) plus ``path``.
    """
    from simdps.diffusion.checkpoint import load_model

    if checkpoint is None:
        path = default_checkpoint()
    else:
        path = Path(checkpoint)
        if not path.exists():
            raise SimDPSError(f"{path}: no such checkpoint; pass --checkpoint DIR, the folder written by simdps-train")
    denoiser, info = load_model(path, device)
    return denoiser, {**info, "path": str(path)}
