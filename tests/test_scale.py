"""Experiments at scale: sweep summaries, reproducibility, DDP, submitit, recipes (Optuna:
training/test_search.py)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from support import REPO, TINY, cli_ok, compose_train, run_cli

from seg.artifacts import write_json
from seg.lightning_module import SegmentationModule
from seg.rundir import RunDir
from seg.training.pipeline import train
from seg.training.sweeps import share_cores, summarize_sweep

SHORT = [
    *[o for o in TINY if not o.startswith(("trainer.max_epochs", "model.optimizer.lr"))],
    "trainer.max_epochs=2",
]


def _sweep_dir(logs: Path) -> Path:
    (sweep,) = (logs / "train" / "multiruns").iterdir()
    return sweep


@pytest.mark.slow
def test_sweep_summary_lists_every_job_and_the_failed_one(tmp_path: Path, data_cache: Path) -> None:
    args = ["seg.train", "-m", "model.optimizer.lr=1e-2,-1,3e-3", *SHORT,
            f"paths.log_dir={tmp_path}", f"paths.data_dir={data_cache}"]  # fmt: skip
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 1  # a job failed: the sweep says so, after running the others
    assert "error: 1 of 3 jobs failed" in result.stdout
    sweep = _sweep_dir(tmp_path)
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["overrides"] for r in rows] == [
        "model.optimizer.lr=0.01",
        "model.optimizer.lr=-1",
        "model.optimizer.lr=0.003",
    ]
    assert rows[1]["status"] == "failed: model.optimizer.lr=-1 is not valid: expected a positive number"
    finished = [r for r in rows if r["status"] == "finished"]
    assert len(finished) == 2 and all(float(r["best val/dice"]) > 0 for r in finished)
    best = max(finished, key=lambda r: float(r["best val/dice"]))
    assert [r["best"] for r in rows if r is best] == ["*"] and sum(r["best"] == "*" for r in rows) == 1
    assert all(r["best epoch"] in ("0", "1") and float(r["seconds"]) > 0 for r in finished)
    assert "| * |" in (sweep / "summary.md").read_text()
    assert "Sweep summary" in result.stdout


@pytest.mark.slow
def test_sweep_summary_names_and_ranks_the_monitored_metric(tmp_path: Path, data_cache: Path) -> None:
    """Under ``monitor=val/iou`` (the CamVid recipes) the column is ``best val/iou``, holds each
    job's best val/iou and marks the job with the highest one."""
    args = ["seg.train", "-m", "model.optimizer.lr=1e-2,3e-3", *SHORT, "trainer.max_epochs=1",
            "callbacks.model_checkpoint.monitor=val/iou", "logger=none",
            f"paths.log_dir={tmp_path}", f"paths.data_dir={data_cache}"]  # fmt: skip
    cli_ok(args, cwd=tmp_path)
    sweep = _sweep_dir(tmp_path)
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert "best val/iou" in rows[0] and "best val/dice" not in rows[0]
    ious = [RunDir.of(sweep / job).read_metrics()["best"]["val/iou"] for job in ("0", "1")]
    assert [float(r["best val/iou"]) for r in rows] == pytest.approx(ious)
    assert [r["best"] for r in rows] == ["*" if iou == max(ious) else "" for iou in ious]
    assert "| best val/iou |" in (sweep / "summary.md").read_text()


def test_sweep_summary_takes_the_direction_from_the_checkpoint_mode(tmp_path: Path) -> None:
    """``mode=min`` (a loss monitored): the lowest value is the best job; unfinished jobs never are."""
    for job, (status, loss) in enumerate([("finished", 0.5), ("finished", 0.2), ("stopped by SIGTERM", 0.1)]):
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / ".hydra" / "overrides.yaml").write_text(f"- model.optimizer.lr={job}\n")
        best = {"epoch": 1, "val/loss": loss}
        write_json(RunDir.of(tmp_path / str(job)).metrics,
                   {"status": status, "monitor": "val/loss", "mode": "min", "best": best})  # fmt: skip
    rows = summarize_sweep(tmp_path)
    assert [r["best val/loss"] for r in rows] == [0.5, 0.2, 0.1]
    assert [r["best"] for r in rows] == ["", "*", ""]
    header = (tmp_path / "summary.md").read_text().splitlines()[0]
    assert "| best val/loss |" in header and "val/dice" not in header


@pytest.mark.slow
def test_same_seed_same_numbers(tmp_path: Path, data_cache: Path) -> None:
    runs = []
    for name in ("a", "b"):
        cfg = compose_train([*SHORT, f"paths.data_dir={data_cache}", f"paths.output_dir={tmp_path / name}",
                             "logger=none", "test_after_training=false"])  # fmt: skip
        runs.append(train(cfg)["epochs"])
    assert runs[0] == runs[1]  # every logged value of every epoch, exactly


def test_run_dir_records_config_commit_and_versions(trained_run: dict) -> None:
    info = json.loads((trained_run["dir"] / "run_info.json").read_text())
    assert info["packages"]["torch"] and info["packages"]["pytorch-lightning"]
    if (REPO / ".git").exists():  # a source checkout: the commit it ran from, one git knows
        commit = info["git"]["commit"]
        assert len(commit) == 40 and isinstance(info["git"]["dirty"], bool)
        known = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"])
        assert known.returncode == 0
    resolved = yaml.safe_load((trained_run["dir"] / "config_resolved.yaml").read_text())
    assert resolved["model"]["optimizer"]["lr"] == pytest.approx(3e-3)
    assert "${" not in (trained_run["dir"] / "config_resolved.yaml").read_text()


def test_git_state_names_the_commit_and_whether_tracked_files_changed(tmp_path: Path) -> None:
    """In a checkout of its own (a copy of provenance.py in a fresh repository): the HEAD commit,
    clean after the commit, still clean with an untracked file, dirty once a tracked file changes;
    and no record at all outside a checkout."""
    repo = tmp_path / "repo"
    (repo / "seg" / "training").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    shutil.copy(REPO / "seg" / "training" / "provenance.py", repo / "seg" / "training" / "provenance.py")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
        ).stdout

    def state() -> dict | None:
        spec = importlib.util.spec_from_file_location(
            "copied_provenance", repo / "seg/training/provenance.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module._git_state()

    assert state() is None  # not a repository yet
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD").strip()
    assert state() == {"commit": head, "dirty": False}
    (repo / "notes.txt").write_text("untracked")
    assert state() == {"commit": head, "dirty": False}
    with (repo / "pyproject.toml").open("a") as file:
        file.write("# edited\n")
    assert state() == {"commit": head, "dirty": True}


@pytest.mark.slow
def test_ddp_validation_equals_one_process_and_only_rank_0_writes(tmp_path: Path, data_cache: Path) -> None:
    # 17 validation images, batch 4: ranks get 3 and 2 batches; nothing is padded or duplicated.
    dropped = ("trainer=", "data.generator.num_val", "trainer.max_epochs")
    overrides = [*[o for o in SHORT if not o.startswith(dropped)],
                 "data.generator.num_val=17", "trainer.max_epochs=1", "data.batch_size=4"]  # fmt: skip
    args = ["seg.train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.precision=32-true", *overrides, f"paths.log_dir={tmp_path}",
            f"paths.data_dir={data_cache}"]  # fmt: skip
    cli_ok(args, cwd=tmp_path)
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ddp_val = metrics["epochs"][0]
    writers = {p.name.split(".")[-2] for p in (run_dir / "tensorboard").glob("events.out.tfevents.*")}
    assert len(writers) == 1  # one process (rank 0) wrote TensorBoard events
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        Path(metrics["paths"]["best_checkpoint"]).name,
        "last.ckpt",
    ]

    cfg = compose_train([*overrides, f"paths.data_dir={data_cache}", "paths.output_dir=unused"])
    datamodule = instantiate(cfg.data)
    module = SegmentationModule.load_from_checkpoint(metrics["paths"]["best_checkpoint"], map_location="cpu")
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, precision="32-true", logger=False, enable_progress_bar=False
    )
    single = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    for key in ("val/dice", "val/iou", "val/pixel_accuracy", "val/dice/background"):
        assert single[key] == pytest.approx(ddp_val[key], abs=1e-6), key


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(tmp_path: Path, data_cache: Path) -> None:
    tiny = [o for o in SHORT if not o.startswith(("data.generator.num_train", "trainer.max_epochs"))]
    args = ["seg.train", "-m", "hydra/launcher=submitit_local", "model.optimizer.lr=1e-2,1e-3", *tiny,
            "data.generator.num_train=32", "trainer.max_epochs=1", f"paths.log_dir={tmp_path}",
            f"paths.data_dir={data_cache}"]  # fmt: skip
    cli_ok(args, cwd=tmp_path)
    sweep = _sweep_dir(tmp_path)
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "finished"
        assert (sweep / job / "model.pt").is_file()
    assert (sweep / ".submitit").is_dir() and (sweep / "summary.md").is_file()


def test_quick_recipe_is_the_defaults_and_slurm_jobs_are_sized_from_the_trainer(data_cache: Path) -> None:
    quick, bare = (
        compose_train(["experiment=quick", "paths.output_dir=x"]),
        compose_train(["paths.output_dir=x"]),
    )
    for key in ("data", "model", "loss", "trainer"):
        assert quick[key] == bare[key], key
    from support import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                     "paths.output_dir=x"]  # fmt: skip
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher._target_.endswith("SlurmLauncher")


@pytest.mark.slow
def test_missing_data_for_the_original_recipe_is_one_line(tmp_path: Path) -> None:
    result = run_cli(["seg.train", "experiment=original", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "error: data.root data/cityscapes_pairs does not exist" in result.stderr


def test_parallel_jobs_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """On 16 usable cores: two jobs get 8 threads each and keep their 4 workers (at most 7, one
    core left for the step); three get 5 (16 // 3) and 4 workers; four jobs asking for 8 workers
    get 4 threads and 3; 0 (as many jobs as cores) or more jobs than cores get one thread and no
    workers."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert share_cores(parallel_jobs=2, num_workers=4) == (8, 4)
    assert share_cores(parallel_jobs=3, num_workers=4) == (5, 4)
    assert share_cores(parallel_jobs=4, num_workers=8) == (4, 3)
    assert share_cores(parallel_jobs=1, num_workers=0) == (16, 0)
    assert share_cores(parallel_jobs=0, num_workers=2) == (1, 0)
    assert share_cores(parallel_jobs=40, num_workers=2) == (1, 0)
