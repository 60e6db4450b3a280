"""RunDir: where a run's checkpoints are (from its config), and the best-model rule."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
from omegaconf import OmegaConf
from support import REPO, compose_train

from seg.artifacts import write_json
from seg.errors import SegError
from seg.rundir import EvalDir, RunDir, SweepDir


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


def test_checkpoint_folder_falls_back_to_the_default_layout(tmp_path: Path) -> None:
    """Without a saved config, with a dirpath only Hydra can resolve, or with none set, the
    checkpoints are in ``<run>/checkpoints``; a run started from Python (only
    ``config_resolved.yaml``) and a config without ``paths`` keep the dirpath they name."""
    assert RunDir.of(tmp_path / "bare").checkpoints == tmp_path / "bare" / "checkpoints"
    hydra_only = _saved_run(
        tmp_path / "h", "callbacks.model_checkpoint.dirpath=${hydra:runtime.output_dir}/c"
    )
    assert hydra_only.checkpoints == tmp_path / "h" / "checkpoints"
    unset = _saved_run(tmp_path / "n", "callbacks.model_checkpoint.dirpath=null")
    assert unset.checkpoints == tmp_path / "n" / "checkpoints"
    resolved = tmp_path / "py"
    resolved.mkdir()
    named = {"callbacks": {"model_checkpoint": {"dirpath": str(tmp_path / "elsewhere")}}}
    OmegaConf.save(OmegaConf.create(named), resolved / "config_resolved.yaml")
    assert RunDir.of(resolved).checkpoints == tmp_path / "elsewhere"


def test_sweep_jobs_come_in_job_order_past_nine(tmp_path: Path) -> None:
    """Twelve jobs are 0, 1, ..., 11 (not 0, 1, 10, 11, 2, ...); named folders follow, by name;
    a folder that is no job (no Hydra overrides) is left out."""
    names = [str(i) for i in (11, 3, 0, 10, 1, 2, 9, 4, 5, 8, 6, 7)] + ["b-extra", "a-extra"]
    for name in names:
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text("[]\n")
    (tmp_path / "12").mkdir()  # not a job
    jobs = SweepDir(tmp_path).jobs()
    assert [job.path.name for job in jobs] == [str(i) for i in range(12)] + ["a-extra", "b-extra"]
    assert all(job.checkpoints == job.path / "checkpoints" for job in jobs)


def test_of_trainer_takes_the_checkpoint_callbacks_folder(tmp_path: Path) -> None:
    """The running trainer's run: its ``default_root_dir`` (or the path given) and wherever its
    checkpoint callback writes; a trainer without one, or before Lightning set its folder, is an
    error rather than a guess."""
    callback = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts")
    trainer = pl.Trainer(default_root_dir=tmp_path / "run", callbacks=[callback], logger=False)
    assert RunDir.of_trainer(trainer) == RunDir(tmp_path / "run", tmp_path / "ckpts")
    assert RunDir.of_trainer(trainer, tmp_path / "other").path == tmp_path / "other"
    for unset in (
        pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False),
        pl.Trainer(default_root_dir=tmp_path, logger=False, callbacks=[pl.callbacks.ModelCheckpoint()]),
    ):
        with pytest.raises(RuntimeError, match="no ModelCheckpoint callback with a dirpath"):
            RunDir.of_trainer(unset)


def test_every_entry_of_a_real_run_is_named_by_rundir_and_drawn_in_the_layout_doc(cli_run: Path) -> None:
    run = RunDir.of(cli_run)
    entries = run.entries()
    written = {path.name for path in cli_run.iterdir()}
    assert written <= entries, f"not named by RunDir: {sorted(written - entries)}"
    assert {".hydra", "train.log", "tensorboard", "checkpoints", "model.pt", "metrics.json"} <= written
    layout = (REPO / "docs" / "layout.md").read_text()
    tree = layout.split("## Outputs", 1)[1].split("```")[1]
    drawn = {line.split("── ", 1)[1].split("/")[0].split()[0] for line in tree.splitlines() if "── " in line}
    assert entries - drawn == set(), "docs/layout.md's tree misses these"


def test_no_module_but_rundir_spells_a_run_file_name(tmp_path: Path) -> None:
    run = RunDir(tmp_path, tmp_path / "checkpoints")
    evaluation = EvalDir(tmp_path / "eval" / "test")
    paths = [
        run.hydra_config.parent, run.model_file, run.metrics, run.classes, run.last_checkpoint,
        run.curves, run.val_predictions, run.val_confusion_matrix, run.logger_runs, run.exports,
        run.resolved_config, run.config_tree, run.run_info, evaluation.report, evaluation.confusion_matrix,
    ]  # fmt: skip
    names = sorted({path.name for path in paths})
    assert len(names) == len(paths)
    pattern = re.compile("|".join(rf"(?<![\w.]){re.escape(name)}(?![\w])" for name in names))
    spelled = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted((REPO / "seg").rglob("*.py"))
        if path.name != "rundir.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not spelled, "ask seg.rundir for these paths:\n" + "\n".join(spelled)
