"""The debug configs (conf/debug/): each one does what it says, and says what it changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf
from support import TINY, cli_ok, run_cli

from seg.training.debugging import changes
from seg.training.pipeline import train


def test_changes_lists_set_changed_and_unset_values() -> None:
    plain = OmegaConf.create({"a": 1, "b": {"c": 2, "d": 3}, "k": {"z": 0}})
    debugged = OmegaConf.create({"a": 1, "b": {"c": 5, "e": True}, "k": {"z": None}})
    assert changes(debugged, plain) == [
        "b.c: 2 -> 5",
        "b.e: unset -> true",
        "k.z: 0 -> null",
        "b.d: 3 -> unset",
    ]
    assert changes(plain, plain) == []


@pytest.mark.slow
def test_overfit_drives_train_dice_toward_one(make_cfg: Callable[..., Any]) -> None:
    # The default width and learning rate (the tiny test network fits far more slowly), 64x64 images.
    cfg = make_cfg(
        "debug=overfit", "trainer.max_epochs=60", "model.net.base_channels=16", "model.optimizer.lr=1e-3"
    )
    metrics = train(cfg)
    dice = [epoch["train/dice"] for epoch in metrics["epochs"]]
    assert len(dice) == 60
    assert dice[0] < 0.2 and min(dice[-5:]) > 0.9, dice
    assert metrics["monitor"] == "train/dice" and metrics["best"]["train/dice"] == max(dice)
    assert metrics["paths"]["run_dir"] and (Path(cfg.paths.output_dir) / "model.pt").is_file()


@pytest.mark.slow
def test_limit_runs_a_few_batches_per_split(make_cfg: Callable[..., Any]) -> None:
    cfg = make_cfg("debug=limit", "trainer.max_epochs=2")
    metrics = train(cfg)
    assert [epoch["step"] for epoch in metrics["epochs"]] == [4, 8]  # 4 training batches per epoch
    assert metrics["test"]["test/dice"] >= 0 and metrics["stop_reason"] == "max_epochs=2 reached"


@pytest.mark.slow
def test_profiler_writes_its_report_into_the_run_dir(make_cfg: Callable[..., Any]) -> None:
    cfg = make_cfg("debug=profiler", "trainer.max_epochs=1", "trainer.limit_train_batches=3")
    train(cfg)
    report = (Path(cfg.paths.output_dir) / "fit-profile.txt").read_text()
    assert "run_training_batch" in report and "Total" in report


@pytest.mark.slow
def test_fast_dev_run_prints_its_changes_and_runs_one_batch(tmp_path: Path, data_cache: Path) -> None:
    result = cli_ok(
        [
            "seg.train",
            "debug=fdr",
            *TINY,
            "logger=mlflow",  # Lightning logs nothing in this mode: no tracking run is opened for it
            "name=fdr check",
            f"paths.log_dir={tmp_path}",
            f"paths.data_dir={data_cache}",
        ],
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert "debug=fdr changes" in output
    assert "task_name: train -> debug" in output and "trainer.fast_dev_run: unset -> true" in output
    assert "data.num_workers" not in output  # the command line had already set it to 0: no change
    assert "no logger is built" in output and not (tmp_path / "mlflow").exists()
    (run_dir,) = (tmp_path / "debug" / "runs").iterdir()
    assert run_dir.name.endswith("_fdr-check")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [e["step"] for e in metrics["epochs"]] == [1]
    assert metrics["stop_reason"].startswith("fast_dev_run")


@pytest.mark.slow
def test_debug_default_shows_the_whole_traceback(tmp_path: Path) -> None:
    plain = run_cli(["seg.train", "data.batch_size=0", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    debug = run_cli(
        ["seg.train", "debug=default", "data.batch_size=0", f"paths.log_dir={tmp_path}"], cwd=tmp_path
    )
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "seg.errors.ConfigError: data.batch_size=0 is not valid" in debug.stderr
    assert "trainer.detect_anomaly: unset -> true" in debug.stdout + debug.stderr
