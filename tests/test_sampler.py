"""Algorithm 2 and eq. 8 guidance against a Gaussian prior whose exact denoiser is known.

For data x ~ N(0, C) the MMSE denoiser is D(x; sigma) = C (C + sigma^2 I)^-1 x, so the
sampler can be checked without any network: its samples must have covariance C, and
posterior sampling of a masked observation must head for the Gaussian posterior mean
C_uo C_oo^-1 y_o in the gap.
"""

from __future__ import annotations

import math

import pytest
import torch

from simdps.diffusion.guidance import PRESETS, Guidance, GuidanceConfig, guidance_config
from simdps.diffusion.sampler import SamplerConfig, churn_gamma, edm_sampler, geometric_sigmas, inpaint
from simdps.errors import SimDPSError

N = 64
SCALE = 0.063  # the audio level the model sees (sigma_data)


def ar1_covariance(rho: float, n: int = N, scale: float = SCALE) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    return scale**2 * rho ** (i[:, None] - i[None, :]).abs()


class GaussianDenoiser:
    """Exact E[x0 | x] for x0 ~ N(0, C), x = x0 + sigma n: U diag(l / (l + sigma^2)) U^T x."""

    def __init__(self, C: torch.Tensor):
        lam, U = torch.linalg.eigh(C)
        self.lam, self.U = lam.float(), U.float()
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1)
        return ((x @ self.U) * (self.lam / (self.lam + sigma**2))) @ self.U.T


@pytest.fixture(autouse=True)
def _one_thread():
    """These are many tiny matrix products: threads only add overhead on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def relative_frobenius(A: torch.Tensor, B: torch.Tensor) -> float:
    return (torch.linalg.norm(A - B) / torch.linalg.norm(B)).item()


# ---------------------------------------------------------------- schedule and churn

def test_schedule_is_geometric_from_8_to_e_minus_5_then_zero():
    s = geometric_sigmas(50, 8.0, math.exp(-5))
    assert s.shape == (51,) and s[-1] == 0
    assert s[0].item() == pytest.approx(8.0) and s[49].item() == pytest.approx(math.exp(-5))
    ratios = s[1:50] / s[:49]
    torch.testing.assert_close(ratios, torch.full_like(ratios, ratios[0].item()))
    assert ratios[0].item() == pytest.approx(math.exp((-5 - math.log(8)) / 49))


def test_churn_gamma_convention():
    assert churn_gamma(1.0, 50, 10.0) == pytest.approx(0.2)  # the paper's setting
    assert churn_gamma(1.0, 5, 10.0) == pytest.approx(math.sqrt(2) - 1)  # capped
    assert churn_gamma(1.0, 50, 10.0, S_tmin=2.0) == 0.0
    assert churn_gamma(1.0, 50, 10.0, S_tmax=0.5) == 0.0


def test_denoiser_evaluations_are_two_per_step_except_the_last():
    D = GaussianDenoiser(ar1_covariance(0.9))
    edm_sampler(D, (2, N), config=SamplerConfig(steps=7), progress=False)
    assert D.calls == 2 * 7 - 1


# ---------------------------------------------------------------- prior sampling

def test_unguided_samples_have_the_prior_covariance():
    C = ar1_covariance(0.9)
    n_samples = 3000
    x = edm_sampler(GaussianDenoiser(C), (n_samples, N), seed=1, progress=False).double()
    C_hat = x.T @ x / n_samples
    err = relative_frobenius(C_hat, C)
    # Sampling error alone is ~0.05 for 3000 draws of this process; discretisation adds little.
    assert err < 0.09
    # The bound is discriminating: a neighbouring prior's covariance is farther off.
    assert relative_frobenius(ar1_covariance(0.8), C) > 0.3
    assert relative_frobenius(C_hat, ar1_covariance(0.8)) > 0.2
    # Mean 0: the standard error of each sample mean is SCALE / sqrt(3000) ~ 0.0012.
    assert x.mean(0).abs().max().item() < 0.01


def test_deterministic_sampler_also_reaches_the_prior():
    C = ar1_covariance(0.9)
    cfg = SamplerConfig(S_churn=0.0)
    x = edm_sampler(GaussianDenoiser(C), (3000, N), config=cfg, seed=2, progress=False).double()
    assert relative_frobenius(x.T @ x / 3000, C) < 0.09


def test_same_seed_same_samples_other_seed_other_samples():
    D = GaussianDenoiser(ar1_covariance(0.9))
    a = edm_sampler(D, (3, N), seed=5, config=SamplerConfig(steps=10), progress=False)
    b = edm_sampler(D, (3, N), seed=5, config=SamplerConfig(steps=10), progress=False)
    c = edm_sampler(D, (3, N), seed=6, config=SamplerConfig(steps=10), progress=False)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


# ---------------------------------------------------------------- the guidance slope (eq. 8)

def _linear_denoiser(A: torch.Tensor):
    return lambda x, sigma: x @ A.T


def test_slope_matches_the_derivation_for_a_linear_denoiser():
    # D(x) = A x  =>  g_y = grad ||m (y - A x)|| = -A^T (m r) / ||m r||, r = y - A x.
    g = torch.Generator().manual_seed(0)
    B, n = 3, 32
    A = torch.randn(n, n, generator=g) / math.sqrt(n)
    x = torch.randn(B, n, generator=g)
    y = torch.randn(B, n, generator=g)
    guide = torch.randn(B, n, generator=g)
    mask = torch.ones(B, n)
    mask[:, 10:20] = 0
    sigma = torch.full((B,), 0.7)
    w_y, w_g = 0.3, 0.15
    d = Guidance(y, mask, guide, w_y=w_y, w_guide=w_g).slope(_linear_denoiser(A), x, sigma)

    x0 = x @ A.T
    expected = (x - x0) / 0.7
    for w, m, target in ((w_y, mask, y), (w_g, 1 - mask, guide)):
        r = m * (target - x0)
        grad = -(r / r.norm(dim=1, keepdim=True)) @ A
        zeta = grad.norm(dim=1, keepdim=True) / math.sqrt(n)
        expected = expected + w * grad / zeta
    torch.testing.assert_close(d, expected, rtol=1e-5, atol=1e-5)


def test_each_guidance_term_has_rms_w_per_sample_and_points_downhill():
    g = torch.Generator().manual_seed(1)
    B, n = 4, 48
    A = torch.randn(n, n, generator=g) / math.sqrt(n)
    D = _linear_denoiser(A)
    x = torch.randn(B, n, generator=g)
    y = torch.randn(B, n, generator=g) * torch.tensor([[1e-3], [1.0], [10.0], [0.1]])  # any level
    mask = torch.ones(B, n)
    mask[:, 20:30] = 0
    sigma = torch.full((B,), 0.3)
    plain = Guidance(y, mask, w_y=0.0).slope(D, x, sigma)
    guided = Guidance(y, mask, w_y=0.3).slope(D, x, sigma)
    extra = guided - plain
    rms = extra.pow(2).mean(dim=1).sqrt()
    torch.testing.assert_close(rms, torch.full((B,), 0.3), rtol=1e-4, atol=1e-6)
    # A small sampler step x + (sigma_next - sigma) d with sigma_next < sigma lowers the residual.
    def residual(z):
        return (mask * (y - D(z, sigma))).norm(dim=1)
    step = -0.01
    assert torch.all(residual(x + step * guided) < residual(x + step * plain))


def test_weights_zero_skip_every_gradient():
    class NoGrad:
        def __call__(self, x, sigma):
            assert not torch.is_grad_enabled() and not x.requires_grad
            return 0.5 * x

    x = torch.randn(2, 8)
    d = Guidance(torch.zeros(2, 8), torch.ones(2, 8), w_y=0.0, w_guide=0.0).slope(NoGrad(), x, torch.ones(2))
    torch.testing.assert_close(d, 0.5 * x)


def test_zero_residual_adds_nothing_and_no_nan():
    A = torch.eye(16)
    x = torch.randn(2, 16)
    y = x.clone()  # D(x) = x already explains the observation exactly
    d = Guidance(y, torch.ones(2, 16), w_y=0.3).slope(_linear_denoiser(A), x, torch.ones(2))
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d, torch.zeros_like(d))


def test_norms_are_per_batch_item():
    g = torch.Generator().manual_seed(2)
    n = 24
    A = torch.randn(n, n, generator=g) / math.sqrt(n)
    x = torch.randn(3, n, generator=g)
    y = torch.randn(3, n, generator=g) * torch.tensor([[100.0], [1.0], [0.01]])
    mask = torch.ones(3, n)
    mask[:, 5:12] = 0
    guide = torch.randn(3, n, generator=g)
    batched = Guidance(y, mask, guide, w_y=0.3, w_guide=0.1).slope(_linear_denoiser(A), x, torch.full((3,), 0.5))
    for b in range(3):
        alone = Guidance(y[b:b + 1], mask[b:b + 1], guide[b:b + 1], w_y=0.3, w_guide=0.1).slope(
            _linear_denoiser(A), x[b:b + 1], torch.full((1,), 0.5))
        torch.testing.assert_close(batched[b:b + 1], alone, rtol=1e-5, atol=1e-6)


def test_presets_are_the_papers_values_and_overridable():
    assert PRESETS["dps"] == GuidanceConfig(0.3, 0.0)
    assert PRESETS["simdps-l"] == GuidanceConfig(0.3, 0.15)
    assert PRESETS["simdps-h"] == GuidanceConfig(0.3, 0.04)
    assert guidance_config("SimDPS-h", w_guide=0.5) == GuidanceConfig(0.3, 0.5)
    assert guidance_config("dps", w_y=1.0) == GuidanceConfig(1.0, 0.0)
    with pytest.raises(SimDPSError, match="choose one of"):
        guidance_config("simdps-x")
    with pytest.raises(SimDPSError):
        GuidanceConfig(w_y=-1.0)


# ---------------------------------------------------------------- posterior sampling

RHO_SMOOTH = 0.98
GAP = slice(24, 40)
N_OBS, PER_OBS = 4, 300


def _observations():
    """N_OBS draws of the prior, their mask, and the exact posterior means in the gap."""
    C = ar1_covariance(RHO_SMOOTH)
    L = torch.linalg.cholesky(C)
    truths = torch.randn(N_OBS, N, generator=torch.Generator().manual_seed(0), dtype=torch.float64) @ L.T
    mask = torch.ones(N)
    mask[GAP] = 0
    o, u = mask.bool(), ~mask.bool()
    post = (C[u][:, o] @ torch.linalg.solve(C[o][:, o], truths[:, o].T)).T
    return C, truths, mask, post


def _batched(t: torch.Tensor) -> torch.Tensor:
    return t.float().repeat_interleave(PER_OBS, dim=0)


def _gap_means(x: torch.Tensor) -> torch.Tensor:
    return x.double().reshape(N_OBS, PER_OBS, N).mean(1)[:, GAP]


def _relative_errors(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (est - ref).norm(dim=1) / ref.norm(dim=1)


def test_dps_lands_near_the_gaussian_posterior_mean_in_the_gap():
    C, truths, mask, post = _observations()
    # All observations in one batch: guidance norms must be per item for this to work.
    x = inpaint(GaussianDenoiser(C), _batched(truths), mask.expand(N_OBS * PER_OBS, N),
                preset="dps", seed=0, progress=False)
    err = _relative_errors(_gap_means(x), post)
    # The prior mean (0) has relative error 1 by definition. DPS is approximate (the
    # likelihood around x0_hat of eq. 5, fixed-size normalised steps), so it does not hit
    # the posterior mean exactly: measured 0.03-0.28 here (0.11 on average), and up to
    # 0.86 for other draws of the prior during development.
    assert err.mean() < 0.3
    assert torch.all(err < 0.6)
    # The observed part is reproduced approximately (measured 0.10).
    o, y_o = mask.bool(), _batched(truths)[:, mask.bool()]
    obs_err = (x.double()[:, o] - y_o).norm() / y_o.norm()
    assert obs_err < 0.25
    # Unguided samples know nothing of y: their gap mean is the prior mean.
    free = inpaint(GaussianDenoiser(C), _batched(truths), mask.expand(N_OBS * PER_OBS, N),
                   preset="dps", w_y=0.0, seed=0, progress=False)
    assert _relative_errors(_gap_means(free), post).mean() > 0.8


def test_a_stronger_observation_weight_fits_the_observation_better():
    C, truths, mask, post = _observations()
    errs = []
    for w_y in (0.1, 0.3, 1.0):
        x = inpaint(GaussianDenoiser(C), _batched(truths), mask.expand(N_OBS * PER_OBS, N),
                    preset="dps", w_y=w_y, seed=0, progress=False, steps=30)
        o = mask.bool()
        errs.append(((x.double()[:, o] - _batched(truths)[:, o]).norm() / _batched(truths)[:, o].norm()).item())
    assert errs[0] > errs[1] > errs[2]


def test_simdps_with_the_true_guide_moves_the_gap_toward_it_more_with_larger_w_guide():
    C, truths, mask, _ = _observations()
    truth_gap = truths[:, GAP]
    errs = []
    for preset in ("dps", "simdps-h", "simdps-l"):  # w_guide 0, 0.04, 0.15
        x = inpaint(GaussianDenoiser(C), _batched(truths), mask.expand(N_OBS * PER_OBS, N), _batched(truths),
                    preset=preset, seed=0, progress=False)
        errs.append(_relative_errors(_gap_means(x), truth_gap).mean().item())
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.5 * errs[0]


# ---------------------------------------------------------------- inpaint's contract

def test_inpaint_pads_to_the_valid_length_and_crops_back():
    class PaddedGaussian(GaussianDenoiser):
        seen_lengths: list[int] = []

        def valid_length(self, n):
            return N

        def __call__(self, x, sigma):
            self.seen_lengths.append(x.shape[-1])
            return super().__call__(x, sigma)

    D = PaddedGaussian(ar1_covariance(0.9))
    y = torch.randn(2, 50) * SCALE
    mask = torch.ones(2, 50)
    mask[:, 20:30] = 0
    x = inpaint(D, y, mask, y, steps=5, progress=False)
    assert x.shape == (2, 50) and set(D.seen_lengths) == {N}
    single = inpaint(D, y[0], mask[0], y[0], steps=5, progress=False)
    assert single.shape == (50,)


def test_inpaint_ignores_what_lies_in_the_gap_of_y_and_outside_it_of_the_guide():
    C = ar1_covariance(0.9)
    g = torch.Generator().manual_seed(3)
    y = torch.randn(2, N, generator=g) * SCALE
    guide = torch.randn(2, N, generator=g) * SCALE
    mask = torch.ones(2, N)
    mask[:, 30:40] = 0
    a = inpaint(GaussianDenoiser(C), y, mask, guide, steps=6, progress=False)
    y2, guide2 = y.clone(), guide.clone()
    y2[:, 30:40] = float("nan")
    guide2[:, :30] = 123.0
    b = inpaint(GaussianDenoiser(C), y2, mask, guide2, steps=6, progress=False)
    torch.testing.assert_close(a, b)


def test_inpaint_rejects_bad_inputs_with_a_message():
    D = GaussianDenoiser(ar1_covariance(0.9))
    y, mask = torch.zeros(1, N), torch.ones(1, N)
    with pytest.raises(SimDPSError, match="guide"):
        inpaint(D, y, mask, preset="simdps-l", progress=False)
    with pytest.raises(SimDPSError, match="mask shape"):
        inpaint(D, y, torch.ones(1, N - 1), preset="dps", progress=False)
    with pytest.raises(SimDPSError, match="only 0"):
        inpaint(D, y, mask * 0.5, preset="dps", progress=False)
    with pytest.raises(SimDPSError, match="NaN"):
        inpaint(D, y * float("nan"), mask, preset="dps", progress=False)
    with pytest.raises(SimDPSError, match="steps"):
        inpaint(D, y, mask, preset="dps", steps=0, progress=False)
