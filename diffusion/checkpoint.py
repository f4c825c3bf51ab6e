"""Checkpoint folders: what training writes, what inference loads, never any pickled code.

Layout of a checkpoint folder ``DIR``::

    DIR/config.json          {"format": "simdps-checkpoint", "version": 1, "step": ..., "train": TrainConfig}
                             (the model's UNetConfig is train["model"], sigma_data train["sigma_data"])
    DIR/ema.safetensors      EMA weights of EDMPrecond (keys "net.*"): what inference loads
    DIR/loss.csv             step, loss, lr, grad_norm (one row per training step)
    DIR/loss.png             the loss curve
    DIR/train_state/         what an exact resume needs:
        model.safetensors    raw (non-EMA) weights
        ema.safetensors      EMA weights at the same step
        optimizer.pt         Adam's state_dict (tensors and numbers only; read with weights_only=True)
        state.json           step, seed, digest of the training file list

Weights are safetensors (no code can run on load); the optimizer state is read with
``torch.load(weights_only=True)``. Every file is written to a temporary name in its
folder and moved into place with ``os.replace``; ``train_state/`` is built as a whole
in a temporary folder and swapped in, so a crash leaves either the old or the new
state, never a mix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from simdps.atomic import atomic_path, temp_dir, write_bytes_atomic, write_json_atomic
from simdps.diffusion.precond import EDMPrecond
from simdps.errors import SimDPSError

__all__ = [
    "FORMAT",
    "VERSION",
    "CONFIG_FILE",
    "EMA_FILE",
    "MODEL_FILE",
    "STATE_DIR",
    "LOSS_CSV",
    "LOSS_PNG",
    "LossRecord",
    "resolve_device",
    "sha256_file",
    "save_weights",
    "load_weights",
    "save_checkpoint",
    "load_train_state",
    "read_config",
    "build_model",
    "load_model",
    "write_loss_log",
    "read_loss_csv",
]

FORMAT = "simdps-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
EMA_FILE = "ema.safetensors"
STATE_DIR = "train_state"
LOSS_CSV = "loss.csv"
LOSS_PNG = "loss.png"
MODEL_FILE = "model.safetensors"
_OPTIMIZER_FILE = "optimizer.pt"
_STATE_FILE = "state.json"
_OLD_STATE_DIR = ".train_state.old"


@dataclass(frozen=True)
class LossRecord:
    """One training step's log row."""

    step: int
    loss: float
    lr: float
    grad_norm: float


# ---------------------------------------------------------------- small atomic I/O

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as torch reads it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise SimDPSError(f"unknown device {device!r} ({exc}); use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SimDPSError(f"device {device!r} asked for but CUDA is not available; use --device cpu")
    return resolved


def sha256_file(path: str | os.PathLike, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def save_weights(path: str | os.PathLike, module: nn.Module, metadata: dict[str, str] | None = None) -> Path:
    """A module's state_dict as safetensors (CPU copies, so shared storage is no problem), atomically."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return Path(path)


def load_weights(path: str | os.PathLike, module: nn.Module) -> None:
    """Load safetensors weights into ``module`` (strict: every key, every shape)."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise SimDPSError(f"{path}: cannot read the weights ({exc}); the file may be damaged") from None
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {keys[:3]}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys
        )
        raise SimDPSError(f"{path}: the weights do not fit the model configuration ({detail}); "
                          "use the config.json saved with these weights")
    module.load_state_dict(tensors, strict=True)


# ---------------------------------------------------------------- checkpoint folders

def save_checkpoint(out_dir: str | os.PathLike, *, train_config: dict, model: nn.Module, ema: nn.Module,
                    optimizer: torch.optim.Optimizer, step: int, state: dict | None = None) -> Path:
    """Write ``train_state/`` (swapped in whole), then ``ema.safetensors``, then ``config.json``.

    ``step`` is the number of completed optimisation steps; ``state`` is any extra
    JSON-ready information for resuming (it is stored in ``train_state/state.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "step": str(step)}
    tmp = temp_dir(out_dir, prefix=".train_state.")
    try:
        save_weights(tmp / MODEL_FILE, model, meta)
        save_weights(tmp / EMA_FILE, ema, meta)
        buf = io.BytesIO()
        torch.save(optimizer.state_dict(), buf)
        write_bytes_atomic(tmp / _OPTIMIZER_FILE, buf.getvalue())
        write_json_atomic(tmp / _STATE_FILE, {**(state or {}), "step": int(step)}, sort_keys=True)
        current, old = out_dir / STATE_DIR, out_dir / _OLD_STATE_DIR
        if old.exists():
            shutil.rmtree(old)
        if current.exists():
            os.replace(current, old)
        os.replace(tmp, current)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    save_weights(out_dir / EMA_FILE, ema, meta)
    write_json_atomic(out_dir / CONFIG_FILE,
                      {"format": FORMAT, "version": VERSION, "step": int(step), "train": train_config},
                      sort_keys=True)
    return out_dir


def load_train_state(out_dir: str | os.PathLike, model: nn.Module, ema: nn.Module,
                     optimizer: torch.optim.Optimizer, device: torch.device) -> dict:
    """Restore raw weights, EMA weights and optimizer state from ``out_dir/train_state``; return state.json."""
    out_dir = Path(out_dir)
    state_dir = out_dir / STATE_DIR
    if not state_dir.is_dir() and (out_dir / _OLD_STATE_DIR).is_dir():
        state_dir = out_dir / _OLD_STATE_DIR  # a crash came between the two renames of save_checkpoint
    if not (state_dir / _STATE_FILE).is_file():
        raise SimDPSError(f"{out_dir}: no training state to resume from; start without --resume")
    load_weights(state_dir / MODEL_FILE, model)
    load_weights(state_dir / EMA_FILE, ema)
    try:
        opt_state = torch.load(state_dir / _OPTIMIZER_FILE, map_location=device, weights_only=True)
        optimizer.load_state_dict(opt_state)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        # weights_only=True refuses anything but tensors and plain containers: no code runs.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SimDPSError(f"{state_dir / _OPTIMIZER_FILE}: cannot restore the optimizer ({first})") from None
    return json.loads((state_dir / _STATE_FILE).read_text())


def read_config(checkpoint: str | os.PathLike) -> tuple[Path, dict]:
    """The checkpoint folder and its parsed ``config.json``.

    ``checkpoint`` may be the folder, its ``config.json`` or its ``ema.safetensors``.
    """
    path = Path(checkpoint)
    folder = path if path.is_dir() else path.parent
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise SimDPSError(
            f"{checkpoint}: not a checkpoint (no {CONFIG_FILE} beside it); pass the folder "
            "written by simdps-train, holding config.json and ema.safetensors"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SimDPSError(f"{config_path}: unreadable ({exc})") from None
    if config.get("format") != FORMAT or not isinstance(config.get("train"), dict):
        raise SimDPSError(f"{config_path}: not a SimDPS checkpoint configuration")
    if int(config.get("version", 0)) > VERSION:
        raise SimDPSError(f"{config_path}: checkpoint format version {config['version']} is newer than "
                          f"this SimDPS understands ({VERSION}); upgrade simdps")
    return folder, config


def build_model(model_config: Any, sigma_data: float) -> EDMPrecond:
    """``EDMPrecond(CQTUNet(model_config), sigma_data)``; ``model_config`` a UNetConfig or its dict."""
    from simdps.config import from_dict
    from simdps.diffusion.unet import CQTUNet, UNetConfig

    if isinstance(model_config, dict):
        model_config = from_dict(UNetConfig, model_config)
    return EDMPrecond(CQTUNet(model_config), sigma_data=sigma_data)


def load_model(checkpoint: str | os.PathLike, device: str | torch.device = "auto") -> tuple[EDMPrecond, dict]:
    """The EMA denoiser of a checkpoint, in eval mode without parameter gradients, and facts about it.

    Returns
    -------
    denoiser : :class:`EDMPrecond` on ``device`` (``"auto"``: CUDA when available).
    info : dict with ``sample_rate`` (Hz), ``segment_samples`` (training crop length,
        a valid model length), ``segment_s``, ``sigma_data``, ``step``, ``sha256`` (of
        the weights file), ``weights`` (its path), ``model`` (the UNetConfig as a dict)
        and ``n_parameters``.
    """
    folder, config = read_config(checkpoint)
    train = config["train"]
    if not isinstance(train.get("model"), dict) or "sigma_data" not in train:
        raise SimDPSError(f"{folder / CONFIG_FILE}: lacks the model configuration or sigma_data")
    weights = folder / EMA_FILE
    if not weights.is_file():
        raise SimDPSError(f"{folder}: no {EMA_FILE}; the checkpoint is incomplete")
    denoiser = build_model(train["model"], float(train["sigma_data"]))
    load_weights(weights, denoiser)
    denoiser.requires_grad_(False).eval()
    denoiser.to(resolve_device(device))
    cfg = denoiser.net.config
    segment = denoiser.valid_length(int(round(cfg.segment_s * cfg.sample_rate)))
    info = {
        "sample_rate": int(cfg.sample_rate),
        "segment_samples": int(segment),
        "segment_s": segment / cfg.sample_rate,
        "sigma_data": denoiser.sigma_data,
        "step": int(config.get("step", 0)),
        "sha256": sha256_file(weights),
        "weights": str(weights),
        "model": dict(train["model"]),
        "n_parameters": sum(p.numel() for p in denoiser.parameters()),
    }
    return denoiser, info


# ---------------------------------------------------------------- the loss log

def write_loss_log(out_dir: str | os.PathLike, history: Iterable[LossRecord], *, plot: bool = True) -> None:
    """``loss.csv`` (every step, full precision) and ``loss.png`` (raw and smoothed curve), atomically."""
    out_dir = Path(out_dir)
    history = list(history)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "loss", "lr", "grad_norm"])
    for r in history:
        writer.writerow([r.step, repr(float(r.loss)), repr(float(r.lr)), repr(float(r.grad_norm))])
    write_bytes_atomic(out_dir / LOSS_CSV, buf.getvalue().encode())
    if plot and history:
        write_bytes_atomic(out_dir / LOSS_PNG, _plot_losses(history))


def read_loss_csv(path: str | os.PathLike, *, before_step: int | None = None) -> list[LossRecord]:
    """Rows of a ``loss.csv`` (those with ``step < before_step`` if given); [] if there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [LossRecord(int(r["step"]), float(r["loss"]), float(r["lr"]), float(r["grad_norm"]))
                for r in csv.DictReader(f)]
    return [r for r in rows if before_step is None or r.step < before_step]


def _plot_losses(history: list[LossRecord]) -> bytes:
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    import numpy as np

    steps = np.array([r.step for r in history])
    losses = np.array([r.loss for r in history])
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot(steps, losses, lw=0.5, alpha=0.35, color="C0", label="loss (each step)")
    window = max(1, min(len(losses) // 20, 500))
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, lw=1.5, color="C1", label=f"mean of {window} steps")
    if np.all(losses > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("EDM-weighted denoising loss")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
