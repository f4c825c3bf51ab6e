"""The stochastic second-order sampler of Karras et al. (2022, Algorithm 2) and ``inpaint``.

Schedule (paper sec. 4.2): sigma(t) = t, ``steps`` noise levels spaced geometrically
from ``sigma_max`` = 8 down to ``sigma_min`` = e^-5, then a final 0:
``sigma_i = exp(linspace(ln sigma_max, ln sigma_min, steps))``, ``sigma_steps = 0``.
That is ``steps`` sampler steps; every step but the last (to sigma = 0) takes a Heun
correction, so 2 steps - 1 denoiser evaluations.

Churn convention: N in Algorithm 2 is the number of steps (``steps``, 50), so
``gamma_i = min(S_churn / steps, sqrt(2) - 1)`` for ``S_tmin <= sigma_i <= S_tmax`` and 0
otherwise; with the paper's S_churn = 10, gamma = 0.2 at every step (the first step
starts at sigma_hat = 9.6). S_tmin = 0, S_tmax = inf and S_noise = 1 as in EDM's
defaults.

The noise is drawn from a CPU ``torch.Generator`` seeded with ``seed`` and moved to the
working device, so a seed gives the same noise on CPU and CUDA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from simdps.diffusion.guidance import Guidance, guidance_config, ode_slope
from simdps.errors import SimDPSError

__all__ = ["SamplerConfig", "geometric_sigmas", "churn_gamma", "edm_sampler", "inpaint", "bf16_autocast"]

Denoiser = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class SamplerConfig:
    """Algorithm 2 settings with the paper's values (sec. 4.2) and EDM's S_* defaults."""

    steps: int = 50
    sigma_max: float = 8.0
    sigma_min: float = math.exp(-5)
    S_churn: float = 10.0
    S_tmin: float = 0.0
    S_tmax: float = math.inf
    S_noise: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise SimDPSError(f"steps must be at least 1, got {self.steps}")
        if not 0 < self.sigma_min <= self.sigma_max:
            raise SimDPSError(f"need 0 < sigma_min <= sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.S_churn < 0 or self.S_noise < 0:
            raise SimDPSError("S_churn and S_noise must be >= 0")


def geometric_sigmas(steps: int = 50, sigma_max: float = 8.0, sigma_min: float = math.exp(-5)) -> Tensor:
    """``steps`` geometrically spaced noise levels from sigma_max to sigma_min, then 0 (float64, ``steps + 1``)."""
    if steps == 1:
        levels = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        levels = torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp()
    return torch.cat([levels, levels.new_zeros(1)])


def churn_gamma(sigma: float, steps: int, S_churn: float, S_tmin: float = 0.0,
                S_tmax: float = math.inf) -> float:
    """gamma_i = min(S_churn / N, sqrt(2) - 1) inside [S_tmin, S_tmax], else 0 (Algorithm 2, N = steps)."""
    if S_tmin <= sigma <= S_tmax:
        return min(S_churn / steps, math.sqrt(2) - 1)
    return 0.0


def edm_sampler(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    *,
    guidance: Guidance | None = None,
    config: SamplerConfig = SamplerConfig(),
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Tensor:
    """Karras et al. (2022) Algorithm 2, optionally with the eq. 8 slope of ``guidance``.

    Parameters
    ----------
    denoiser : ``D(x, sigma) -> x0_hat`` for ``x`` (B, N) and ``sigma`` (B,).
    shape : (B, N) of the samples.
    guidance : posterior guidance; ``None`` samples the prior.
    config : schedule and churn (:class:`SamplerConfig`).
    seed : seeds the CPU generator of the initial and churn noise.
    device : where ``denoiser`` runs (``"auto"``: CUDA when available).
    progress : show a tqdm bar over the steps.

    Returns
    -------
    x : (B, N) float32 samples at sigma = 0, on ``device``.
    """
    if device == "auto":
        from simdps.diffusion.checkpoint import resolve_device

        device = resolve_device("auto")
    device = torch.device(device)
    sigmas = geometric_sigmas(config.steps, config.sigma_max, config.sigma_min).tolist()
    generator = torch.Generator().manual_seed(int(seed))
    batch = shape[0]

    def randn() -> Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)

    def slope(x: Tensor, sigma: float) -> Tensor:
        sigma_b = torch.full((batch,), sigma, dtype=torch.float32, device=device)
        if guidance is None:
            return ode_slope(denoiser, x, sigma_b)
        return guidance.slope(denoiser, x, sigma_b)

    x = randn() * sigmas[0]
    for i in tqdm(range(config.steps), desc="sampling", unit="step", disable=not progress, leave=False):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        # Increase noise temporarily: sigma_hat = (1 + gamma) sigma.
        gamma = churn_gamma(sigma, config.steps, config.S_churn, config.S_tmin, config.S_tmax)
        sigma_hat = sigma * (1 + gamma)
        x_hat = x
        if gamma > 0:
            x_hat = x + math.sqrt(sigma_hat**2 - sigma**2) * config.S_noise * randn()
        # Euler step from sigma_hat to sigma_next.
        d = slope(x_hat, sigma_hat)
        x = x_hat + (sigma_next - sigma_hat) * d
        # Apply the 2nd-order (Heun) correction unless the step ends at sigma = 0.
        if sigma_next > 0:
            d_prime = slope(x, sigma_next)
            x = x_hat + (sigma_next - sigma_hat) * (0.5 * d + 0.5 * d_prime)
    return x


def inpaint(
    denoiser: Denoiser,
    y: Tensor,
    mask: Tensor,
    guide: Tensor | None = None,
    *,
    preset: str = "simdps-l",
    w_y: float | None = None,
    w_guide: float | None = None,
    steps: int = 50,
    sigma_max: float = 8.0,
    sigma_min: float = math.exp(-5),
    S_churn: float = 10.0,
    S_tmin: float = 0.0,
    S_tmax: float = math.inf,
    S_noise: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    bf16: bool = False,
) -> Tensor:
    """Fill the gaps of ``y`` by (Similarity-Guided) diffusion posterior sampling.

    Parameters
    ----------
    denoiser : an :class:`~simdps.diffusion.precond.EDMPrecond` (or any ``D(x, sigma)``).
        It runs on the device of its parameters; inputs are moved there and the result back.
    y : (B, N) or (N,) observed audio; values inside the gaps are ignored.
    mask : same shape, 1 where observed, 0 where missing (paper eq. 1).
    guide : same shape, the retrieved segment x~ placed at the gap (eq. 7), or None.
        Only its values where ``mask`` is 0 are used.
    preset : ``"dps"`` (w_y 0.3, w_guide 0), ``"simdps-l"`` (0.3, 0.15) or ``"simdps-h"`` (0.3, 0.04).
    w_y, w_guide : override the preset's weights.
    steps, sigma_max, sigma_min, S_churn, S_tmin, S_tmax, S_noise : Algorithm 2 (:class:`SamplerConfig`).
    seed : noise seed; the same seed gives the same result.
    progress : show a progress bar over the steps.
    bf16 : run the network under bf16 autocast (its convolutions in bfloat16, as CUDA
        training does; the CQT, the guidance norms and the sampler stay float32). Faster
        on GPUs; on most CPUs slower. Results differ from float32 by rounding.

    Returns
    -------
    x : same shape as ``y``, float32: the whole sampled signal (the caller pastes the
        original back outside the gaps).

    If the denoiser has ``valid_length`` (the CQT U-Net accepts only some lengths), the
    signal is zero-padded at the end to a valid length; padded samples count neither as
    observed nor as guided, and are cut off the result.
    """
    weights = guidance_config(preset, w_y=w_y, w_guide=w_guide)
    config = SamplerConfig(steps=steps, sigma_max=sigma_max, sigma_min=sigma_min, S_churn=S_churn,
                           S_tmin=S_tmin, S_tmax=S_tmax, S_noise=S_noise)
    squeeze = y.ndim == 1
    y, mask = (y[None], mask[None]) if squeeze else (y, mask)
    guide = guide[None] if (squeeze and guide is not None) else guide
    y, guide = _check_inputs(y, mask, guide, weights.w_guide)

    device = _device_of(denoiser, y)
    n = y.shape[-1]
    n_valid = denoiser.valid_length(n) if callable(getattr(denoiser, "valid_length", None)) else n
    pad = n_valid - n

    def prepare(t: Tensor) -> Tensor:
        return torch.nn.functional.pad(t.to(device=device, dtype=torch.float32), (0, pad))

    y_p, mask_p = prepare(y), prepare(mask)
    guide_p = prepare(guide) if guide is not None else None
    inside = prepare(torch.ones_like(mask))  # 0 on the padding
    guidance = Guidance(y_p * mask_p, mask_p, guide_p, w_y=weights.w_y, w_guide=weights.w_guide,
                        guide_mask=(1 - mask_p) * inside)
    network = bf16_autocast(denoiser, device) if bf16 else denoiser
    x = edm_sampler(network, tuple(y_p.shape), guidance=guidance, config=config, seed=seed,
                    device=device, progress=progress)
    x = x[..., :n].to(y.device)
    return x[0] if squeeze else x


def bf16_autocast(denoiser: Denoiser, device: torch.device) -> Denoiser:
    """``denoiser`` run under bf16 autocast on ``device``, its output back in float32."""

    def run(x: Tensor, sigma: Tensor) -> Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            return denoiser(x, sigma).float()

    return run


def _check_inputs(y: Tensor, mask: Tensor, guide: Tensor | None,
                  w_guide: float) -> tuple[Tensor, Tensor | None]:
    """Validate shapes and values; return y zeroed in the gaps and the guide zeroed outside them."""
    if y.ndim != 2:
        raise SimDPSError(f"y must be (B, N) or (N,), got shape {tuple(y.shape)}")
    if mask.shape != y.shape:
        raise SimDPSError(f"mask shape {tuple(mask.shape)} differs from y's {tuple(y.shape)}")
    if not torch.all((mask == 0) | (mask == 1)):
        raise SimDPSError("mask must hold only 0 (missing) and 1 (observed)")
    if guide is not None and guide.shape != y.shape:
        raise SimDPSError(f"guide shape {tuple(guide.shape)} differs from y's {tuple(y.shape)}")
    if w_guide > 0 and guide is None:
        raise SimDPSError("this preset uses a guide (w_guide > 0) but none was given; "
                          "pass guide=... or use preset='dps'")
    observed = mask.bool()
    y = torch.where(observed, y, torch.zeros_like(y))
    if guide is not None:
        guide = torch.where(observed, torch.zeros_like(guide), guide)
    for name, t in (("y", y), ("guide", guide)):
        if t is not None and not torch.isfinite(t).all():
            raise SimDPSError(f"{name} holds NaN or Inf samples where it is used")
    return y, guide


def _device_of(denoiser: Denoiser, y: Tensor) -> torch.device:
    if isinstance(denoiser, nn.Module):
        for p in denoiser.parameters():
            return p.device
        for b in denoiser.buffers():
            return b.device
    return y.device
