"""Training the score model: EDM-weighted denoising score matching on random crops.

Per step (Karras et al. 2022, sec. 5 and Table 1): draw crops y, noise levels sigma and
n ~ N(0, sigma^2 I), and minimise

    E[ lambda(sigma) ||D(y + n; sigma) - y||^2 ],   lambda(sigma) = 1 / c_out(sigma)^2,

(mean over samples and batch), which is the unit-variance regression of the raw
network onto ``(y - c_skip (y + n)) / c_out``. Adam with a linear learning-rate warm-up,
gradient-norm clipping, an exponential moving average (EMA) of the weights (what
inference uses), bf16 autocast on CUDA.

Noise-level distribution (``sigma_distribution``):

* ``"rho"`` (default), as the paper's public code (Moliner's ``sample_ptrain_safe``):
  ``sigma = (sigma_max^(1/rho) + u (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` with
  ``u ~ U(0, 1)``, sigma in [1e-5, 10], rho = 10: the training levels follow the
  density of an EDM-style sampling schedule, so they cover the whole inference range
  (8 down to e^-5) with emphasis on low noise. Median sigma ~ 0.09.
* ``"lognormal"``: EDM's ln(sigma) ~ N(P_mean, P_std^2) (-1.2, 1.2), tuned for images
  with sigma_data = 0.5; for audio at sigma_data = 0.063 it under-trains the low levels.
* ``"loguniform"``: ln(sigma) uniform on [ln sigma_min, ln sigma_max].

Reproducibility and exact resume: the model is initialised from ``seed``; the crops,
sigmas and noise of step k come from generators seeded with ``(seed, k)``; the learning
rate and EMA decay are functions of k. With the raw weights, EMA weights and Adam state
saved, a resumed run computes exactly the losses of an uninterrupted one.

Configuration file (``simdps-train --config FILE``): JSON, or TOML with the same
structure (``simdps-train --print-config`` writes the defaults as JSON). Top-level keys
are the fields of :class:`TrainConfig`; ``model`` holds the fields of
:class:`~simdps.diffusion.unet.UNetConfig`, which also fixes the audio rate
(``model.sample_rate``) and the crop length (``model.segment_s``, rounded up to a length
the network accepts). Missing keys take the defaults; unknown keys are an error.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from simdps.config import from_dict
from simdps.diffusion.checkpoint import (
    CONFIG_FILE,
    EMA_FILE,
    LOSS_CSV,
    MODEL_FILE,
    STATE_DIR,
    LossRecord,
    build_model,
    load_train_state,
    load_weights,
    read_config,
    read_loss_csv,
    resolve_device,
    save_checkpoint,
    write_loss_log,
)
from simdps.diffusion.data import BatchPrefetcher, CropSampler, training_files
from simdps.diffusion.precond import SIGMA_DATA, EDMPrecond
from simdps.diffusion.unet import UNetConfig
from simdps.errors import SimDPSError

__all__ = ["TrainConfig", "sample_sigmas", "edm_loss", "train"]

SIGMA_DISTRIBUTIONS = ("rho", "lognormal", "loguniform")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint's config.json).

    Parameters
    ----------
    model : the score network; its ``sample_rate`` and ``segment_s`` are the data rate
        and crop length.
    sigma_data : data standard deviation of the EDM preconditioning (MAESTRO: 0.063).
    batch_size : crops per step.
    steps : total optimisation steps of the run.
    lr : Adam learning rate after warm-up (2e-4 as in MR-CQTdiff's code).
    warmup_steps : linear learning-rate warm-up from lr / warmup_steps to lr.
    adam_betas, adam_eps : Adam's settings.
    grad_clip : clip the global gradient norm to this value (0: no clipping).
    ema_decay : EMA decay per step; with ``ema_warmup`` the decay is
        ``min(ema_decay, (1 + k) / (10 + k))`` at step k so early EMAs track the weights.
    sigma_distribution, sigma_min, sigma_max, sigma_rho, P_mean, P_std : noise levels
        (see the module docstring).
    maestro_split, maestro_years : filter of a MAESTRO root (ignored for plain folders);
        the paper fine-tuned on years (2017, 2018).
    checkpoint_every : write a checkpoint every this many steps (and at the end).
    seed : model initialisation, crops, sigmas and noise.
    bf16 : bf16 autocast of the network on CUDA (CPU always runs float32).
    data_workers : threads preparing the next batches.
    """

    model: UNetConfig = field(default_factory=UNetConfig.small)
    sigma_data: float = SIGMA_DATA
    batch_size: int = 4
    steps: int = 200_000
    lr: float = 2e-4
    warmup_steps: int = 1000
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    sigma_distribution: str = "rho"
    sigma_min: float = 1e-5
    sigma_max: float = 10.0
    sigma_rho: float = 10.0
    P_mean: float = -1.2
    P_std: float = 1.2
    maestro_split: str = "train"
    maestro_years: tuple[int, ...] = ()
    checkpoint_every: int = 5000
    seed: int = 0
    bf16: bool = True
    data_workers: int = 2

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise JSON lists to tuples in place
        set_(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        set_(self, "maestro_years", tuple(int(y) for y in self.maestro_years))
        if isinstance(self.model, dict):
            set_(self, "model", from_dict(UNetConfig, self.model))
        problems = []
        if self.sigma_distribution not in SIGMA_DISTRIBUTIONS:
            problems.append(f"sigma_distribution must be one of {SIGMA_DISTRIBUTIONS}")
        if not 0 < self.sigma_min < self.sigma_max:
            problems.append("need 0 < sigma_min < sigma_max")
        if self.sigma_data <= 0 or self.lr <= 0 or self.sigma_rho <= 0 or self.P_std <= 0:
            problems.append("sigma_data, lr, sigma_rho and P_std must be positive")
        if self.batch_size < 1 or self.steps < 0 or self.warmup_steps < 0 or self.checkpoint_every < 1:
            problems.append("batch_size and checkpoint_every must be >= 1, steps and warmup_steps >= 0")
        if not 0 <= self.ema_decay < 1 or self.grad_clip < 0:
            problems.append("ema_decay must lie in [0, 1) and grad_clip be >= 0")
        if len(self.adam_betas) != 2:
            problems.append("adam_betas needs two values")
        if problems:
            raise SimDPSError("invalid training configuration: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from a (possibly partial) dict; ``model`` may itself be partial."""
        data = dict(data)
        if "model" in data:
            data["model"] = from_dict(UNetConfig, {**UNetConfig().to_dict(), **data["model"]})
        return from_dict(cls, data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a JSON (``.json``) or TOML (``.toml``) configuration file."""
        path = Path(path)
        if not path.is_file():
            raise SimDPSError(f"{path}: no such configuration file")
        try:
            if path.suffix.lower() == ".toml":
                import tomllib

                data = tomllib.loads(path.read_text())
            else:
                data = json.loads(path.read_text())
        except ImportError:
            raise SimDPSError("TOML configuration needs Python 3.11 or newer; write it as JSON") from None
        except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            raise SimDPSError(f"{path}: cannot parse ({exc})") from None
        if not isinstance(data, dict):
            raise SimDPSError(f"{path}: the configuration must be a mapping of settings")
        return cls.from_dict(data)


def sample_sigmas(n: int, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """``n`` training noise levels from ``config.sigma_distribution`` (float32, CPU)."""
    if config.sigma_distribution == "rho":
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        inv = 1.0 / config.sigma_rho
        sigma = (config.sigma_max**inv + u * (config.sigma_min**inv - config.sigma_max**inv)) ** config.sigma_rho
    elif config.sigma_distribution == "lognormal":
        sigma = (config.P_mean + config.P_std * torch.randn(n, generator=generator, dtype=torch.float64)).exp()
    else:  # loguniform
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        lo, hi = math.log(config.sigma_min), math.log(config.sigma_max)
        sigma = (lo + u * (hi - lo)).exp()
    return sigma.float()


def edm_loss(denoiser: EDMPrecond, y: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean of lambda(sigma) (D(y + sigma n; sigma) - y)^2 over samples and batch (float32)."""
    x0_hat = denoiser(y + sigma[:, None] * noise, sigma)
    weight = denoiser.loss_weight(sigma)[:, None]
    return (weight * (x0_hat - y) ** 2).mean()


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant."""
    if config.warmup_steps <= 0:
        return config.lr
    return config.lr * min(1.0, (step + 1) / config.warmup_steps)


def ema_decay(config: TrainConfig, step: int) -> float:
    """The EMA decay used after step ``step``."""
    if config.ema_warmup:
        return min(config.ema_decay, (1 + step) / (10 + step))
    return config.ema_decay


def _step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator that is a pure function of (seed, step)."""
    state = np.random.SeedSequence([int(seed), int(step), 1]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _files_digest(files: Sequence[Path]) -> str:
    """Names and sizes in order (the order drives crop selection); moving the data root keeps it."""
    listing = "\n".join(f"{f.name}:{f.stat().st_size}" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def train(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    steps: int | None = None,
    init: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    time_limit_s: float | None = None,
) -> list[LossRecord]:
    """Train (or resume training) a score model and write checkpoints to ``out_dir``.

    Parameters
    ----------
    data : a folder of audio files, a MAESTRO root (filtered by ``maestro_split`` and
        ``maestro_years``), or an explicit list of files.
    out_dir : checkpoint folder (see :mod:`simdps.diffusion.checkpoint`).
    config : the run's settings; with ``resume`` it must be None (the saved one is used).
    resume : continue the run saved in ``out_dir`` from its last checkpoint.
    steps : override ``config.steps`` (e.g. to train a resumed run longer).
    init : start from the weights of another checkpoint folder (fine-tuning, as the
        paper's second stage on 2017-2018); the optimizer starts fresh.
    device : ``"auto"``, ``"cpu"``, ``"cuda"``...
    progress : tqdm bar with the loss.
    log : receives one line describing the run before training starts, and one more
        when the run stops early.
    time_limit_s : stop after the step during which this many seconds have passed.

    A run also stops early on SIGINT (Ctrl-C) or SIGTERM (a scheduler's job limit): it
    finishes the step in progress, writes a checkpoint at that step and returns, so
    ``resume`` continues it exactly; a second signal interrupts at once. Signals are
    caught only when ``train`` runs in the main thread.

    Returns
    -------
    The loss log of the whole run (one record per step since step 0).
    """
    out_dir = Path(out_dir)
    if resume:
        if config is not None:
            raise SimDPSError("--resume continues with the run's own config.json; drop --config "
                              "(pass --steps to train longer)")
        if init is not None:
            raise SimDPSError("--init starts a new run from other weights; it cannot be combined with --resume")
        _, saved = read_config(out_dir)
        config = TrainConfig.from_dict(saved["train"])
    else:
        config = config or TrainConfig()
        if (out_dir / CONFIG_FILE).exists() or (out_dir / STATE_DIR).exists():
            raise SimDPSError(f"{out_dir}: already holds a checkpoint; pass --resume to continue it "
                              "or choose another --out folder")
    if steps is not None:
        config = dataclasses.replace(config, steps=int(steps))
    dev = resolve_device(device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config.model, config.sigma_data)
    model.to(dev).train()
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.adam_betas, eps=config.adam_eps)
    crop_samples = model.valid_length(int(round(config.model.segment_s * config.model.sample_rate)))

    files = [Path(f) for f in data] if isinstance(data, (list, tuple)) else training_files(
        data, config.maestro_split, config.maestro_years)
    digest = _files_digest(files)
    start_step, history = 0, []
    if resume:
        state = load_train_state(out_dir, model, ema, optimizer, dev)
        start_step = int(state["step"])
        history = read_loss_csv(out_dir / LOSS_CSV, before_step=start_step)
        if state.get("files_digest") != digest:
            warnings.warn(f"{out_dir}: the training files differ from those of the saved run; "
                          "the resumed run will not repeat the original crops", stacklevel=2)
    elif init is not None:
        _load_init_weights(init, model, ema)

    out_dir.mkdir(parents=True, exist_ok=True)
    sampler = CropSampler(files, config.model.sample_rate, crop_samples)
    if not resume:
        _check_level(sampler, config)
    if log is not None:
        n_params = sum(p.numel() for p in model.parameters())
        log(f"model: {n_params:,} parameters on {dev}; {len(files)} files, "
            f"{sampler.total_duration_s / 60:.1f} min; crops of {crop_samples} samples at "
            f"{config.model.sample_rate} Hz; steps {start_step} -> {config.steps}, batch {config.batch_size}")
    use_bf16 = dev.type == "cuda" and config.bf16
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_bf16)

    def checkpoint(done: int) -> None:
        save_checkpoint(out_dir, train_config=config.to_dict(), model=model, ema=ema, optimizer=optimizer,
                        step=done, state={"seed": config.seed, "files_digest": digest,
                                          "n_files": len(files), "crop_samples": crop_samples})
        write_loss_log(out_dir, history)

    bar = tqdm(total=config.steps, initial=start_step, desc="training", unit="step", disable=not progress)
    shown = None
    deadline = None if time_limit_s is None else time.monotonic() + float(time_limit_s)
    done, stop_reason = start_step, None
    with BatchPrefetcher(sampler, config.batch_size, config.seed, workers=config.data_workers) as batches, \
            _stop_requests() as stop_signal:
        for step in range(start_step, config.steps):
            y = torch.from_numpy(batches.get(step)).to(dev)
            gen = _step_generator(config.seed, step)
            sigma = sample_sigmas(config.batch_size, config, gen).to(dev)
            noise = torch.randn(y.shape, generator=gen).to(dev)
            with autocast:
                loss = edm_loss(model, y, sigma, noise)
            if not torch.isfinite(loss):
                raise SimDPSError(f"the loss became {loss.item()} at step {step}; lower lr or check the data "
                                  f"(resume from the last checkpoint in {out_dir})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip = config.grad_clip if config.grad_clip > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            _update_ema(ema, model, ema_decay(config, step))

            history.append(LossRecord(step, loss.item(), lr, grad_norm.item()))
            shown = history[-1].loss if shown is None else 0.98 * shown + 0.02 * history[-1].loss
            bar.set_postfix(loss=f"{shown:.4f}", refresh=False)
            bar.update(1)
            done = step + 1
            if stop_signal:
                stop_reason = stop_signal[0]
            elif deadline is not None and time.monotonic() >= deadline:
                stop_reason = "time limit"
            if stop_reason is not None and done < config.steps:
                break
            if done % config.checkpoint_every == 0 and done < config.steps:
                checkpoint(done)
    bar.close()
    checkpoint(max(done, start_step))
    if stop_reason is not None and done < config.steps and log is not None:
        log(f"stopped at step {done} of {config.steps} ({stop_reason}); checkpoint written, "
            "continue with --resume")
    return history


@contextmanager
def _stop_requests():
    """A list that receives the signal's name when SIGINT or SIGTERM asks the run to stop.

    The first signal only asks (the loop stops at the end of its step); a second one
    raises KeyboardInterrupt as usual. Outside the main thread nothing is caught.
    """
    requests: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return

    def handler(signum, frame):
        if requests:
            raise KeyboardInterrupt
        requests.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requests
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _check_level(sampler: CropSampler, config: TrainConfig, n_crops: int = 16) -> None:
    """Warn when the data's level is far from sigma_data: the preconditioning assumes it."""
    std = sampler.level_std(n_crops, seed=config.seed)
    if std > 0 and not 0.5 <= std / config.sigma_data <= 2.0:
        warnings.warn(f"the training crops have a standard deviation of {std:.3g}, far from sigma_data = "
                      f"{config.sigma_data:g}; set sigma_data to the data's level in the configuration",
                      stacklevel=3)


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay ema + (1 - decay) model, parameters and float buffers alike."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _load_init_weights(init: str | os.PathLike, model: torch.nn.Module, ema: torch.nn.Module) -> None:
    """Raw weights of another run (its EMA weights if it has no training state) into model and EMA."""
    folder, _ = read_config(init)
    raw = folder / STATE_DIR / MODEL_FILE
    load_weights(raw if raw.is_file() else folder / EMA_FILE, model)
    ema.load_state_dict(model.state_dict())

