"""SLURM and submitit, simulated on one machine: SIGTERM inside a job, a requeue that resumes in
the same run dir, ``resume=auto``, and submitit's timeout signal and resubmission."""

from __future__ import annotations

import logging
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from support import (
    RESUMABLE,
    WITH_SUPPORT,
    assert_continues_like,
    cli_ok,
    metrics_of,
    start_cli,
    wait_for_checkpoint,
)

JOB_ID = "4242"


@pytest.fixture
def slurm_job(tmp_path: Path) -> dict[str, str]:
    """The environment of task 0 of a one-task SLURM batch job, with a fake ``scontrol`` on PATH
    that records what it was asked to do."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": JOB_ID,
        "SLURM_JOB_NAME": "seg-train",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NNODES": "1",
        "SLURM_NODELIST": "localhost",
    }


def _train_args(logs: Path, data_cache: Path) -> list[str]:
    return ["seg.train", *RESUMABLE, f"paths.log_dir={logs}", f"paths.data_dir={data_cache}"]


def _scontrol_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "scontrol.log"
    return log.read_text().splitlines() if log.is_file() else []


@pytest.mark.slow
def test_sigterm_inside_a_slurm_job_stops_gracefully(
    tmp_path: Path, data_cache: Path, slurm_job: dict[str, str]
) -> None:
    """``scancel`` and preemption send SIGTERM: the run saves everything and does not requeue."""
    process = start_cli(_train_args(tmp_path, data_cache), tmp_path, env=slurm_job)
    run_dir = wait_for_checkpoint(tmp_path / "train" / "runs", process)
    assert run_dir.name == f"slurm-{JOB_ID}"
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)  # well inside SLURM's grace period before SIGKILL
    assert process.returncode == 143, err[-2000:]
    assert (run_dir / "model.pt").is_file()
    assert metrics_of(run_dir)["status"] == "stopped by SIGTERM"
    assert _scontrol_calls(tmp_path) == []


@pytest.mark.slow
def test_slurm_requeue_then_the_resubmitted_job_equals_an_uninterrupted_run(
    tmp_path: Path, data_cache: Path, slurm_job: dict[str, str], uninterrupted: dict[str, Any]
) -> None:
    """``#SBATCH --signal=SIGUSR1@90``: save, requeue; the job that comes back continues the run."""
    args = _train_args(tmp_path, data_cache)
    process = start_cli(args, tmp_path, env=slurm_job)
    run_dir = wait_for_checkpoint(tmp_path / "train" / "runs", process)
    time.sleep(0.2)  # into the second epoch
    process.send_signal(signal.SIGUSR1)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGUSR1, err[-2000:]
    assert _scontrol_calls(tmp_path) == [f"requeue {JOB_ID}"]
    assert metrics_of(run_dir)["status"] == "stopped by SIGUSR1"
    stopped_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 16 <= stopped_at < 64

    # SLURM starts the same batch script again, with the same job id.
    cli_ok(args, cwd=tmp_path, env=slurm_job)
    assert [p.name for p in (tmp_path / "train" / "runs").iterdir()] == [run_dir.name]
    assert_continues_like(run_dir, uninterrupted)
    assert list((run_dir / ".hydra").glob("resumed-*/config.yaml"))


@pytest.mark.slow
def test_resume_auto_starts_fresh_then_continues_only_the_same_config(
    tmp_path: Path, data_cache: Path
) -> None:
    run_dir = tmp_path / "run"
    base = [*RESUMABLE, "trainer.max_epochs=1", f"paths.data_dir={data_cache}", f"hydra.run.dir={run_dir}"]
    cli_ok(["seg.train", *base, "resume=auto"], cwd=tmp_path)
    assert not metrics_of(run_dir)["resumed"]  # nothing to continue: a fresh start

    cli_ok(["seg.train", *base, "resume=auto", "trainer.max_epochs=2"], cwd=tmp_path)
    metrics = metrics_of(run_dir)
    assert metrics["resumed"] and [e["epoch"] for e in metrics["epochs"]] == [0, 1]

    other = cli_ok(["seg.train", *base, "resume=auto", "model.optimizer.lr=0.01"], cwd=tmp_path)
    assert "trained with another model.optimizer.lr; starting fresh" in other.stdout + other.stderr
    assert not metrics_of(run_dir)["resumed"]


@pytest.mark.slow
def test_submitit_timeout_signal_resubmits_the_sweep_job_which_resumes(
    tmp_path: Path, data_cache: Path, uninterrupted: dict[str, Any]
) -> None:
    """submitit's local executor signals the job (USR2) 30 s before its 1-minute limit, as SLURM
    would; the job saves, submitit resubmits the launcher's call, and it continues from last.ckpt
    in the same job dir, ending with the numbers of an uninterrupted run."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    args = [
        "seg.train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1",
        "+hydra.launcher.max_num_timeout=5",
        *RESUMABLE, "+callbacks.slow._target_=support.probes.SlowSteps", "+callbacks.slow.seconds=0.4",
        f"paths.log_dir={tmp_path}", f"paths.data_dir={data_cache}",
    ]  # fmt: skip
    cli_ok(args, cwd=tmp_path, timeout=600, env=WITH_SUPPORT)
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    job_dir = sweep / "0"
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "SIGUSR2" in logs and "Requeued job" in logs
    metrics = metrics_of(job_dir)
    assert metrics["status"] == "finished" and metrics["resumed"]
    assert [p.name for p in sweep.iterdir() if p.name.isdigit()] == ["0"]
    assert metrics["final"]["val/dice"] == pytest.approx(uninterrupted["final"]["val/dice"], abs=1e-6)


# ----------------------------------------------------------------------------- edge cases, no training
def _fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Path:
    """Put an ``scontrol`` running ``script`` first on PATH; the log of its calls is returned."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n{script}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "scontrol.log"


@pytest.fixture
def no_slurm(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No SLURM or submitit variables in the environment; the stop state of this process kept."""
    import seg.training.callbacks as callbacks

    for name in list(os.environ):
        if name.startswith(("SLURM_", "SUBMITIT_")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(callbacks, "_stop_asked", None, raising=False)
    return monkeypatch


def test_requeue_names_array_tasks_and_reports_a_failing_scontrol(
    tmp_path: Path, no_slurm: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Array task 3 of job 100 is requeued as ``100_3``; an scontrol that refuses, or none on
    PATH, is a warning and ``False``, not a crash."""
    from seg.training import cluster

    log = _fake_scontrol(tmp_path, no_slurm, "exit 0")
    no_slurm.setenv("SLURM_JOB_ID", "101")
    no_slurm.setenv("SLURM_JOB_NAME", "seg-train")
    no_slurm.setenv("SLURM_ARRAY_JOB_ID", "100")
    no_slurm.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert cluster.job_id() == "100_3" and cluster.requeueable_job()
    assert cluster.requeue()
    assert log.read_text().splitlines() == ["requeue 100_3"]

    _fake_scontrol(tmp_path, no_slurm, 'echo "Job has already finished" >&2; exit 1')
    with caplog.at_level(logging.WARNING, logger="seg.training.cluster"):
        assert not cluster.requeue()
    assert "scontrol requeue 100_3 failed: Job has already finished" in caplog.text
    no_slurm.setenv("PATH", str(tmp_path / "nowhere"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="seg.training.cluster"):
        assert not cluster.requeue()
    assert "could not requeue SLURM job 100_3" in caplog.text


@pytest.mark.parametrize("name", ["bash", "interactive"])
def test_an_interactive_allocation_is_not_a_job_to_requeue(
    tmp_path: Path, no_slurm: pytest.MonkeyPatch, name: str
) -> None:
    """A run started by hand inside ``salloc`` / ``srun --pty bash`` is not the batch job: no job
    id, and a requeue asks scontrol nothing."""
    from seg.training import cluster

    log = _fake_scontrol(tmp_path, no_slurm, "exit 0")
    no_slurm.setenv("SLURM_JOB_ID", "77")
    no_slurm.setenv("SLURM_JOB_NAME", name)
    assert cluster.job_id() is None and not cluster.requeueable_job()
    assert not cluster.requeue()
    assert not log.exists()


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this OS")
def test_sigusr1_outside_slurm_stops_without_requeueing(tmp_path: Path, no_slurm: pytest.MonkeyPatch) -> None:
    """SIGUSR1 in a plain shell stops the run (exit status 128 + 10) but there is no job to put
    back in the queue: scontrol is not called."""
    from seg.training.callbacks import GracefulStop

    log = _fake_scontrol(tmp_path, no_slurm, "exit 0")
    stop = GracefulStop()
    stop._on_signal(signal.SIGUSR1, None)
    assert stop.exit_status == 128 + int(signal.SIGUSR1)
    assert not stop.requeue() and not log.exists()


def test_a_second_ctrl_c_stops_at_once(no_slurm: pytest.MonkeyPatch) -> None:
    """The first Ctrl-C asks for a stop at the batch's end; the second raises at once; a second
    SIGTERM changes nothing."""
    from seg.training.callbacks import GracefulStop

    stop = GracefulStop()
    stop._on_signal(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        stop._on_signal(signal.SIGINT, None)
    term = GracefulStop()
    term._on_signal(signal.SIGTERM, None)
    term._on_signal(signal.SIGTERM, None)
    assert term.exit_status == 128 + int(signal.SIGTERM)


def _ddp_trainer(rank_0_asked: bool, last_batch: bool = False) -> Any:
    """What GracefulStop reads of a trainer: two processes, rank 0's answer to the broadcast."""
    from types import SimpleNamespace

    progress = SimpleNamespace(is_last_batch=last_batch)
    return SimpleNamespace(
        world_size=2,
        strategy=SimpleNamespace(broadcast=lambda value, src: rank_0_asked if src == 0 else value),
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
    )


def test_a_stop_on_rank_0_stops_every_rank_at_the_same_batch(no_slurm: pytest.MonkeyPatch) -> None:
    """Under DDP a rank that got no signal stops when rank 0 did (as SIGTERM); one that got a
    signal rank 0 did not see goes on, so that no rank waits alone; at an epoch's last batch the
    stop waits for the epoch's validation."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from seg.training.callbacks import GracefulStop

    follower = GracefulStop()
    with pytest.raises(SIGTERMException):
        follower.on_train_batch_end(_ddp_trainer(rank_0_asked=True))
    assert follower.exit_status == 128 + int(signal.SIGTERM)
    alone = GracefulStop()
    alone._on_signal(signal.SIGTERM, None)
    alone.on_train_batch_end(_ddp_trainer(rank_0_asked=False))  # no exception: it goes on
    waiting = GracefulStop()
    waiting.on_train_batch_end(_ddp_trainer(rank_0_asked=True, last_batch=True))
