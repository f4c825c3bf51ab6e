"""benchmarks/bench_gpu.py runs where no GPU is: its --tiny mode is the same code on a small model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_smoke_run_on_cpu(bench_gpu, tmp_path):
    out = tmp_path / "gpu.json"
    report = bench_gpu.main(["--device", "cpu", "--tiny", "--steps", "2", "--repeats", "1", "--warmup-steps", "1",
                             "--train-steps", "2", "--batch", "2", "--json", str(out)])
    assert {"unguided", "simdps-l", "unguided-bf16", "simdps-l-bf16"} <= set(report["sampling"])
    assert out.exists()
    sampling, training = report["sampling"], report["training"]
    assert sampling["unguided"]["median_s"] > 0 and sampling["simdps-l"]["median_s"] > 0
    assert sampling["steps"] == 2 and sampling["samples"] == 2**13
    assert training["timed_steps"] == 2 and training["steps_per_s"] > 0
    assert training["final_loss"] is not None and training["final_loss"] > 0


def test_gpu_benchmark_can_skip_training_and_choose_precisions(bench_gpu):
    report = bench_gpu.main(["--device", "cpu", "--tiny", "--steps", "2", "--repeats", "1", "--precisions", "bf16",
                             "--skip-training"])
    assert "training" not in report and set(report["sampling"]) >= {"unguided-bf16", "simdps-l-bf16"}
    assert "simdps-l" not in report["sampling"]
    with pytest.raises(SystemExit):
        bench_gpu.main(["--device", "cpu", "--tiny", "--precisions", "fp16"])


def test_gpu_profiler_script_runs_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("profile_gpu", ROOT / "benchmarks" / "profile_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--device", "cpu", "--tiny", "--rows", "5", "--out", str(tmp_path / "prof"),
                 "--variants", "fp32,channels_last", "--repeats", "1"])
    variants = (tmp_path / "prof" / "variants.txt").read_text()
    assert "channels_last unguided" in variants and "fp32   guided" in variants
    for name in ("ops-unguided.txt", "ops-guided.txt", "trace-guided.json"):
        assert (tmp_path / "prof" / name).stat().st_size > 0
    assert "conv" in (tmp_path / "prof" / "ops-guided.txt").read_text()
