"""simdps-eval end to end on synthetic recordings with a tiny random-weight model."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import piano_like
from simdps.cli.eval import main
from simdps.errors import SimDPSError
from simdps.evaluation.excerpts import ExcerptConfig
from simdps.evaluation.metrics import METRICS
from simdps.evaluation.mushra import MushraConfig
from simdps.evaluation.runner import EvalConfig, parse_methods, run_evaluation

SR = 8_000
EXCERPTS = ExcerptConfig(count=2, excerpt_s=3.0, gap_s=1.0, seed=1)


def _repetitive(seed: int) -> np.ndarray:
    """16 s of music that repeats a 4-s phrase, so the track holds good guides for any gap."""
    phrase = piano_like(4.0, SR, seed=seed)
    return np.tile(phrase, 4) + 1e-3 * np.random.default_rng(seed).standard_normal(16 * SR)


@pytest.fixture
def recordings(tmp_path):
    folder = tmp_path / "rec"
    folder.mkdir()
    for k in range(2):
        sf.write(folder / f"piece{k}.wav", 0.5 * _repetitive(k), SR, subtype="PCM_16")
    return folder


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A random-weight CQT U-Net (~5k parameters) saved the way simdps-train saves one."""
    import torch

    from simdps.diffusion.checkpoint import build_model, save_checkpoint
    from simdps.diffusion.unet import UNetConfig

    cfg = UNetConfig(sample_rate=SR, segment_s=2.0, n_octaves=4, bins_per_octave=(4, 4, 4, 4), base_channels=4,
                     channel_mults=(1, 1, 1, 1), dilations=(1,), emb_dim=16, n_fourier=8, group_size=4)
    torch.manual_seed(0)
    model = build_model(cfg, 0.063)
    return save_checkpoint(tmp_path / "tiny_model", train_config={"model": cfg.to_dict(), "sigma_data": 0.063},
                           model=model, ema=model, optimizer=torch.optim.Adam(model.parameters()), step=0)


def test_every_method_is_restored_scored_and_reported_then_resumed(recordings, tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    methods = ("lpc", "sim", "dps", "simdps-l", "auto")
    config = EvalConfig(excerpts=dataclasses.replace(EXCERPTS, count=1), methods=methods,
                        checkpoint=str(tiny_checkpoint), steps=2, notes=False, mushra=MushraConfig(test_id="t"))
    result = run_evaluation(recordings, out, config, progress=False)
    assert result.failures == ()
    assert (result.n_excerpts, result.n_restored, result.n_skipped) == (1, 5, 0)

    manifest = json.loads((out / "excerpts.json").read_text())["excerpts"]
    for e in manifest:
        original, sr = sf.read(out / "audio" / e["excerpt_id"] / "original.wav")
        track, _ = sf.read(e["track"])
        np.testing.assert_array_equal(original, track[e["start_sample"]:e["start_sample"] + e["length_samples"]])
        g0, g1 = e["gap_start_sample"], e["gap_end_sample"]
        for m in methods:
            restored, _ = sf.read(out / "audio" / e["excerpt_id"] / f"{m}.wav")
            assert restored.shape == original.shape
            # Outside the gap the restoration is the original, sample for sample.
            np.testing.assert_array_equal(restored[:g0], original[:g0])
            np.testing.assert_array_equal(restored[g1:], original[g1:])
            assert np.any(restored[g0:g1] != 0)
            facts = json.loads((out / "results" / e["excerpt_id"] / f"{m}.json").read_text())
            assert (facts["guide"] is not None) == (m in ("sim", "simdps-l", "auto"))
            if m in ("dps", "simdps-l"):
                assert facts["w_guide"] == {"dps": 0.0, "simdps-l": 0.15}[m] and facts["w_y"] == 0.3

    with open(result.scores_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(methods) * len(METRICS)
    assert {r["method"] for r in rows} == set(methods)
    note_values = [float(r["value"]) for r in rows if r["metric"].startswith("note_")]
    assert note_values and all(np.isnan(note_values))  # --no-notes: reported as missing

    summary = result.summary_md.read_text()
    assert "| metric | lpc | sim | dps | simdps-l | auto |" in summary
    assert "note metrics missing" in summary
    assert (result.plots_dir / "lsd_db.png").is_file()
    doc = yaml.safe_load(result.mushra_yaml.read_text())
    pages = [p for p in doc["pages"][1] if isinstance(p, dict)]
    assert len(pages) == 1 and list(pages[0]["stimuli"]) == list(methods)

    # A second run finds everything done and only rebuilds the reports (plots are no setting of the results).
    again = run_evaluation(recordings, out, dataclasses.replace(config, plots=False), progress=False)
    assert (again.n_restored, again.n_skipped) == (0, 5)
    assert again.scores_csv.read_text() == result.scores_csv.read_text()


def test_resume_restores_only_what_is_missing(recordings, tmp_path):
    out = tmp_path / "eval"
    config = EvalConfig(excerpts=EXCERPTS, methods=("lpc", "sim"), notes=False, plots=False)
    run_evaluation(recordings, out, config, progress=False)
    manifest = json.loads((out / "excerpts.json").read_text())["excerpts"]
    assert {e["track"] for e in manifest} == {str((recordings / f"piece{k}.wav").resolve()) for k in range(2)}
    first = manifest[0]["excerpt_id"]
    (out / "results" / first / "sim.json").unlink()  # as if interrupted before this result
    sim_before, _ = sf.read(out / "audio" / first / "sim.wav")
    again = run_evaluation(recordings, out, config, progress=False)
    assert (again.n_restored, again.n_skipped) == (1, 3)
    np.testing.assert_array_equal(sf.read(out / "audio" / first / "sim.wav")[0], sim_before)  # deterministic


def test_changed_settings_are_refused_on_resume(recordings, tmp_path):
    out = tmp_path / "eval"
    run_evaluation(recordings, out, EvalConfig(excerpts=EXCERPTS, methods=("lpc",), notes=False, plots=False),
                   progress=False)
    other = EvalConfig(excerpts=dataclasses.replace(EXCERPTS, gap_s=0.5), methods=("lpc",), notes=False)
    with pytest.raises(SimDPSError, match="new --out folder"):
        run_evaluation(recordings, out, other, progress=False)
    with pytest.raises(SimDPSError, match="steps differ"):
        run_evaluation(recordings, out, EvalConfig(excerpts=EXCERPTS, methods=("lpc",), steps=3, notes=False),
                       progress=False)


def test_guides_come_from_the_index_when_it_holds_the_better_match(tmp_path):
    from simdps.retrieval.api import Index

    music = 0.5 * piano_like(16.0, SR, seed=5)  # no repeats: the track itself holds no good guide
    (tmp_path / "rec").mkdir()
    (tmp_path / "corpus").mkdir()
    sf.write(tmp_path / "rec" / "take1.wav", music, SR, subtype="PCM_16")
    # another take: the same music 1.5 s later, after other material (a copy of the recording
    # itself, at the same times, would obey the in-track rule like the recording's own file)
    shift = int(1.5 * SR)
    other_take = np.concatenate([0.5 * piano_like(1.5, SR, seed=6)[:shift], music])
    other_take += 1e-3 * np.random.default_rng(1).standard_normal(other_take.size)
    sf.write(tmp_path / "corpus" / "take2.wav", other_take, SR, subtype="PCM_16")
    Index.build(tmp_path / "corpus", tmp_path / "index")
    config = EvalConfig(excerpts=dataclasses.replace(EXCERPTS, count=1), methods=("sim",),
                        index=str(tmp_path / "index"), notes=False, plots=False)
    result = run_evaluation(tmp_path / "rec", tmp_path / "out", config, progress=False)
    excerpt = json.loads((tmp_path / "out" / "excerpts.json").read_text())["excerpts"][0]
    facts = json.loads((tmp_path / "out" / "results" / excerpt["excerpt_id"] / "sim.json").read_text())
    assert facts["guide"]["source"] == "index" and facts["guide"]["path"].endswith("take2.wav")
    # The other take's gap is found to within a refinement step, so Sim scores far above LPC-like noise.
    gap_start = excerpt["start_sample"] + excerpt["gap_start_sample"]
    assert abs(facts["guide"]["start_sample"] - (gap_start + shift)) <= SR * 0.005
    assert facts["scores"]["snr_db"] > 10.0
    assert result.failures == ()


def test_an_output_folder_inside_the_recordings_is_not_read_as_recordings(recordings):
    out = recordings / "eval"
    config = EvalConfig(excerpts=dataclasses.replace(EXCERPTS, count=4), methods=("lpc",), notes=False, plots=False)
    run_evaluation(recordings, out, config, progress=False)
    (out / "excerpts.json").unlink()  # choose again, now that eval/audio holds WAV files
    (out / "eval_config.json").unlink()
    run_evaluation(recordings, out, config, progress=False)
    manifest = json.loads((out / "excerpts.json").read_text())["excerpts"]
    assert {e["track"] for e in manifest} == {str((recordings / f"piece{k}.wav").resolve()) for k in range(2)}


def test_methods_are_parsed_and_checked():
    assert parse_methods("lpc, SIM,lpc") == ("lpc", "sim")
    assert parse_methods("all") == ("lpc", "sim", "dps", "simdps-l", "simdps-h", "auto")
    with pytest.raises(SimDPSError, match="unknown method"):
        parse_methods("lpc,magic")


def test_cli_runs_and_reports_user_errors_without_traceback(recordings, tmp_path, capsys):
    out = tmp_path / "cli_out"
    main([str(recordings), "--out", str(out), "--excerpts", "1", "--excerpt-s", "3", "--gap-s", "1",
          "--methods", "lpc,sim", "--no-notes", "--no-plots", "--quiet"])
    printed = capsys.readouterr().out
    assert f"summary: {out / 'summary.md'}" in printed
    assert (out / "scores.csv").is_file()

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing"), "--out", str(tmp_path / "x"), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a folder" in err and "Traceback" not in err

    with pytest.raises(SystemExit) as exit_info:
        main([str(recordings), "--out", str(tmp_path / "y"), "--methods", "lpc,nope"])
    assert exit_info.value.code == 2
