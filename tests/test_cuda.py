"""The diffusion backend on a CUDA device: the same results as on the CPU, bf16 training, checkpoints.

Skipped where no CUDA device is present (CI); run on a GPU machine with ``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from simdps.diffusion.checkpoint import build_model, load_model, resolve_device
from simdps.diffusion.cqt import get_cqt
from simdps.diffusion.sampler import inpaint
from simdps.diffusion.train import TrainConfig, edm_loss, train
from simdps.diffusion.unet import UNetConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SR = 8000
CROP = 1024


def small_model() -> UNetConfig:
    return UNetConfig(sample_rate=SR, segment_s=CROP / SR, n_octaves=4, bins_per_octave=(4, 4, 8, 8),
                      base_channels=8, channel_mults=(1, 1, 2, 2), dilations=(1, 2), emb_dim=32, n_fourier=16)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm()).item()


def _perturbed_model() -> torch.nn.Module:
    """Weights moved off their initialisation, so every layer's output matters."""
    torch.manual_seed(0)
    model = build_model(small_model(), 0.063)
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    return model.eval().requires_grad_(False)


def test_auto_resolves_to_cuda():
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_cqt_round_trip_and_gradient_on_cuda(dtype, tol):
    cqt = get_cqt(96_001, 44_100, device="cuda", dtype=dtype)
    x = torch.randn(2, 96_001, device="cuda", dtype=dtype, requires_grad=True)
    y = cqt.inverse(cqt(x))
    assert _rel(y.detach(), x.detach()) <= tol
    (y * y).sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach(), rtol=0, atol=50 * tol)


def test_cqt_coefficients_match_the_cpu():
    x = torch.randn(1, 20_000, generator=torch.Generator().manual_seed(0))
    on_cpu = get_cqt(20_000, 22_050, device="cpu")(x)
    on_gpu = get_cqt(20_000, 22_050, device="cuda")(x.cuda())
    assert [c.shape for c in on_cpu] == [c.shape for c in on_gpu]
    for a, b in zip(on_gpu, on_cpu):
        assert _rel(torch.view_as_real(a), torch.view_as_real(b)) <= 1e-5


def test_denoiser_matches_the_cpu():
    model = _perturbed_model()
    x = 0.1 * torch.randn(3, CROP, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.01, 0.5, 5.0])
    with torch.no_grad():
        reference = model(x, sigma)
        on_gpu = model.cuda()(x.cuda(), sigma.cuda())
    assert _rel(on_gpu, reference) <= 1e-3  # cuDNN convolutions run in TF32 (measured 1.3e-4)


@pytest.mark.parametrize("preset", ["dps", "simdps-l"])
def test_guided_inpainting_on_cuda_matches_the_cpu_and_keeps_the_observation(preset):
    """The noise is drawn on the CPU, so a seed gives the same trajectory on both devices."""
    model = _perturbed_model()
    g = torch.Generator().manual_seed(2)
    y = 0.06 * torch.randn(2, 3000, generator=g)
    guide = 0.06 * torch.randn(2, 3000, generator=g)
    mask = torch.ones(2, 3000)
    mask[:, 1200:1800] = 0
    kw = dict(preset=preset, steps=8, seed=3, progress=False)
    reference = inpaint(model, y, mask, guide, **kw)
    on_gpu = inpaint(model.cuda(), y.cuda(), mask.cuda(), guide.cuda(), **kw)
    assert on_gpu.device.type == "cuda" and on_gpu.shape == y.shape
    assert torch.isfinite(on_gpu).all()
    assert _rel(on_gpu, reference) <= 1e-2
    # Inputs on the CPU with the model on the GPU: the result comes back to the inputs' device.
    # (cuDNN may pick other algorithms from one call to the next: measured 7e-5 apart.)
    mixed = inpaint(model, y, mask, guide, **kw)
    assert mixed.device.type == "cpu"
    assert _rel(mixed, on_gpu) <= 1e-2
    half = inpaint(model, y.cuda(), mask.cuda(), guide.cuda(), bf16=True, **kw)
    assert torch.isfinite(half).all() and _rel(half, on_gpu) <= 5e-2


def test_bf16_training_on_cuda_lowers_the_loss_and_loads_on_the_cpu(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(4 * SR) / SR
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        f0 = rng.uniform(200, 600)
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 4))
        sf.write(data / f"tone{i}.wav", (0.063 * x / x.std()).astype(np.float32), SR)
    cfg = TrainConfig(model=small_model(), batch_size=16, steps=300, lr=3e-3, warmup_steps=20,
                      checkpoint_every=100, data_workers=1)
    history = train(data, tmp_path / "run", cfg, device="cuda", progress=False)
    losses = np.array([r.loss for r in history])
    assert np.all(np.isfinite(losses))
    assert losses[-50:].mean() < 0.8 * losses[:50].mean()

    resumed = train(data, tmp_path / "run", resume=True, steps=320, device="cuda", progress=False)
    assert [r.step for r in resumed] == list(range(320))

    on_cpu, info = load_model(tmp_path / "run", "cpu")
    on_gpu, _ = load_model(tmp_path / "run", "cuda")
    assert info["step"] == 320
    assert next(on_gpu.parameters()).device.type == "cuda"
    y = 0.063 * torch.randn(4, CROP, generator=torch.Generator().manual_seed(5))
    sigma = torch.tensor([0.01, 0.1, 1.0, 5.0])
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        loss_cpu = edm_loss(on_cpu, y, sigma, noise).item()
        loss_gpu = edm_loss(on_gpu, y.cuda(), sigma.cuda(), noise.cuda()).item()
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-3)


def test_full_width_model_fits_a_6_s_guided_step_on_one_gpu():
    """One guided network evaluation of the 43 M model on 2^18 samples (5.9 s at 44.1 kHz)."""
    model = build_model(UNetConfig.full(), 0.063).cuda().eval().requires_grad_(False)
    assert 30e6 < sum(p.numel() for p in model.parameters()) < 60e6
    x = (0.5 * torch.randn(1, 2**18, device="cuda")).requires_grad_(True)
    out = model(x, torch.tensor([0.5], device="cuda"))
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

