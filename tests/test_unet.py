"""The CQT U-Net score model: shapes, valid lengths, presets, gradients, noise conditioning."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from simdps.config import from_dict
from simdps.diffusion.cqt import get_cqt
from simdps.diffusion.unet import CQTUNet, UNetConfig, valid_length
from simdps.errors import SimDPSError

# Tiny networks (a few thousand parameters) on the real CQT: one with MR-CQTdiff's 9-octave
# layout and the CPU preset's time patching, two with 4 octaves, folded and unfolded.
TINY = dict(base_channels=2, blocks_per_level=1, mid_blocks=1, dilations=(1, 2), emb_dim=16, n_fourier=8,
            group_size=2)
CONFIGS = {
    "9oct-patch8": UNetConfig(**TINY, channel_mults=(2, 2, 2, 2, 1, 1, 1, 1, 1), time_patch=8),
    "4oct-patch2": UNetConfig(**TINY, sample_rate=8000, n_octaves=4, bins_per_octave=(4, 4, 8, 8),
                              channel_mults=(2, 2, 1, 1), time_patch=2),
    "4oct-patch1": UNetConfig(**{**TINY, "blocks_per_level": 2}, sample_rate=8000, n_octaves=4,
                              bins_per_octave=(4, 4, 8, 8), channel_mults=(2, 2, 1, 1), time_patch=1),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: extra threads only contend on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(name: str, seed: int = 0) -> CQTUNet:
    torch.manual_seed(seed)
    return CQTUNet(CONFIGS[name])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_has_the_input_shape_at_every_valid_length(name):
    model = make(name)
    n_min = model.valid_length(1)
    for n in (n_min, 2 * n_min, 8 * n_min):
        x = torch.randn(2, n)
        y = model(x, torch.tensor([-1.0, 0.3]))
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all()


def test_valid_lengths_are_powers_of_two_on_one_time_grid():
    cfg = UNetConfig.small()
    # The lowest octave has 512 samples per frame; with 8 frames folded the shortest input is 4096.
    assert valid_length(1, cfg) == 4096
    hops = None
    for n in (4000, 4096, 5000, 44_100, 88_200, 131_072):
        n_valid = valid_length(n, cfg)
        assert n_valid >= n and n_valid & (n_valid - 1) == 0 and n_valid < 2 * max(n, 4096)
        assert valid_length(n_valid, cfg) == n_valid
        frames = get_cqt(n_valid, cfg.sample_rate, cfg.n_octaves, cfg.bins_per_octave).frames
        grid = [n_valid // t for t in frames]  # samples per frame, octave by octave
        assert hops is None or grid == hops
        hops = grid
    assert valid_length(88_200, cfg) == 131_072  # a 4-s window at 22.05 kHz runs as 5.94 s


def test_an_invalid_length_is_refused_with_the_fix():
    model = make("4oct-patch2")
    with pytest.raises(SimDPSError, match=r"valid_length\(3000\) = 4096"):
        model(torch.randn(1, 3000), torch.zeros(1))
    with pytest.raises(SimDPSError, match="mono"):
        model(torch.randn(1, 1, 4096), torch.zeros(1))


def test_preset_sizes_rates_and_crops():
    for cfg, low, high in ((UNetConfig.small(), 1e6, 3e6), (UNetConfig.full(), 35e6, 50e6)):
        with torch.device("meta"):  # count parameters without allocating them
            model = CQTUNet(cfg)
        n_params = sum(p.numel() for p in model.parameters())
        assert low <= n_params <= high, (cfg, n_params)
        crop = round(cfg.segment_s * cfg.sample_rate)
        assert valid_length(crop, cfg) == crop
    assert UNetConfig() == UNetConfig.small()
    assert (UNetConfig.small().sample_rate, UNetConfig.full().sample_rate) == (22_050, 44_100)
    assert round(UNetConfig.full().segment_s * 44_100) == 2**18  # MR-CQTdiff's "6-s" crops


def test_gradients_reach_every_parameter_and_the_input():
    model = make("9oct-patch8")
    x = torch.randn(2, 4096, requires_grad=True)
    model(x, torch.tensor([0.2, -0.7])).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0  # what DPS differentiates through


def test_the_noise_level_changes_the_output():
    model = make("4oct-patch2").eval()
    x = torch.randn(1, 4096).expand(2, -1)
    y = model(x, torch.tensor([-2.0, 0.5]))  # the same input at two noise levels
    assert (y[0] - y[1]).abs().max() > 1e-3 * y.abs().max()
    y_scalar = model(x[:1], torch.tensor(0.5))  # a scalar c_noise applies to the whole batch
    torch.testing.assert_close(y_scalar[0], y[1], rtol=1e-5, atol=1e-6)


def test_batch_items_are_independent():
    model = make("9oct-patch8").eval()
    x = torch.randn(3, 8192)
    c = torch.tensor([0.1, -1.0, 0.4])
    together = model(x, c)
    for i in range(3):
        torch.testing.assert_close(model(x[i:i + 1], c[i:i + 1])[0], together[i], rtol=1e-4, atol=1e-5)


def test_eval_mode_is_deterministic_and_the_state_dict_rebuilds_the_model():
    model = make("4oct-patch1").eval()
    x, c = torch.randn(2, 2048), torch.tensor([0.0, -1.5])
    with torch.no_grad():
        y = model(x, c)
        assert torch.equal(model(x, c), y)
        state = model.state_dict()
        assert "embed.fourier.freqs" in state  # the random Fourier frequencies travel with the weights
        other = make("4oct-patch1", seed=123).eval()
        assert not torch.equal(other(x, c), y)
        other.load_state_dict(state)
        assert torch.equal(other(x, c), y)


def test_config_round_trips_through_json_and_rejects_mistakes():
    for cfg in (UNetConfig.small(), UNetConfig.full(), CONFIGS["4oct-patch2"]):
        back = from_dict(UNetConfig, json.loads(json.dumps(dataclasses.asdict(cfg))))
        assert back == cfg and isinstance(back.channel_mults, tuple)
    with pytest.raises(SimDPSError, match="channel_mults"):
        UNetConfig(channel_mults=(1, 2))
    with pytest.raises(SimDPSError, match="time_patch"):
        UNetConfig(time_patch=3)
    with pytest.raises(SimDPSError, match="kernel_size"):
        UNetConfig(kernel_size=(3, 4))
