"""``python -m seg.train [overrides]``: train a segmentation model from the Hydra config."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import seg.config  # noqa: F401  (registers the config resolvers)
from seg.errors import ConfigError, SegError, exit_on_user_error, user_message
from seg.run import train
from seg.sweep import record_failure, share_cores

log = logging.getLogger(__name__)

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
        name, _, value = arg.lstrip("+~").partition("=")
        if name == key and value not in ("", "null"):
            return True
    return False


def other_rank_overrides(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """Hydra overrides that keep a process other than global rank 0 from writing any file.

    Every node of a multi-node run starts the same command; the run directory is the one global
    rank 0 makes, and only rank 0 writes in it. Hydra in any other process would write ``.hydra/``
    and its log file there too, or, resolving its own timestamp a second later, make a second
    run directory. So these processes keep no config copy and log to the console only, and
    unless the command names the run directory (``hydra.run.dir=``, ``resume=``) their Hydra run
    directory is the working directory: it exists already, so nothing is created.
    """
    if other_rank(environ) is None:
        return []
    overrides = ["hydra.output_subdir=null"]
    if not _given(argv, "hydra/job_logging"):
        overrides.append("hydra/job_logging=stdout")
    if not (_given(argv, "hydra.run.dir") or _given(argv, "resume")):
        overrides.append("hydra.run.dir=.")
    return overrides


def _check_other_rank(cfg: DictConfig) -> None:
    """A rank variable above 0 with a one-process trainer is a stale variable, not a rank: refuse it
    (its run directory would be the working directory, see ``other_rank_overrides``)."""
    variable = other_rank(os.environ)
    if variable and cfg.trainer.get("num_nodes", 1) == 1 and cfg.trainer.get("devices") == 1:
        name = variable.split("=")[0]
        raise ConfigError(
            f"{variable} says this process is one of several, but trainer.num_nodes and "
            f"trainer.devices are 1; unset {name}, or start every node with trainer=ddp "
            "trainer.num_nodes=<nodes>"
        )


def _objective(metrics: dict[str, Any]) -> float:
    """The value sweepers optimise: the best monitored score (``val/dice``), NaN if there is none."""
    best = metrics.get("best")
    return float("nan") if not best else float(best[metrics["monitor"]])


def _sweep_job(cfg: DictConfig, overrides: list[str]) -> float:
    """One job of a multirun: a failure is recorded and reported, and the other jobs go on."""
    hydra_cfg = HydraConfig.get()
    parallel = hydra_cfg.launcher.get("n_jobs")
    if parallel is not None:  # jobs share this machine (joblib): do not oversubscribe its cores
        threads, workers = share_cores(int(parallel), int(cfg.data.num_workers))
        torch.set_num_threads(threads)
        cfg.data.num_workers = workers
    try:
        return _objective(train(cfg, overrides))
    except SegError as error:
        message = user_message(error)
        log.error("error: %s", message)
    except Exception as error:  # a crash in one job must not stop the sweep
        log.exception("job failed")
        message = f"{type(error).__name__}: {error}"
    record_failure(Path(hydra_cfg.runtime.output_dir), message)
    return math.nan


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Train; return the best monitored value so Hydra sweepers (Optuna) can optimise it."""
    overrides = list(HydraConfig.get().overrides.task)
    exit_on_user_error(lambda: _check_other_rank(cfg))
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, overrides)
    return _objective(exit_on_user_error(lambda: train(cfg, overrides)))


if __name__ == "__main__":
    sys.argv += other_rank_overrides(sys.argv[1:], os.environ)
    main()
