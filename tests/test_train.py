"""Training, checkpoints, the crop dataset and ``simdps-train``, with a tiny real CQTUNet on synthetic tones."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from simdps.diffusion.checkpoint import (
    EMA_FILE,
    STATE_DIR,
    build_model,
    load_model,
    read_loss_csv,
    save_checkpoint,
)
from simdps.diffusion.data import CropSampler, maestro_files, training_files
from simdps.diffusion.sampler import inpaint
from simdps.diffusion.train import TrainConfig, edm_loss, ema_decay, learning_rate, sample_sigmas, train
from simdps.diffusion.unet import UNetConfig
from simdps.errors import SimDPSError

SR = 8000
CROP = 256


def tiny_model() -> UNetConfig:
    return UNetConfig(sample_rate=SR, segment_s=CROP / SR, n_octaves=3, bins_per_octave=(4, 4, 8),
                      base_channels=4, channel_mults=(1, 1, 1), dilations=(1,), emb_dim=16, n_fourier=8)


def tiny_config(**changes) -> TrainConfig:
    base = TrainConfig(model=tiny_model(), batch_size=8, steps=100, lr=1e-2, warmup_steps=10,
                       checkpoint_every=50, data_workers=1)
    return dataclasses.replace(base, **changes)


def tone(seed: int, duration_s: float = 1.0, sr: int = SR) -> np.ndarray:
    """Three harmonics of a random pitch at the level of piano audio (std = sigma_data)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sr)) / sr
    f0 = rng.uniform(200, 600)
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 4))
    return (0.063 * x / x.std()).astype(np.float32)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: extra threads only contend on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tones_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    for i in range(4):
        sf.write(folder / f"tone{i}.wav", tone(i), SR)
    return folder


@pytest.fixture(scope="module")
def trained(tones_dir, tmp_path_factory):
    """100 steps of the tiny model; the run every other test compares against."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "ckpt"
    history = train(tones_dir, out, tiny_config(), device="cpu", progress=False)
    torch.set_num_threads(before)
    return out, history


def _eval_loss(denoiser) -> float:
    """EDM loss on held-out tones at fixed noise levels across the sampling range."""
    y = torch.stack([torch.from_numpy(tone(100 + i))[:CROP] for i in range(8)])
    sigma = torch.tensor([0.005, 0.01, 0.03, 0.1, 0.2, 0.5, 1.0, 3.0])
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        return edm_loss(denoiser, y, sigma, noise).item()


# ---------------------------------------------------------------- training

def test_training_lowers_the_loss(trained):
    out, history = trained
    assert [r.step for r in history] == list(range(100))
    cfg = tiny_config()
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)  # the run's initial weights
        initial = build_model(cfg.model, cfg.sigma_data)
    trained_ema, _ = load_model(out, "cpu")
    before, after = _eval_loss(initial), _eval_loss(trained_ema)
    assert after < 0.92 * before  # measured 1.11 -> 0.93
    losses = np.array([r.loss for r in history])
    assert losses[-25:].mean() < losses[:25].mean()
    assert np.all(np.isfinite(losses))


def test_learning_rate_warms_up_and_ema_decay_ramps():
    cfg = tiny_config(lr=1e-3, warmup_steps=10, ema_decay=0.999)
    assert learning_rate(cfg, 0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 4) == pytest.approx(5e-4)
    assert learning_rate(cfg, 9) == learning_rate(cfg, 5000) == pytest.approx(1e-3)
    assert ema_decay(cfg, 0) == pytest.approx(0.1)
    assert ema_decay(cfg, 10**6) == pytest.approx(0.999)
    assert ema_decay(dataclasses.replace(cfg, ema_warmup=False), 0) == pytest.approx(0.999)


def test_sigma_distributions():
    g = torch.Generator().manual_seed(0)
    rho = sample_sigmas(20000, tiny_config(), g).double()
    assert rho.min() >= 1e-5 * 0.999 and rho.max() <= 10.0 * 1.001
    # Inverting sigma = (s_max^(1/rho) + u (s_min^(1/rho) - s_max^(1/rho)))^rho must give uniform u.
    u = (rho ** 0.1 - 10.0 ** 0.1) / (1e-5 ** 0.1 - 10.0 ** 0.1)
    counts = torch.histc(u, bins=10, min=0.0, max=1.0)
    assert torch.all((counts - 2000).abs() < 200)
    logn = sample_sigmas(20000, tiny_config(sigma_distribution="lognormal"), g).double().log()
    assert logn.mean().item() == pytest.approx(-1.2, abs=0.05) and logn.std().item() == pytest.approx(1.2, abs=0.05)
    logu = sample_sigmas(20000, tiny_config(sigma_distribution="loguniform"), g).double().log()
    lo, hi = math.log(1e-5), math.log(10.0)
    assert logu.min() >= lo - 1e-4 and logu.max() <= hi + 1e-4
    assert logu.mean().item() == pytest.approx((lo + hi) / 2, abs=0.1)


def test_a_training_step_runs_under_bf16_autocast():
    # CUDA training runs the network under bf16 autocast; CPU autocast exercises the same casts.
    cfg = tiny_config()
    model = build_model(cfg.model, cfg.sigma_data)
    y = torch.stack([torch.from_numpy(tone(i))[:CROP] for i in range(2)])
    sigma, noise = torch.tensor([0.05, 1.0]), torch.randn(2, CROP, generator=torch.Generator().manual_seed(0))
    reference = edm_loss(model, y, sigma, noise).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = edm_loss(model, y, sigma, noise)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(reference, rel=0.05)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_folder_holds_config_weights_state_and_loss_curve(trained):
    out, history = trained
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "simdps-checkpoint" and config["step"] == 100
    assert TrainConfig.from_dict(config["train"]) == tiny_config()
    for name in ("ema.safetensors", "loss.csv", "loss.png", "train_state/model.safetensors",
                 "train_state/ema.safetensors", "train_state/optimizer.pt", "train_state/state.json"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_loss_csv(out / "loss.csv")
    assert [r.loss for r in rows] == [r.loss for r in history]  # full precision
    assert json.loads((out / STATE_DIR / "state.json").read_text())["step"] == 100
    assert not list(out.glob(".*"))  # no temporary leftovers


def test_load_model_reports_rate_length_and_weights_hash(trained):
    out, _ = trained
    denoiser, info = load_model(out, "cpu")
    assert info["sample_rate"] == SR and info["segment_samples"] == CROP and info["step"] == 100
    assert info["sha256"] == hashlib.sha256((out / EMA_FILE).read_bytes()).hexdigest()
    assert info["n_parameters"] == sum(p.numel() for p in denoiser.parameters())
    assert not any(p.requires_grad for p in denoiser.parameters()) and not denoiser.training
    same, _ = load_model(out / EMA_FILE, "cpu")  # the weights file works as well as the folder
    x = torch.randn(2, CROP, generator=torch.Generator().manual_seed(0)) * 0.1
    torch.testing.assert_close(denoiser(x, 0.3), same(x, 0.3), rtol=0, atol=0)


def test_save_then_load_gives_identical_outputs(tmp_path):
    cfg = tiny_config()
    model = build_model(cfg.model, cfg.sigma_data)
    with torch.no_grad():  # move away from the initialisation so the test sees the saved values
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    optimizer = torch.optim.Adam(model.parameters())
    save_checkpoint(tmp_path / "c", train_config=cfg.to_dict(), model=model, ema=model, optimizer=optimizer, step=7)
    loaded, info = load_model(tmp_path / "c", "cpu")
    x = torch.randn(3, CROP, generator=torch.Generator().manual_seed(1)) * 0.1
    sigma = torch.tensor([0.01, 0.5, 5.0])
    with torch.no_grad():
        assert torch.equal(model(x, sigma), loaded(x, sigma))
    assert info["step"] == 7


def test_resume_continues_the_loss_curve_exactly(trained, tones_dir, tmp_path):
    _, reference = trained
    out = tmp_path / "resumed"
    first = train(tones_dir, out, tiny_config(steps=6, checkpoint_every=4), device="cpu", progress=False)
    assert len(first) == 6
    resumed = train(tones_dir, out, resume=True, steps=12, device="cpu", progress=False)
    assert [r.step for r in resumed] == list(range(12))
    for a, b in zip(resumed, reference[:12]):
        assert (a.loss, a.lr, a.grad_norm) == (b.loss, b.lr, b.grad_norm)
    assert [r.loss for r in read_loss_csv(out / "loss.csv")] == [r.loss for r in reference[:12]]
    assert json.loads((out / "config.json").read_text())["step"] == 12


def test_a_time_limit_stops_with_a_checkpoint_that_resumes_exactly(trained, tones_dir, tmp_path):
    _, reference = trained
    out, lines = tmp_path / "limited", []
    first = train(tones_dir, out, tiny_config(steps=12), device="cpu", progress=False, log=lines.append,
                  time_limit_s=1e-9)
    assert [r.step for r in first] == [0]  # the step in progress finishes, then the run stops
    assert json.loads((out / "config.json").read_text())["step"] == 1
    assert "stopped at step 1 of 12 (time limit)" in lines[-1] and "--resume" in lines[-1]
    resumed = train(tones_dir, out, resume=True, device="cpu", progress=False)
    assert [(r.loss, r.grad_norm) for r in resumed] == [(r.loss, r.grad_norm) for r in reference[:12]]


def test_sigint_stops_after_the_step_with_a_checkpoint_that_resumes_exactly(trained, tones_dir, tmp_path,
                                                                             monkeypatch):
    import os
    import signal

    import simdps.diffusion.train as train_module

    _, reference = trained
    real_update, calls = train_module._update_ema, []

    def update_then_interrupt(ema, model, decay):  # Ctrl-C arrives during step 3
        real_update(ema, model, decay)
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_module, "_update_ema", update_then_interrupt)
    out, lines = tmp_path / "interrupted", []
    first = train(tones_dir, out, tiny_config(steps=12), device="cpu", progress=False, log=lines.append)
    assert [r.step for r in first] == [0, 1, 2, 3]
    assert json.loads((out / "config.json").read_text())["step"] == 4 and "(SIGINT)" in lines[-1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored
    monkeypatch.setattr(train_module, "_update_ema", real_update)
    resumed = train(tones_dir, out, resume=True, device="cpu", progress=False)
    assert [(r.loss, r.grad_norm) for r in resumed] == [(r.loss, r.grad_norm) for r in reference[:12]]


def test_a_new_run_refuses_an_existing_checkpoint_and_resume_refuses_a_new_config(trained, tones_dir):
    out, _ = trained
    with pytest.raises(SimDPSError, match="--resume"):
        train(tones_dir, out, tiny_config(), device="cpu", progress=False)
    with pytest.raises(SimDPSError, match="config"):
        train(tones_dir, out, tiny_config(), resume=True, device="cpu", progress=False)


def test_optimizer_state_is_read_weights_only(tmp_path, tones_dir):
    out = tmp_path / "run"
    train(tones_dir, out, tiny_config(steps=1), device="cpu", progress=False)
    marker = tmp_path / "code-ran"

    class Exploit:
        def __reduce__(self):
            return (marker.mkdir, ())

    (out / STATE_DIR / "optimizer.pt").write_bytes(pickle.dumps({"state": Exploit()}, protocol=2))
    with pytest.raises(SimDPSError, match="optimizer"):
        train(tones_dir, out, resume=True, steps=2, device="cpu", progress=False)
    assert not marker.exists()


def test_weights_that_do_not_fit_the_config_are_refused(trained, tmp_path):
    out, _ = trained
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((out / "config.json").read_text())
    cfg["train"]["model"]["base_channels"] = 8
    (other / "config.json").write_text(json.dumps(cfg))
    (other / EMA_FILE).write_bytes((out / EMA_FILE).read_bytes())
    with pytest.raises(SimDPSError, match="do not fit"):
        load_model(other, "cpu")
    with pytest.raises(SimDPSError, match="not a checkpoint"):
        load_model(tmp_path, "cpu")


def test_trained_model_inpaints_any_length_with_guidance(trained):
    out, _ = trained
    denoiser, _ = load_model(out, "cpu")
    y = torch.from_numpy(tone(7))[None, :300]
    mask = torch.ones_like(y)
    mask[:, 120:180] = 0
    x = inpaint(denoiser, y, mask, y, preset="simdps-l", steps=3, seed=1, progress=False)
    assert x.shape == y.shape and torch.isfinite(x).all()
    again = inpaint(denoiser, y, mask, y, preset="simdps-l", steps=3, seed=1, progress=False)
    assert torch.equal(x, again)


# ---------------------------------------------------------------- configuration files

def test_bf16_autocast_inpainting_stays_close_to_float32(trained):
    denoiser, _ = load_model(trained[0], "cpu")
    y = torch.from_numpy(tone(7))[None, :2000]
    mask = torch.ones_like(y)
    mask[:, 800:1200] = 0
    kw = dict(steps=6, seed=0, progress=False)
    full = inpaint(denoiser, y, mask, y, **kw)
    half = inpaint(denoiser, y, mask, y, bf16=True, **kw)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    rel = ((half - full).norm() / full.norm()).item()
    assert 0 < rel < 0.05


def test_config_round_trips_through_json_and_reads_partial_toml(tmp_path):
    cfg = tiny_config(maestro_years=(2017, 2018))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    toml = tmp_path / "run.toml"
    toml.write_text('steps = 42\nmaestro_years = [2017, 2018]\n[model]\nbase_channels = 4\n')
    loaded = TrainConfig.load(toml)
    assert loaded.steps == 42 and loaded.maestro_years == (2017, 2018) and loaded.model.base_channels == 4
    assert loaded.model.n_octaves == UNetConfig().n_octaves  # missing keys take the defaults
    (tmp_path / "bad.json").write_text('{"stepz": 3}')
    with pytest.raises(SimDPSError, match="stepz"):
        TrainConfig.load(tmp_path / "bad.json")
    with pytest.raises(SimDPSError, match="sigma_distribution"):
        tiny_config(sigma_distribution="uniform")


# ---------------------------------------------------------------- data

def _maestro_root(tmp_path):
    root = tmp_path / "maestro"
    rows = [("train", 2017), ("train", 2018), ("train", 2009), ("validation", 2017), ("test", 2018)]
    lines = ["canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration"]
    for i, (split, year) in enumerate(rows):
        rel = f"{year}/piece{i}.wav"
        (root / str(year)).mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, tone(i, 0.2), SR)
        lines.append(f'Composer,"Piece, {i}",{split},{year},{year}/piece{i}.midi,{rel},0.2')
    (root / "maestro-v3.0.0.csv").write_text("\n".join(lines) + "\n")
    return root


def test_maestro_root_is_filtered_by_split_and_year(tmp_path):
    root = _maestro_root(tmp_path)
    names = lambda files: sorted(f.name for f in files)  # noqa: E731
    assert names(maestro_files(root, "train")) == ["piece0.wav", "piece1.wav", "piece2.wav"]
    assert names(maestro_files(root, "train", (2017, 2018))) == ["piece0.wav", "piece1.wav"]
    assert names(maestro_files(root, None, (2017,))) == ["piece0.wav", "piece3.wav"]
    assert names(training_files(root, "test")) == ["piece4.wav"]
    with pytest.raises(SimDPSError, match="no recordings match"):
        maestro_files(root, "validation", (2009,))
    (root / "2009" / "piece2.wav").unlink()
    with pytest.raises(SimDPSError, match="missing"):
        maestro_files(root, "train")


def test_folder_listing_and_its_errors(tmp_path, tones_dir):
    assert len(training_files(tones_dir)) == 4
    with pytest.raises(SimDPSError, match="no audio files"):
        training_files(tmp_path)
    with pytest.raises(SimDPSError, match="no such folder"):
        training_files(tmp_path / "absent")


def test_crops_are_a_function_of_seed_and_step(tones_dir):
    sampler = CropSampler(training_files(tones_dir), SR, CROP)
    a, b, c = sampler.batch(4, 0, 5), sampler.batch(4, 0, 5), sampler.batch(4, 0, 6)
    assert a.shape == (4, CROP) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_crops_are_mono_resampled_and_padded(tmp_path):
    t = np.arange(16000) / 16000
    left = np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, 0.5 * left], axis=1)  # mono mix = 0.75 * left
    sf.write(tmp_path / "a16k.wav", stereo, 16000)
    sampler = CropSampler([tmp_path / "a16k.wav"], SR, 2048)
    crop = sampler.batch(1, 0, 0)[0]
    spectrum = np.abs(np.fft.rfft(crop * np.hanning(crop.size)))
    assert np.fft.rfftfreq(crop.size, 1 / SR)[spectrum.argmax()] == pytest.approx(440, abs=SR / 2048)
    assert np.abs(crop).max() == pytest.approx(0.75, abs=0.02)
    sf.write(tmp_path / "short.wav", np.full(100, 0.5), SR)
    short = CropSampler([tmp_path / "short.wav"], SR, CROP).batch(1, 0, 0)[0]
    assert np.allclose(short[:100], 0.5) and np.all(short[100:] == 0)


# ---------------------------------------------------------------- the command

def test_cli_trains_prints_config_and_reports_errors(tones_dir, tmp_path, capsys):
    from simdps.cli.train import main

    main(["--print-config"])
    printed = json.loads(capsys.readouterr().out)
    assert TrainConfig.from_dict(printed) == TrainConfig()

    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(tiny_config(steps=2).to_dict()))
    out = tmp_path / "cli-run"
    main([str(tones_dir), "--out", str(out), "--config", str(config_file), "--no-progress", "--device", "cpu"])
    assert (out / "ema.safetensors").is_file() and json.loads((out / "config.json").read_text())["step"] == 2
    assert "done: step 2" in capsys.readouterr().err
    main([str(tones_dir), "--out", str(out), "--resume", "--steps", "5", "--time-limit", "1e-9", "--no-progress",
          "--device", "cpu"])
    assert "stopped at step 3 of 5 (time limit)" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["step"] == 3

    for argv, message in (
        ([str(tones_dir), "--out", str(out), "--config", str(config_file)], "--resume"),
        ([str(tones_dir), "--out", str(tmp_path / "x"), "--years", "2017"], "MAESTRO"),
        ([str(tones_dir), "--out", str(tmp_path / "x"), "--years", "20x7"], "comma-separated"),
        ([str(tones_dir)], "--out"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and "Traceback" not in err
