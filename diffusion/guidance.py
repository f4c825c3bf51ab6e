"""Posterior-sampling guidance: the eq. 8 likelihood terms as an ODE-slope correction.

Derivation (paper eqs. 2-8, sigma(t) = t)
-----------------------------------------
The probability-flow ODE (eq. 2) with sigma(t) = t reads ``dx/dsigma = -sigma grad log p(x; sigma)``.
Posterior sampling replaces the prior score by the posterior score (eq. 4), the prior
score comes from the denoiser by Tweedie's formula (eq. 3),
``grad log p(x; sigma) = (x0_hat - x) / sigma^2`` with ``x0_hat = D(x; sigma)``, and the
SimDPS likelihood score is eq. 8::

    grad log p(y~ | x) ~ -(1/sigma_y^2) grad l_y^2 - (1/sigma_x~^2) grad l_g^2,
    l_y = ||M (y - x0_hat)||_2,   l_g = ||(I - M)(x~ - x0_hat)||_2,

(gradients with respect to the noisy x, through the network). Hence the slope

    dx/dsigma = (x - x0_hat)/sigma + (sigma/sigma_y^2) grad l_y^2 + (sigma/sigma_x~^2) grad l_g^2.

Step normalisation (sec. 3.1, refs [23, 25]): the variances are not fixed but set so
that each guidance term has a prescribed size, ``sigma_y^2 = sigma ||grad l_y^2|| / (w_y sqrt(n))``
(analogously ``sigma_x~^2`` with ``w_guide``), n the number of samples per item. Then

    (sigma/sigma_y^2) grad l_y^2 = w_y sqrt(n) grad l_y^2 / ||grad l_y^2|| = w_y g_y / zeta_y,
    g_y = grad l_y,  zeta_y = ||g_y|| / sqrt(n),

because ``grad l^2 = 2 l grad l`` points the same way as ``grad l``: after normalisation
the squared and the unsquared norm give the same term, and we differentiate the
unsquared norm as Moliner's public DPS code does. The slope used at both Heun
evaluations of the sampler is therefore

    d = (x - x0_hat)/sigma + w_y g_y/zeta_y + w_guide g_g/zeta_g.

Sign: the sampler steps ``x <- x + (sigma_next - sigma) d`` with ``sigma_next < sigma``,
so each term moves x *down* the gradient of its residual norm (towards the observation,
towards the guide), and by exactly ``w |sigma_next - sigma|`` in RMS per sample per
step: w is a step size in units of sigma, independent of the signal's level. Norms are
per batch item. A term with w = 0 is skipped, and with both weights 0 no gradient is
computed at all (plain unconditional slope).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from simdps.errors import SimDPSError

__all__ = ["GuidanceConfig", "PRESETS", "guidance_config", "Guidance", "ode_slope"]

Denoiser = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class GuidanceConfig:
    """Weights of eq. 8's two terms after step normalisation (sec. 3.1, sec. 4.2).

    w_y : observed-context term (0.3 in every experiment of the paper).
    w_guide : guide term, the paper's omega_x~ (0.15 SimDPS-l, 0.04 SimDPS-h, 0 DPS).
    """

    w_y: float = 0.3
    w_guide: float = 0.15

    def __post_init__(self) -> None:
        for name in ("w_y", "w_guide"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SimDPSError(f"{name} must be a finite number >= 0, got {value}")


# sec. 4.2: SimDPS-l (low uncertainty), SimDPS-h (high uncertainty), DPS (no guide term).
PRESETS: dict[str, GuidanceConfig] = {
    "dps": GuidanceConfig(w_y=0.3, w_guide=0.0),
    "simdps-l": GuidanceConfig(w_y=0.3, w_guide=0.15),
    "simdps-h": GuidanceConfig(w_y=0.3, w_guide=0.04),
}


def guidance_config(preset: str = "simdps-l", *, w_y: float | None = None,
                    w_guide: float | None = None) -> GuidanceConfig:
    """The preset's weights with any given weight overriding it."""
    key = preset.lower()
    if key not in PRESETS:
        raise SimDPSError(f"unknown guidance preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[key]
    return GuidanceConfig(w_y=base.w_y if w_y is None else float(w_y),
                          w_guide=base.w_guide if w_guide is None else float(w_guide))


def ode_slope(denoiser: Denoiser, x: Tensor, sigma: Tensor) -> Tensor:
    """The unguided probability-flow slope dx/dsigma = (x - D(x; sigma)) / sigma (eqs. 2-3)."""
    with torch.no_grad():
        return (x - denoiser(x, sigma)) / _per_item(sigma, x)


class Guidance:
    """Eq. 8 bound to one batch of observations: ``slope(denoiser, x, sigma)`` returns d.

    Parameters
    ----------
    y : (B, N) observed signal; values where ``mask`` is 0 are ignored.
    mask : (B, N) 1 where observed, 0 in the gap (paper eq. 1, m_i).
    guide : (B, N) auxiliary signal x~ (eq. 6), or None; only its values where
        ``guide_mask`` is 1 matter.
    w_y, w_guide : term weights after normalisation (see the module docstring).
    guide_mask : (B, N) where the guide term acts; defaults to ``1 - mask`` (I - M).
    eps : floor of zeta, so a zero gradient (residual already 0) adds nothing.
    """

    def __init__(self, y: Tensor, mask: Tensor, guide: Tensor | None = None, *,
                 w_y: float = 0.3, w_guide: float = 0.0, guide_mask: Tensor | None = None,
                 eps: float = 1e-20):
        if w_guide > 0 and guide is None:
            raise SimDPSError("w_guide > 0 needs a guide signal; pass guide or set w_guide to 0")
        self.y = y
        self.mask = mask
        self.w_y = float(w_y)
        self.w_guide = float(w_guide)
        self.guide = guide
        self.guide_mask = (1 - mask) if guide_mask is None else guide_mask
        self.eps = eps

    @property
    def active(self) -> bool:
        """Whether any term needs a gradient."""
        return self.w_y > 0 or self.w_guide > 0

    def slope(self, denoiser: Denoiser, x: Tensor, sigma: Tensor) -> Tensor:
        """d = (x - x0_hat)/sigma + w_y g_y/zeta_y + w_guide g_g/zeta_g (derivation above)."""
        if not self.active:
            return ode_slope(denoiser, x, sigma)
        terms: list[tuple[float, Callable[[Tensor], Tensor]]] = []
        if self.w_y > 0:
            terms.append((self.w_y, lambda x0: _residual_norm(self.mask * (self.y - x0))))
        if self.w_guide > 0:
            terms.append((self.w_guide, lambda x0: _residual_norm(self.guide_mask * (self.guide - x0))))
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            x0_hat = denoiser(x, sigma)
            d = (x.detach() - x0_hat.detach()) / _per_item(sigma, x)
            for k, (w, loss) in enumerate(terms):
                l = loss(x0_hat)  # (B,): items are independent, so grad of the sum is per item
                (g,) = torch.autograd.grad(l.sum(), x, retain_graph=k + 1 < len(terms))
                d = d + w * g / _zeta(g, self.eps)
        return d.detach()


def _residual_norm(r: Tensor) -> Tensor:
    """||r||_2 per batch item."""
    return torch.linalg.vector_norm(r.flatten(1), dim=1)


def _zeta(g: Tensor, eps: float) -> Tensor:
    """zeta = ||g|| / sqrt(n) per item (RMS of the gradient), broadcastable over g."""
    n = g[0].numel()
    rms = torch.linalg.vector_norm(g.flatten(1), dim=1) / math.sqrt(n)
    return rms.clamp_min(eps).reshape((-1,) + (1,) * (g.ndim - 1))


def _per_item(sigma: Tensor, x: Tensor) -> Tensor:
    """sigma as a tensor broadcastable over x's batch items."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.numel() == 1:
        return sigma.reshape(())
    return sigma.reshape((-1,) + (1,) * (x.ndim - 1))
