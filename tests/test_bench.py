"""A fast smoke test of the benchmark (the real numbers live in README and bench.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from seg.benchmark import BenchConfig, run_bench

TINY_BENCH = {
    "base_channels": 4,
    "image_size": 32,
    "batch_size": 2,
    "steps": 2,
    "warmup": 1,
    "matmul_size": 128,
    "memory_image_size": 32,
    "memory_batch_size": 2,
    "memory_steps": 1,
    "data_batches": 2,
    "num_workers": 0,
    "inference_batches": [1, 2],
    "camvid_root": None,
}


@pytest.mark.slow
def test_bench_measures_every_variant(tmp_path: Path, data_cache: Path) -> None:
    variants = ["reference", "lightning-same", "seg-default", "data", "inference", "memory"]
    cfg = BenchConfig(**TINY_BENCH, variants=variants, output_dir=str(tmp_path), data_dir=str(data_cache))
    results = run_bench(cfg, progress=lambda _: None)
    rows = {row["name"]: row for row in results["rows"]}
    assert {"reference", "lightning-same", "seg-default", "data synthetic"} <= set(rows)
    assert {"inference eager b1", "inference torchscript b2", "memory 32-true"} <= set(rows)
    assert rows["reference"]["ratio"] == 1.0
    for name in ("reference", "lightning-same", "seg-default"):
        assert rows[name]["images_per_s"] > 0 and 0 < rows[name]["peak_fraction"] < 10
    assert rows["data synthetic"]["ratio"] > 0
    assert results["train_step_gflop_per_image"] > 0
    assert json.loads((tmp_path / "bench.json").read_text())["machine"]["cores"] >= 1
    assert "| seg-default |" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
def test_bench_command_line(tmp_path: Path) -> None:
    overrides = [f"{k}={v}" for k, v in TINY_BENCH.items() if k != "camvid_root"]
    result = run_cli(
        [
            "seg.bench",
            *overrides,
            "camvid_root=null",
            "variants=[reference,inference]",
            f"paths.log_dir={tmp_path}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| reference |" in result.stdout
    (run,) = (tmp_path / "bench" / "runs").iterdir()
    assert (run / "bench.json").is_file() and (run / "bench.md").is_file()
