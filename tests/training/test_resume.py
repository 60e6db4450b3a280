"""seg.training.resume.resume_config: which config and checkpoint a resumed run continues from,
on run directories written by hand (the real stopped-and-resumed trainings are in test_faults,
training/test_budget and training/test_cluster)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from seg.errors import ConfigError, SegError
from seg.rundir import RunDir
from seg.training.resume import resume_config


def _stopped_run(make_cfg: Callable[..., Any], path: Path, step: int = 7) -> Any:
    """A run directory as a stopped run leaves it: its config, a last checkpoint at ``step``."""
    cfg = make_cfg("logger=tensorboard", output_dir=path)
    run = RunDir.of(path, cfg)
    run.hydra_config.parent.mkdir(parents=True)
    OmegaConf.save(cfg, run.hydra_config)
    run.checkpoints.mkdir(parents=True)
    torch.save({"global_step": step}, run.last_checkpoint)
    return cfg


def test_resume_continues_the_saved_config_with_the_overrides_that_only_change_how_it_runs(
    make_cfg: Callable[..., Any], tmp_path: Path
) -> None:
    saved = _stopped_run(make_cfg, tmp_path / "run")
    asked = make_cfg(f"resume={tmp_path / 'run'}", "trainer.max_epochs=9", "model.optimizer.lr=0.5")
    # Only the overrides passed on (the command line's) reach the saved config.
    cfg, checkpoint = resume_config(asked, [f"resume={tmp_path / 'run'}", "trainer.max_epochs=9"])
    assert checkpoint == RunDir.of(tmp_path / "run").last_checkpoint
    assert cfg.trainer.max_epochs == 9 and cfg.model.optimizer.lr == saved.model.optimizer.lr
    assert cfg.paths.output_dir == str(tmp_path / "run") and cfg.resume == str(tmp_path / "run")
    assert cfg.logger.tensorboard.purge_step == 7  # what the stopped run logged after its checkpoint goes


def test_resume_refuses_what_would_change_what_is_learned_and_a_run_it_cannot_continue(
    make_cfg: Callable[..., Any], tmp_path: Path
) -> None:
    _stopped_run(make_cfg, tmp_path / "run")
    asked = make_cfg(f"resume={tmp_path / 'run'}")
    with pytest.raises(ConfigError, match=r"^model\.optimizer\.lr cannot change when resuming"):
        resume_config(asked, [f"resume={tmp_path / 'run'}", "model.optimizer.lr=0.5"])
    RunDir.of(tmp_path / "run").last_checkpoint.unlink()
    with pytest.raises(SegError, match=r"no .*last\.ckpt to continue from"):
        resume_config(asked, [f"resume={tmp_path / 'run'}"])
    with pytest.raises(SegError, match=r"no \.hydra/config\.yaml there; pass a training run directory"):
        resume_config(make_cfg(f"resume={tmp_path}"), [f"resume={tmp_path}"])


def test_resume_auto_continues_only_a_checkpoint_trained_with_the_same_config(
    make_cfg: Callable[..., Any], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    fresh, checkpoint = resume_config(make_cfg("resume=auto", output_dir=run))
    assert checkpoint is None and fresh.resume is None  # nothing to continue yet
    _stopped_run(make_cfg, run)
    same, checkpoint = resume_config(make_cfg("resume=auto", "trainer.max_epochs=5", output_dir=run))
    assert checkpoint == RunDir.of(run).last_checkpoint and same.resume == str(run)
    other, checkpoint = resume_config(make_cfg("resume=auto", "model.optimizer.lr=0.5", output_dir=run))
    assert checkpoint is None and other.resume is None  # another learning rate: a fresh start
