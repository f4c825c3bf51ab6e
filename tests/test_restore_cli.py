"""simdps-restore end to end: every method, mono and stereo, PCM/float/FLAC, bit-exact context,
no click at the splice, and every user error leaving no file behind.

The model is a tiny untrained CQT U-Net saved with the training code's own checkpoint
writer: enough to run the whole diffusion path (plumbing), not to judge quality. Quality of
the splice for the diffusion path is tested with an oracle denoiser through the Python API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import piano_like
from simdps.cli.restore import main
from simdps.evaluation.metrics import edge_flux_ratio_db
from simdps.restore import RestoreConfig, restore
from simdps.restore.window import plan_window, to_model_rate, to_track_rate

SR = 16_000  # track rate; the model runs at 8 kHz, so every test also crosses a resampler
MODEL_SR = 8000


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny model runs faster on one thread than on two contended ones (the CI box is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny CQT U-Net (2 k parameters, 8 kHz, 2-s segments) saved by diffusion.checkpoint."""
    from simdps.diffusion.checkpoint import build_model, save_checkpoint
    from simdps.diffusion.unet import UNetConfig

    cfg = UNetConfig(sample_rate=MODEL_SR, segment_s=2.0, n_octaves=4, bins_per_octave=(8, 8, 8, 8),
                     base_channels=2, channel_mults=(1, 1, 1, 1), blocks_per_level=1, mid_blocks=1,
                     dilations=(1,), emb_dim=16, n_fourier=8, group_size=2)
    torch.manual_seed(0)
    model = build_model(cfg, 0.063)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(folder, train_config={"model": cfg.to_dict(), "sigma_data": 0.063}, model=model, ema=model,
                    optimizer=torch.optim.Adam(model.parameters()), step=0)
    return folder


def repeating_track(channels: int = 1, duration_s: float = 20.0, sr: int = SR) -> np.ndarray:
    """Synthetic music where 2-9 s is repeated exactly at 11-18 s (a gap at 5-6 s has its twin at 14-15 s).

    Shorter tracks hold as much of the repeat as fits."""
    x = np.stack([piano_like(duration_s, sr, seed=10 + c) for c in range(channels)], axis=1)
    if duration_s > 11:
        n = min(7 * sr, x.shape[0] - 11 * sr)
        x[11 * sr:11 * sr + n] = x[2 * sr:2 * sr + n]
    return 0.8 * x


GAPS = [(5.0, 6.0), (16.5, 16.8)]


def damaged(x: np.ndarray, gaps, sr: int = SR) -> np.ndarray:
    """The recording with dropouts (zeros) in the gaps, as a user would bring it."""
    y = x.copy()
    for a, b in gaps:
        y[int(round(a * sr)):int(round(b * sr))] = 0.0
    return y


def outside(n: int, gaps, sr: int = SR) -> np.ndarray:
    keep = np.ones(n, dtype=bool)
    for a, b in gaps:
        keep[int(round(a * sr)):int(round(b * sr))] = False
    return keep


def gap_args(gaps) -> list[str]:
    return [arg for a, b in gaps for arg in ("--gap", f"{a:g}:{b:g}")]


def run_cli(argv: list[str]) -> None:
    main([*argv, "--quiet"])


def run_cli_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        run_cli(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- every method

def test_all_methods_fill_every_gap_and_keep_the_context_bit_exact(tmp_path, checkpoint):
    x = repeating_track()
    path = tmp_path / "track.wav"
    sf.write(path, damaged(x, GAPS), SR, subtype="PCM_16")
    before = path.read_bytes()
    run_cli([str(path), *gap_args(GAPS), "--method", "all", "--checkpoint", str(checkpoint), "--steps", "2",
             "--report", str(tmp_path / "report.json")])
    assert path.read_bytes() == before  # the input is never modified
    original, _ = sf.read(path, dtype="int32")
    keep = outside(len(original), GAPS)
    report = json.loads((tmp_path / "report.json").read_text())
    methods = ["lpc", "sim", "dps", "simdps-l", "simdps-h", "auto"]
    assert sorted(report["outputs"]) == sorted(methods)
    for m in methods:
        out = tmp_path / f"track.restored.{m}.wav"
        info = sf.info(out)
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        restored, _ = sf.read(out, dtype="int32")
        np.testing.assert_array_equal(restored[keep], original[keep])
        assert np.any(restored[~keep] != 0), f"{m} left a gap empty"

    by = {(g["method"], g["gap_start_s"]): g for g in report["gaps"]}
    assert len(report["gaps"]) == len(methods) * len(GAPS)
    # The planted repeat is found at its exact place, and auto trusts it fully (w_guide = 0.15).
    auto = by[("auto", 5.0)]
    assert auto["guide"]["source"] == "track" and auto["guide"]["start_s"] == pytest.approx(14.0, abs=1e-3)
    # (not 0: the second gap, zeroed, lies in the twin's context but not in the gap's own)
    assert auto["match_ratio"] < RestoreConfig().auto.rho_lo and auto["w_guide"] == pytest.approx(0.15)
    assert by[("simdps-h", 5.0)]["w_guide"] == pytest.approx(0.04)
    assert by[("dps", 5.0)]["w_guide"] == 0.0 and by[("dps", 5.0)]["guide"] is None
    assert by[("dps", 16.5)]["seed"] == 1 and by[("dps", 5.0)]["seed"] == 0
    assert report["checkpoint"]["sha256"] == _sha256(checkpoint / "ema.safetensors")
    assert report["config"]["steps"] == 2 and all("fill" in g["timings_s"] for g in report["gaps"])
    # Memory does not grow with the track: the model window is gap + context (rounded up to a
    # power of two for the CQT), never more than two training segments, whatever the track.
    assert 3.0 <= by[("dps", 5.0)]["window_length_s"] <= 2 * 16384 / MODEL_SR + 1e-3

    # Sim pastes the exact twin: inside the gap (past the 10-ms cross-fades) it is the lost audio.
    sim, _ = sf.read(tmp_path / "track.restored.sim.wav")
    truth = np.round(x[:, 0] * 32768) / 32768
    mid = slice(int(5.02 * SR), int(5.98 * SR))
    np.testing.assert_allclose(sim[mid], truth[mid], atol=1.5 / 32768)


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name, subtype, channels", [
    ("s24.wav", "PCM_24", 2),
    ("s16.flac", "PCM_16", 2),
    ("m24.flac", "PCM_24", 1),
    ("float.wav", "FLOAT", 2),
    ("quad.wav", "PCM_16", 4),
])
def test_formats_and_channels_are_kept_and_every_channel_is_restored(tmp_path, checkpoint, name, subtype, channels):
    x = repeating_track(channels)
    path = tmp_path / name
    gaps = [(5.0, 5.6)]
    sf.write(path, damaged(x, gaps), SR, subtype=subtype)
    run_cli([str(path), *gap_args(gaps), "--method", "simdps-l", "--checkpoint", str(checkpoint),
             "--steps", "2", "--report", str(tmp_path / "r.json")])
    out = tmp_path / name.replace(".", ".restored.", 1)
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, channels, subtype, sf.info(path).format)
    dtype = "float32" if subtype == "FLOAT" else "int32"
    original, _ = sf.read(path, dtype=dtype, always_2d=True)
    restored, _ = sf.read(out, dtype=dtype, always_2d=True)
    keep = outside(len(original), gaps)
    np.testing.assert_array_equal(restored[keep], original[keep])
    assert all(np.any(restored[~keep, c] != 0) for c in range(channels))
    guide = json.loads((tmp_path / "r.json").read_text())["gaps"][0]["guide"]
    # One guide position for all channels, each channel guided by its own source channel.
    assert guide["start_s"] == pytest.approx(14.0, abs=1e-3)
    assert guide["channels"] == ("per-channel" if channels > 1 else "mono")


# --------------------------------------------------------------------------- the splice

def _smooth_join(restored: np.ndarray, original: np.ndarray, edge: int, sr: int) -> None:
    """No click at ``edge``: the step there is no outlier among the original's own steps nearby,
    and the spectral flux across the edge stays close to the original's."""
    near = slice(edge - int(0.02 * sr), edge + int(0.02 * sr))
    own = np.max(np.abs(np.diff(original[near])))
    assert abs(restored[edge] - restored[edge - 1]) <= 1.5 * own
    assert edge_flux_ratio_db(original, restored, sr, edge) < 3.0


def test_threads_option_sets_the_model_threads(tmp_path, checkpoint):
    import torch

    before = torch.get_num_threads()
    x = repeating_track()
    path = tmp_path / "track.wav"
    sf.write(path, damaged(x, GAPS[:1]), SR)
    try:
        run_cli([str(path), *gap_args(GAPS[:1]), "--method", "dps", "--checkpoint", str(checkpoint),
                 "--steps", "2", "--threads", "1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "track.restored.wav").exists()


@pytest.mark.parametrize("method", ["lpc", "sim"])
def test_lpc_and_sim_join_the_recording_without_a_click(tmp_path, method):
    x = repeating_track()
    gaps = [(5.0, 6.0)]
    path = tmp_path / "t.wav"
    sf.write(path, damaged(x, gaps), SR, subtype="FLOAT")
    run_cli([str(path), *gap_args(gaps), "--method", method])
    restored, _ = sf.read(tmp_path / "t.restored.wav")
    for edge in (5 * SR, 6 * SR):
        _smooth_join(restored, x[:, 0], edge, SR)


def test_diffusion_output_is_spliced_without_a_click(tmp_path):
    """An oracle denoiser returns a wrong version of the truth (gain 0.7, other notes, DC offset):
    the model's output never equals the recording, and the residual splice must hide that."""
    x = repeating_track()
    other = piano_like(20.0, SR, seed=99)[:, None]
    gap = (5.0, 6.0)
    path = tmp_path / "t.wav"
    sf.write(path, damaged(x, [gap]), SR, subtype="FLOAT")
    info = {"sample_rate": MODEL_SR, "segment_samples": 2 * MODEL_SR, "sha256": "oracle"}
    window = plan_window(5 * SR, 6 * SR, len(x), SR, model_rate=MODEL_SR, segment_samples=2 * MODEL_SR)
    wrong = to_model_rate(0.7 * x + 0.3 * other + 0.02, window)[:, 0]
    target = torch.from_numpy(wrong).float()

    def oracle(x_noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return target[: x_noisy.shape[-1]].expand_as(x_noisy) + 0.0 * x_noisy

    run = restore(path, [gap], method="dps", model=(oracle, info), steps=3, progress=False)
    restored, _ = sf.read(run.outputs["dps"])
    truth = x[:, 0]
    given, _ = sf.read(path)
    keep = outside(len(x), [gap])
    np.testing.assert_array_equal(restored[keep], given[keep])
    for edge in (5 * SR, 6 * SR):
        _smooth_join(restored, truth, edge, SR)
    # Away from the edges the fill is the model's output (band-limited by the 8-kHz model), not the recording.
    expected = to_track_rate(wrong[:, None], window)[:, 0]
    mid = slice(int(5.2 * SR), int(5.8 * SR))
    np.testing.assert_allclose(restored[mid], expected[mid.start - window.start:mid.stop - window.start], atol=1e-4)


# --------------------------------------------------------------------------- guides

def test_guide_audio_is_searched_or_taken_at_a_fixed_position(tmp_path, checkpoint):
    x = repeating_track(duration_s=12.0)
    gap = (5.0, 6.0)
    path = tmp_path / "t.wav"
    sf.write(path, damaged(x, [gap]), SR, subtype="PCM_16")
    # Another "take": the same music 1.5 s later, quieter, at another sample rate, in stereo.
    take_sr = 22_050
    from simdps.audio import resample

    take = np.concatenate([np.zeros((int(1.5 * SR), 1)), x])
    take = resample(take * [0.6, 0.2], SR, take_sr)  # stereo, channels at different levels
    sf.write(tmp_path / "take.wav", take, take_sr, subtype="PCM_16")
    common = [str(path), *gap_args([gap]), "--method", "sim", "--force"]
    run_cli([*common, "--guide-audio", str(tmp_path / "take.wav"), "--report", str(tmp_path / "a.json")])
    guide = json.loads((tmp_path / "a.json").read_text())["gaps"][0]["guide"]
    assert guide["source"] == "guide-audio" and not guide["fixed"]
    assert guide["start_s"] == pytest.approx(6.5, abs=2e-3) and guide["sample_rate"] == take_sr
    assert guide["channels"] == "mono"  # a stereo guide for a mono track: its mono mix
    restored, _ = sf.read(tmp_path / "t.restored.wav")
    mid = slice(int(5.1 * SR), int(5.9 * SR))
    np.testing.assert_allclose(restored[mid], 0.4 * x[mid, 0], atol=0.01)  # the take's mono mix

    run_cli([*common, "--guide-audio", f"{tmp_path / 'take.wav'}@7.25", "--report", str(tmp_path / "b.json")])
    guide = json.loads((tmp_path / "b.json").read_text())["gaps"][0]["guide"]
    assert guide["fixed"] and guide["start_s"] == pytest.approx(7.25, abs=1e-4)


def test_a_guide_source_the_method_does_not_use_is_noted(tmp_path, track_file, capsys):
    run_cli([str(track_file), "--gap", "2:3", "--method", "lpc", "--guide-audio", str(track_file),
             "--report", str(tmp_path / "r.json")])
    assert "--guide-audio not used" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["notes"] == ["--guide-audio not used: method lpc takes no guide"]


def _sim_with_an_index(tmp_path, *, lose_a_file: bool = False) -> tuple[np.ndarray, int, dict]:
    """Restore a 1-s gap of an 8-kHz track with ``--method sim`` from an index whose corpus holds
    the same passage (2-9 s of the track) at 4 s of ``take.wav``; ``lose_a_file`` deletes a second
    corpus file after indexing. Returns the undamaged track, the rate and the report."""
    from simdps import Index

    sr = 8000
    x = 0.8 * piano_like(12.0, sr, seed=21)[:, None]
    gap = (5.0, 6.0)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    take = np.concatenate([piano_like(4.0, sr, seed=22), x[2 * sr:9 * sr, 0], piano_like(3.0, sr, seed=23)])
    sf.write(corpus / "take.wav", take, sr, subtype="PCM_16")
    if lose_a_file:
        sf.write(corpus / "gone.wav", piano_like(20.0, sr, seed=24), sr, subtype="PCM_16")
    Index.build(corpus, tmp_path / "idx")
    if lose_a_file:
        (corpus / "gone.wav").unlink()
    path = tmp_path / "t.wav"
    sf.write(path, damaged(x, [gap], sr), sr, subtype="PCM_16")
    run_cli([str(path), *gap_args([gap]), "--method", "sim", "--index", str(tmp_path / "idx"),
             "--report", str(tmp_path / "r.json")])
    return x, sr, json.loads((tmp_path / "r.json").read_text())


def test_an_indexed_file_gone_since_indexing_is_a_note_not_a_failure(tmp_path, capsys):
    _, _, report = _sim_with_an_index(tmp_path, lose_a_file=True)
    assert report["gaps"][0]["guide"]["path"].endswith("take.wav")
    assert any("gone.wav" in n and "simdps-index build" in n for n in report["notes"]), report["notes"]
    assert "note: 1 indexed file(s) could not be read" in capsys.readouterr().err


def test_index_supplies_the_guide(tmp_path):
    x, sr, report = _sim_with_an_index(tmp_path)
    guide = report["gaps"][0]["guide"]
    assert guide["source"] == "index" and guide["path"].endswith("take.wav")
    assert guide["start_s"] == pytest.approx(7.0, abs=1e-3)
    assert report["notes"] == []
    restored, _ = sf.read(tmp_path / "t.restored.wav")
    mid = slice(int(5.1 * sr), int(5.9 * sr))
    np.testing.assert_allclose(restored[mid], x[mid, 0], atol=2 / 32768)


def test_auto_without_any_candidate_falls_back_to_dps(tmp_path, checkpoint):
    path = tmp_path / "short.wav"
    sf.write(path, damaged(repeating_track(duration_s=6.0), [(2.5, 3.0)]), SR, subtype="PCM_16")
    run_cli([str(path), "--gap", "2.5:3", "--checkpoint", str(checkpoint), "--steps", "2",
             "--report", str(tmp_path / "r.json")])
    rec = json.loads((tmp_path / "r.json").read_text())["gaps"][0]
    assert rec["method"] == "auto" and rec["w_guide"] == 0.0 and rec["guide"] is None


def test_console_script_runs(tmp_path):
    path = tmp_path / "t.wav"
    sf.write(path, repeating_track(duration_s=3.0), SR, subtype="PCM_16")
    exe = os.path.join(os.path.dirname(sys.executable), "simdps-restore")
    done = subprocess.run([exe, str(path), "--gap", "1:1.2", "--method", "lpc", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t.restored.wav").exists()


# --------------------------------------------------------------------------- user errors

def _only(tmp_path, *names) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


@pytest.fixture
def track_file(tmp_path):
    path = tmp_path / "t.wav"
    sf.write(path, repeating_track(duration_s=8.0), SR, subtype="PCM_16")
    return path


@pytest.mark.parametrize("extra, message", [
    (["--gap", "7:9"], "outside"),
    (["--gap", "2:3", "--gap", "2.5:3.5"], "overlap"),
    (["--gap", "2:3", "--index", "no_such_index"], "index"),
    (["--gap", "2:3", "--method", "dps", "--checkpoint", "no_such_ckpt"], "checkpoint"),
    (["--gap", "1:6", "--method", "dps", "--checkpoint", "CKPT"], "longer than the model window"),
    (["--gap", "2:3", "--guide-audio", "missing.wav"], "missing.wav"),
    (["--gap", "2:3", "-o", "t.wav", "--method", "lpc", "--force"], "input"),
])
def test_user_errors_exit_2_with_a_message_and_leave_no_file(tmp_path, track_file, checkpoint, capsys,
                                                             extra, message):
    extra = [str(checkpoint) if a == "CKPT" else (str(tmp_path / a) if a in ("no_such_index", "t.wav") else a)
             for a in extra]
    err = run_cli_error([str(track_file), *extra], capsys)
    assert err.startswith("error: ") and message in err
    _only(tmp_path, "t.wav")


def test_empty_gap_is_a_usage_error(tmp_path, track_file, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli([str(track_file), "--gap", "3:3"])
    assert exc.value.code == 2 and "empty" in capsys.readouterr().err
    _only(tmp_path, "t.wav")


def test_unreadable_and_non_finite_inputs(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    assert "not a readable audio file" in run_cli_error([str(bad), "--gap", "1:2"], capsys)
    assert "no such file" in run_cli_error([str(tmp_path / "none.wav"), "--gap", "1:2"], capsys)
    data = repeating_track(duration_s=3.0).astype(np.float32)
    data[100] = np.inf
    sf.write(tmp_path / "inf.wav", data, SR, subtype="FLOAT")
    assert "NaN/Inf" in run_cli_error([str(tmp_path / "inf.wav"), "--gap", "1:2", "--method", "lpc"], capsys)
    _only(tmp_path, "bad.wav", "inf.wav")


def test_missing_default_model_says_how_to_fix_it(tmp_path, track_file, capsys, monkeypatch):
    import simdps.restore.model as model

    monkeypatch.setattr(model, "DEFAULT_CHECKPOINT", tmp_path / "nothing_here")
    err = run_cli_error([str(track_file), "--gap", "2:3", "--method", "dps"], capsys)
    assert "no default model is installed; pass --checkpoint DIR" in err
    _only(tmp_path, "t.wav")


def test_existing_output_needs_force(tmp_path, track_file, capsys):
    out = tmp_path / "t.restored.wav"
    out.write_bytes(b"keep me")
    err = run_cli_error([str(track_file), "--gap", "2:3", "--method", "lpc"], capsys)
    assert "--force" in err and out.read_bytes() == b"keep me"
    run_cli([str(track_file), "--gap", "2:3", "--method", "lpc", "--force"])
    assert sf.info(out).frames == sf.info(track_file).frames
    _only(tmp_path, "t.wav", "t.restored.wav")


def test_explicit_guided_method_without_a_candidate_is_an_error(tmp_path, capsys):
    path = tmp_path / "short.wav"
    sf.write(path, repeating_track(duration_s=6.0), SR, subtype="PCM_16")
    err = run_cli_error([str(path), "--gap", "2.5:3", "--method", "sim"], capsys)
    assert "no guide candidate" in err and "--index" in err
    _only(tmp_path, "short.wav")


def test_python_api_default_config_matches_the_paper():
    cfg = RestoreConfig()
    assert (cfg.steps, cfg.w_y, cfg.sim_fade_s, cfg.auto.w_max) == (50, 0.3, 0.010, 0.15)
