"""Run-wide options: early stopping, the config tree, run names and tags (sweeps included)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seg.training.pipeline import train


@pytest.mark.slow
def test_early_stopping_stops_and_keeps_the_best_weights(
    make_cfg: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # No epoch can beat the first by 0.5 Dice: patience 1 stops the run after its second epoch.
    cfg = make_cfg("callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=0.5")
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert len(metrics["epochs"]) == 2 and cfg.trainer.max_epochs == 10
    assert metrics["status"] == "finished"
    assert metrics["stop_reason"].startswith(
        "early stopping at epoch 1: Monitored metric val/dice did not improve"
    )
    assert Path(metrics["paths"]["best_checkpoint"]).is_file() and (run_dir / "model.pt").is_file()
    assert metrics["test"]["test/dice"] >= 0

    # The config tree was printed first and saved beside the outputs.
    tree = (run_dir / "config_tree.txt").read_text()
    assert tree.startswith("config\n") and "early_stopping" in tree and "patience: 1" in tree
    assert "patience: 1" in capsys.readouterr().out


@pytest.mark.slow
def test_early_stopping_is_off_and_the_tree_optional(make_cfg: Callable[..., Any]) -> None:
    cfg = make_cfg("trainer.max_epochs=2", "print_config=false", "logger=none")
    metrics = train(cfg)
    assert len(metrics["epochs"]) == 2 and metrics["stop_reason"] == "max_epochs=2 reached"
    assert not (Path(cfg.paths.output_dir) / "config_tree.txt").exists()


@pytest.mark.slow
def test_stop_reason_names_the_time_budget(make_cfg: Callable[..., Any]) -> None:
    cfg = make_cfg("trainer.max_time=00:00:00:02", "logger=none", "print_config=false")
    metrics = train(cfg)
    assert metrics["status"] == "finished" and len(metrics["epochs"]) < 10
    assert metrics["stop_reason"].startswith("max_time reached after")
    assert (Path(cfg.paths.output_dir) / "model.pt").is_file()


@pytest.mark.slow
def test_plateau_scheduler_divides_the_rate_when_val_dice_stalls(
    make_cfg: Callable[..., Any], tmp_path: Path
) -> None:
    """``scheduler=plateau`` against the rule worked by hand on the run's own val/dice history:
    an epoch that does not beat the best by 0.2 (absolute) divides the rate by 10 (patience 0).
    Six epochs cannot all improve by 0.2 (Dice <= 1), so at least one division must happen."""
    record = tmp_path / "lr"
    cfg = make_cfg(
        "scheduler=plateau", "scheduler.scheduler.patience=0", "+scheduler.scheduler.threshold_mode=abs",
        "+scheduler.scheduler.threshold=0.2", "trainer.max_epochs=6", "data.generator.num_train=32",
        "trainer.precision=32-true", "logger=none", "print_config=false",
        "+callbacks.lr_record._target_=support.probes.RecordLearningRate",
        f"+callbacks.lr_record.path={record}",
    )  # fmt: skip
    metrics = train(cfg)
    steps = [line.split() for line in Path(f"{record}.rank0").read_text().splitlines()]
    per_epoch = len(steps) // 6
    logged = [float(steps[e * per_epoch][1]) for e in range(6)]
    expected, best, rate = [], -1.0, 3e-3
    for epoch in metrics["epochs"]:
        expected.append(rate)
        if epoch["val/dice"] > best + 0.2:
            best = epoch["val/dice"]
        else:
            rate /= 10
    assert logged == pytest.approx(expected, rel=1e-9)
    assert logged[-1] < logged[0]
