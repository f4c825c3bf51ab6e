"""EDM preconditioning: the denoiser D(x; sigma) built around a raw network F (Karras et al. 2022).

Table 1 of Karras et al. (2022), "Elucidating the design space of diffusion-based
generative models", with sigma(t) = t as in the paper (sec. 2.1)::

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))

    c_skip  = sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out   = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in    = 1 / sqrt(sigma^2 + sigma_data^2)
    c_noise = ln(sigma) / 4

    loss weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2

so the training loss ``lambda(sigma) ||D(y + n; sigma) - y||^2`` equals
``||F(...) - (y - c_skip (y + n)) / c_out||^2``: the network regresses a unit-variance
target at every noise level. ``sigma_data`` = 0.063 is the standard deviation of
MAESTRO piano audio (MR-CQTdiff's value).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EDMPrecond", "edm_coefficients", "edm_loss_weight", "SIGMA_DATA"]

SIGMA_DATA = 0.063  # std of MAESTRO audio at full scale


def edm_coefficients(sigma: Tensor, sigma_data: float = SIGMA_DATA) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in, c_noise)`` of Karras et al. (2022) Table 1 for each sigma."""
    sigma = torch.as_tensor(sigma)
    var = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / var
    c_out = sigma * sigma_data / var.sqrt()
    c_in = var.rsqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def edm_loss_weight(sigma: Tensor, sigma_data: float = SIGMA_DATA) -> Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022 Table 1)."""
    sigma = torch.as_tensor(sigma)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


class EDMPrecond(nn.Module):
    """The denoiser D(x; sigma) ~ E[x0 | x] around a network ``net(x, c_noise) -> x``.

    Parameters
    ----------
    net : module mapping ``(B, N)`` waveforms and ``(B,)`` noise conditioning to ``(B, N)``.
    sigma_data : standard deviation of the training data (0.063 for MAESTRO).

    ``forward(x, sigma)`` takes ``x`` of shape ``(B, N)`` and ``sigma`` as a float, a 0-d
    tensor or a ``(B,)`` tensor, and returns ``x0_hat`` (float32, same shape as ``x``).
    The network may run in a lower precision (autocast); the skip connection and the
    output scaling stay in float32 so that D(x; sigma) -> x exactly as sigma -> 0.
    """

    def __init__(self, net: nn.Module, sigma_data: float = SIGMA_DATA):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data}")
        self.net = net
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in, c_noise)`` for ``sigma``."""
        return edm_coefficients(sigma, self.sigma_data)

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """lambda(sigma), the EDM loss weight (equal to 1 / c_out^2)."""
        return edm_loss_weight(sigma, self.sigma_data)

    def valid_length(self, n_samples: int) -> int:
        """Smallest length >= ``n_samples`` the wrapped network accepts (``n_samples`` if it has no constraint)."""
        fn = getattr(self.net, "valid_length", None)
        return int(fn(n_samples)) if callable(fn) else int(n_samples)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        sigma = sigma.reshape(-1).expand(x.shape[0]) if sigma.numel() == 1 else sigma.reshape(-1)
        if sigma.shape[0] != x.shape[0]:
            raise ValueError(f"sigma has {sigma.shape[0]} entries for a batch of {x.shape[0]}")
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        per_item = (-1,) + (1,) * (x.ndim - 1)  # broadcast (B,) over (B, N)
        F_x = self.net(c_in.reshape(per_item) * x, c_noise)
        return c_skip.reshape(per_item) * x + c_out.reshape(per_item) * F_x.to(torch.float32)

    def extra_repr(self) -> str:
        return f"sigma_data={self.sigma_data:g}"

