"""EDM preconditioning (Karras et al. 2022, Table 1): the identities the parameterisation rests on."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simdps.diffusion.precond import SIGMA_DATA, EDMPrecond, edm_coefficients, edm_loss_weight

SIGMAS = torch.tensor([1e-5, 1e-3, 0.0067, 0.063, 0.5, 1.0, 8.0, 10.0], dtype=torch.float64)


class _Recorder(nn.Module):
    """F(x, c_noise) = a * x + b * c_noise, remembering what it was given."""

    def __init__(self, a: float = 0.7, b: float = 0.1):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(a)), nn.Parameter(torch.tensor(b))
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, c_noise):
        self.seen.append((x.detach().clone(), c_noise.detach().clone()))
        return self.a * x + self.b * c_noise[:, None]


def test_coefficients_match_table_1():
    sd = SIGMA_DATA
    c_skip, c_out, c_in, c_noise = edm_coefficients(SIGMAS, sd)
    for i, s in enumerate(SIGMAS.tolist()):
        assert c_skip[i].item() == pytest.approx(sd**2 / (s**2 + sd**2), rel=1e-12)
        assert c_out[i].item() == pytest.approx(s * sd / math.sqrt(s**2 + sd**2), rel=1e-12)
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + sd**2), rel=1e-12)
        assert c_noise[i].item() == pytest.approx(math.log(s) / 4, rel=1e-12)


def test_skip_and_output_scalings_preserve_data_variance():
    # Karras et al. 2022 App. B.6: c_skip minimises the target's variance, which gives
    # c_skip sigma_d^2 + c_out^2 = sigma_d^2; c_in and c_out give unit input and target variance.
    for sd in (0.063, 0.5):
        c_skip, c_out, c_in, _ = edm_coefficients(SIGMAS, sd)
        torch.testing.assert_close(c_skip * sd**2 + c_out**2, torch.full_like(SIGMAS, sd**2))
        # c_in normalises the noisy input: Var(c_in (y + n)) = c_in^2 (sigma_d^2 + sigma^2) = 1.
        torch.testing.assert_close(c_in**2 * (sd**2 + SIGMAS**2), torch.ones_like(SIGMAS))
        # The effective target (y - c_skip (y + n)) / c_out has unit variance.
        target_var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * SIGMAS**2) / c_out**2
        torch.testing.assert_close(target_var, torch.ones_like(SIGMAS))


def test_loss_weight_times_c_out_squared_is_one():
    _, c_out, _, _ = edm_coefficients(SIGMAS, SIGMA_DATA)
    torch.testing.assert_close(edm_loss_weight(SIGMAS, SIGMA_DATA) * c_out**2, torch.ones_like(SIGMAS))


def test_denoiser_wraps_the_network_as_in_table_1():
    net = _Recorder()
    D = EDMPrecond(net, sigma_data=0.063)
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.01, 0.3, 5.0])
    out = D(x, sigma)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, 0.063)
    fed_x, fed_noise = net.seen[-1]
    torch.testing.assert_close(fed_x, c_in[:, None] * x)
    torch.testing.assert_close(fed_noise, c_noise)
    expected = c_skip[:, None] * x + c_out[:, None] * (0.7 * c_in[:, None] * x + 0.1 * c_noise[:, None])
    torch.testing.assert_close(out, expected)


def test_denoiser_is_identity_as_sigma_goes_to_zero():
    D = EDMPrecond(_Recorder(a=3.0, b=2.0))
    x = torch.randn(2, 32, generator=torch.Generator().manual_seed(1)) * 0.1
    sigmas = (1e-2, 1e-4, 1e-6)
    gaps = [(D(x, s) - x).abs().max().item() for s in sigmas]
    # |D(x; sigma) - x| = O(sigma): c_skip -> 1 as 1 - O(sigma^2), c_out -> 0 as O(sigma).
    assert gaps[0] > gaps[1] > gaps[2]
    for s, gap in zip(sigmas, gaps):
        assert gap < 50 * s


def test_scalar_and_batched_sigma_agree():
    D = EDMPrecond(_Recorder())
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(D(x, 0.5), D(x, torch.full((4,), 0.5)))
    torch.testing.assert_close(D(x, torch.tensor(0.5)), D(x, torch.full((4,), 0.5)))
    with pytest.raises(ValueError):
        D(x, torch.ones(3))


def test_gradients_flow_to_input_and_weights():
    net = _Recorder()
    D = EDMPrecond(net)
    x = torch.randn(2, 8, requires_grad=True)
    D(x, 0.2).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert net.a.grad is not None and net.a.grad.abs() > 0


def test_valid_length_delegates_to_the_network():
    class Pow2(nn.Module):
        def forward(self, x, c):
            return x

        def valid_length(self, n):
            return 1 << (n - 1).bit_length()

    assert EDMPrecond(Pow2()).valid_length(1000) == 1024
    assert EDMPrecond(_Recorder()).valid_length(1000) == 1000
