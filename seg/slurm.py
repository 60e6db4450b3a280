"""What a run needs to know about SLURM: its job, and how to put it back in the queue."""

from __future__ import annotations

import logging
import os
import subprocess

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
    log.info("Requeued SLURM job %s: it will continue from last.ckpt in the same run dir", job)
    return True
