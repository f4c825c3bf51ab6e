"""The multi-resolution CQT is an exactly invertible (Parseval) frame of real signals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simdps.diffusion.cqt import CQT, DEFAULT_BINS_PER_OCTAVE, get_cqt
from simdps.errors import SimDPSError
from conftest import piano_like

# Odd lengths, primes (17, 1009, 7919, 44101) and powers of two, down to a single sample.
LENGTHS = [1, 2, 3, 17, 256, 1009, 4096, 7919, 44101]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def _rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _energy(coeffs: list[torch.Tensor]) -> float:
    return float(sum((c.abs() ** 2).sum() for c in coeffs))


@pytest.mark.parametrize("n_samples", LENGTHS)
def test_shapes_follow_the_interface(n_samples):
    cqt = CQT(n_samples, 44_100)
    x = torch.randn(3, n_samples)
    coeffs = cqt(x)
    assert len(coeffs) == 9 == len(cqt.bins) == len(cqt.frames)
    assert cqt.bins == [DEFAULT_BINS_PER_OCTAVE[0] + 1, *DEFAULT_BINS_PER_OCTAVE[1:]]
    for o, c in enumerate(coeffs):
        assert c.dtype == torch.complex64
        assert tuple(c.shape) == (3, cqt.bins[o], cqt.frames[o])
        t = cqt.frames[o]
        assert t & (t - 1) == 0, f"T_{o} = {t} is not a power of two"
    assert cqt.frames == sorted(cqt.frames), "T_o must not decrease with o"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_samples", LENGTHS)
def test_round_trip_is_exact_on_white_noise(n_samples, dtype):
    cqt = CQT(n_samples, 22_050, dtype=dtype)
    x = torch.randn(2, n_samples, dtype=dtype, generator=torch.Generator().manual_seed(n_samples))
    y = cqt.inverse(cqt(x))
    assert y.dtype == dtype and y.shape == x.shape
    assert _rel_error(y, x) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sample_rate, duration_s", [(22_050, 6.0), (44_100, 1.3)])
def test_round_trip_is_exact_on_music(sample_rate, duration_s, dtype):
    x = torch.from_numpy(piano_like(duration_s, sample_rate, seed=3)).to(dtype)[None]
    cqt = get_cqt(x.shape[-1], sample_rate, dtype=dtype)
    assert _rel_error(cqt.inverse(cqt(x)), x) <= TOLERANCE[dtype]


@pytest.mark.parametrize("n_samples", [2, 1009, 4096])
def test_the_frame_is_parseval_so_energy_is_preserved(n_samples):
    cqt = CQT(n_samples, 44_100, dtype=torch.float64)
    x = torch.randn(2, n_samples, dtype=torch.float64)
    assert _energy(cqt(x)) == pytest.approx(float((x**2).sum()), rel=1e-12)


def test_inverse_is_the_adjoint_of_the_analysis():
    """<A x, c> = <x, A^-1 c> for a Parseval frame: the gradient of the analysis is the synthesis."""
    cqt = CQT(1009, 22_050, dtype=torch.float64)
    x = torch.randn(2, 1009, dtype=torch.float64, requires_grad=True)
    target = [torch.randn(2, k, t, dtype=torch.complex128) for k, t in zip(cqt.bins, cqt.frames)]
    inner = sum((c.conj() * a).real.sum() for c, a in zip(target, cqt(x)))
    (grad,) = torch.autograd.grad(inner, x)
    assert torch.allclose(grad, cqt.inverse(target), atol=1e-12)


def test_gradients_flow_through_forward_and_inverse():
    cqt = CQT(23, 22_050, dtype=torch.float64)
    x = torch.randn(1, 23, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: cqt.inverse(cqt(s)), (x,))
    # fast mode: checks random projections of the Jacobians, enough to catch a wrong backward
    assert torch.autograd.gradcheck(lambda s: cqt(s)[-1], (x,), fast_mode=True)
    coeffs = [torch.randn(1, k, t, dtype=torch.complex128, requires_grad=True)
              for k, t in zip(cqt.bins, cqt.frames)]
    assert torch.autograd.gradcheck(lambda *c: cqt.inverse(list(c)), tuple(coeffs), fast_mode=True)


def test_energy_near_a0_is_held_by_the_low_pass_band():
    """At 44.1 kHz the lowest octave starts at 43 Hz: a piano's A0 (27.5 Hz) must not be lost."""
    sr = 44_100
    n = 2 * sr
    x = torch.sin(2 * np.pi * 27.5 * torch.arange(n, dtype=torch.float64) / sr)[None]
    cqt = CQT(n, sr, dtype=torch.float64)
    assert cqt.f_min_hz > 27.5
    coeffs = cqt(x)
    low_band = float((coeffs[0][:, 0].abs() ** 2).sum())
    assert low_band / _energy(coeffs) > 0.99
    assert _rel_error(cqt.inverse(coeffs), x) < 1e-10


def test_dc_and_nyquist_are_represented():
    n = 4096
    t = torch.arange(n, dtype=torch.float64)
    cqt = CQT(n, 44_100, dtype=torch.float64)
    dc = torch.full((1, n), 0.5, dtype=torch.float64)
    nyquist = (0.5 * (-1.0) ** t)[None]
    c_dc, c_ny = cqt(dc), cqt(nyquist)
    assert float((c_dc[0][:, 0].abs() ** 2).sum()) == pytest.approx(_energy(c_dc), rel=1e-12)
    assert float((c_ny[-1][:, -1].abs() ** 2).sum()) == pytest.approx(_energy(c_ny), rel=1e-12)
    assert _rel_error(cqt.inverse(c_dc), dc) < 1e-12
    assert _rel_error(cqt.inverse(c_ny), nyquist) < 1e-12


@pytest.mark.parametrize("freq_hz", [60.0, 440.0, 3_000.0, 9_000.0])
def test_a_sine_peaks_in_the_bin_nearest_its_frequency(freq_hz):
    sr, n = 22_050, 22_050
    x = torch.sin(2 * np.pi * freq_hz * torch.arange(n) / sr)[None]
    cqt = CQT(n, sr)
    energy = np.concatenate([(c[0].abs() ** 2).sum(-1).numpy() for c in cqt(x)])
    centres = np.concatenate(cqt.centre_hz)
    nearest = np.argmin(np.abs(np.log2(np.maximum(centres, 1e-9) / freq_hz)))
    assert np.argmax(energy) == nearest


def test_half_power_bands_tile_dc_to_nyquist():
    cqt = CQT(1000, 44_100)
    width = np.concatenate(cqt.bandwidth_hz)
    assert width.sum() == pytest.approx(22_050.0)
    assert cqt.bandwidth_hz[0][0] == pytest.approx(cqt.f_min_hz)
    centres = np.concatenate(cqt.centre_hz)
    assert np.all(np.diff(centres) > 0) and centres[-1] < 22_050


def test_leading_dimensions_and_other_dtypes_are_handled_exactly():
    cqt = CQT(1009, 44_100)  # float32 tables
    x = torch.randn(2, 3, 1009, dtype=torch.float64)
    coeffs = cqt(x)
    assert coeffs[4].shape[:2] == (2, 3) and coeffs[4].dtype == torch.complex128
    assert _rel_error(cqt.inverse(coeffs), x) < 1e-10


def test_converting_the_module_to_float64_keeps_the_round_trip_exact():
    cqt = CQT(1009, 44_100).to(torch.float64)  # built in float32, tables refilled in float64
    assert cqt.window_0.dtype == torch.float64
    x = torch.randn(1, 1009, dtype=torch.float64)
    assert _rel_error(cqt.inverse(cqt(x)), x) <= TOLERANCE[torch.float64]


def test_get_cqt_is_cached_and_holds_no_state():
    a = get_cqt(2048, 22_050, device="cpu", dtype=torch.float64)
    assert a is get_cqt(2048, 22_050, 9, DEFAULT_BINS_PER_OCTAVE, torch.device("cpu"), torch.float64)
    assert a is not get_cqt(2048, 22_050, dtype=torch.float32)
    assert a.window_8.dtype == torch.float64
    assert a.state_dict() == {}  # window tables are non-persistent buffers


def test_custom_resolution():
    cqt = CQT(3001, 16_000, n_octaves=4, bins_per_octave=(12, 24, 24, 48))
    x = torch.randn(1, 3001)
    coeffs = cqt(x)
    assert [c.shape[-2] for c in coeffs] == [13, 24, 24, 48]
    assert _rel_error(cqt.inverse(coeffs), x) <= 1e-5


@pytest.mark.parametrize("kwargs", [
    dict(n_samples=0, sample_rate=44_100),
    dict(n_samples=100, sample_rate=0),
    dict(n_samples=100, sample_rate=44_100, n_octaves=3),
    dict(n_samples=100, sample_rate=44_100, n_octaves=2, bins_per_octave=(8, 0)),
])
def test_bad_configuration_raises_a_project_error(kwargs):
    with pytest.raises(SimDPSError, match="CQT|bins_per_octave"):
        CQT(**kwargs)


def test_wrong_inputs_are_rejected():
    cqt = CQT(100, 44_100)
    with pytest.raises(ValueError, match="100 samples"):
        cqt(torch.randn(1, 99))
    with pytest.raises(ValueError, match="real"):
        cqt(torch.randn(1, 100, dtype=torch.complex64))
    coeffs = cqt(torch.randn(1, 100))
    with pytest.raises(ValueError, match="octaves"):
        cqt.inverse(coeffs[:-1])
    with pytest.raises(ValueError, match="octave 2"):
        cqt.inverse(coeffs[:2] + [coeffs[2][..., :-1]] + coeffs[3:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_round_trip_on_cuda():
    cqt = get_cqt(44_101, 44_100, device="cuda", dtype=torch.float32)
    x = torch.randn(2, 44_101, device="cuda")
    assert _rel_error(cqt.inverse(cqt(x)), x) <= 1e-5
