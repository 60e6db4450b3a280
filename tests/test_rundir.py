"""RunDir: where a run's checkpoints are (from its config), and the best-model rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import compose_train
from omegaconf import OmegaConf

from seg.artifacts import write_json
from seg.errors import SegError
from seg.rundir import RunDir


def _saved_run(path: Path, *overrides: str) -> RunDir:
    """A run directory with Hydra's unresolved config saved, as the command line leaves it."""
    cfg = compose_train(list(overrides))
    path.joinpath(".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, path / ".hydra" / "config.yaml")  # paths.output_dir needs Hydra to resolve
    return RunDir.of(path)


def test_checkpoint_folder_follows_the_checkpoint_callback(tmp_path: Path) -> None:
    assert _saved_run(tmp_path / "a").checkpoints == tmp_path / "a" / "checkpoints"
    moved = _saved_run(tmp_path / "b", "callbacks.model_checkpoint.dirpath=${paths.output_dir}/ckpt")
    assert moved.last_checkpoint == tmp_path / "b" / "ckpt" / "last.ckpt"
    cfg = compose_train([f"callbacks.model_checkpoint.dirpath={tmp_path / 'x'}"])
    assert cfg.callbacks.step_checkpoint.dirpath == str(tmp_path / "x")  # one folder for both


def test_best_checkpoint_is_the_recorded_one_even_after_a_move(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run")
    with pytest.raises(SegError, match="neither a best checkpoint"):
        run.best_checkpoint()
    run.checkpoints.mkdir()
    run.last_checkpoint.write_bytes(b"last")
    assert run.best_checkpoint() == run.last_checkpoint  # stopped before any ranking
    best = run.checkpoints / "best-epoch001.ckpt"
    best.write_bytes(b"best")
    write_json(run.metrics, {"paths": {"best_checkpoint": best}})
    assert run.best_checkpoint() == best
    shutil.move(run.path, tmp_path / "moved")
    assert RunDir.of(tmp_path / "moved").best_checkpoint() == tmp_path / "moved" / "checkpoints" / best.name


def test_model_is_the_torchscript_file_or_a_one_line_error(tmp_path: Path) -> None:
    run = RunDir.of(tmp_path)
    with pytest.raises(SegError, match=r"holds no model\.pt"):
        run.model()
    run.model_file.write_bytes(b"")
    assert run.model() == tmp_path / "model.pt"
