"""Where a run is running: a SLURM or submitit job, and its rank among several processes.

A SLURM job is found again after a requeue by its id, and is put back in the queue with
``scontrol``. In a multi-process run (several nodes, devices, or SLURM tasks) every process
starts the same command; only global rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence

from seg.errors import ConfigError
from seg.overrides import split_override

log = logging.getLogger(__name__)

#: Job names SLURM gives interactive allocations (``salloc``, ``srun --pty bash``): runs started
#: by hand in them are not the job itself, so they neither share a run dir nor requeue it.
INTERACTIVE_NAMES = ("bash", "interactive")


def job_id() -> str | None:
    """This batch job's id (``<array job>_<task>`` for array tasks); None outside a batch job.

    A requeued job keeps its id, so the id names a run directory the job finds again.
    """
    if "SLURM_JOB_ID" not in os.environ or os.environ.get("SLURM_JOB_NAME") in INTERACTIVE_NAMES:
        return None
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ["SLURM_JOB_ID"]


def requeueable_job() -> bool:
    """Whether this process is a cluster job that may be stopped and started again: a SLURM batch
    job, or a job that submitit launched (``hydra/launcher=slurm``, or submitit's local executor)."""
    return job_id() is not None or bool(os.environ.get("SUBMITIT_EXECUTOR"))


def requeue() -> bool:
    """Ask SLURM to requeue this job (``scontrol requeue``); True when it accepted."""
    job = job_id()
    if job is None:
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("could not requeue SLURM job %s: %s", job, error)
        return False
    if result.returncode != 0:
        log.warning("scontrol requeue %s failed: %s", job, (result.stderr or result.stdout).strip())
        return False
    log.info("Requeued SLURM job %s: it will continue from its last checkpoint in the same run dir", job)
    return True


#: Variables launchers set to place a process in a multi-process run: Lightning (NODE_RANK on each
#: node, LOCAL_RANK in the processes it starts), torchrun (RANK, GROUP_RANK, LOCAL_RANK) and
#: SLURM's srun (SLURM_PROCID). Any of them above 0 means global rank 0 is another process.
RANK_VARIABLES = ("NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "RANK", "SLURM_PROCID")


def other_rank(environ: Mapping[str, str]) -> str | None:
    """``NAME=value`` of the launcher variable that says this process is not global rank 0, or None."""
    for name in RANK_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return f"{name}={value}"
    return None


def _given(argv: Sequence[str], key: str) -> bool:
    """Whether the command line sets ``key`` (to anything but null)."""
    for arg in argv:
        name, value = split_override(arg)
        if name == key and value not in ("", "null"):
            return True
    return False


def other_rank_overrides(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """Hydra overrides that keep a process other than global rank 0 from writing any file.

    Every node of a multi-node run starts the same command; the run directory is the one global
    rank 0 makes, and only rank 0 writes in it. Hydra in any other process would write its config
    copy and its log file there too, or, resolving its own timestamp a second later, make a second
    run directory. So these processes keep no config copy and log to the console only, and
    unless the run directory is known (``hydra.run.dir=``, ``resume=``, a SLURM job's) their
    Hydra run directory is the working directory: it exists already, so nothing is created.
    """
    if other_rank(environ) is None:
        return []
    overrides = ["hydra.output_subdir=null"]
    if not _given(argv, "hydra/job_logging"):
        overrides.append("hydra/job_logging=stdout")
    # A SLURM job's run dir is named by the job, the same for every task.
    if not (_given(argv, "hydra.run.dir") or _given(argv, "resume") or job_id()):
        overrides.append("hydra.run.dir=.")
    return overrides


def check_rank(trainer: Mapping[str, object]) -> None:
    """A rank variable above 0 with a one-process trainer is a stale variable, not a rank: refuse it
    (its run directory would be the working directory, see ``other_rank_overrides``)."""
    variable = other_rank(os.environ)
    if variable and trainer.get("num_nodes", 1) == 1 and trainer.get("devices") == 1:
        name = variable.split("=")[0]
        raise ConfigError(
            f"{variable} says this process is one of several, but trainer.num_nodes and "
            f"trainer.devices are 1; unset {name}, or start every node with trainer=ddp "
            "trainer.num_nodes=<nodes>"
        )
