"""``python -m seg.train [overrides]``: train a segmentation model from the Hydra config."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import seg.config  # noqa: F401  (registers the config resolvers)
from seg.cluster import check_rank, other_rank_overrides
from seg.debugging import debug_changes
from seg.errors import SegError, exit_on_user_error, user_message
from seg.run import train
from seg.sweep import record_failure, share_cores

log = logging.getLogger(__name__)


def _objective(metrics: dict[str, Any]) -> float:
    """The value sweepers optimise: the best monitored score (``val/dice``), NaN if there is none."""
    best = metrics.get("best")
    return float("nan") if not best else float(best[metrics["monitor"]])


def _sweep_job(cfg: DictConfig, overrides: list[str]) -> float:
    """One job of a multirun: a failure is recorded and reported, and the other jobs go on.

    Every job is tagged ``sweep:<sweep dir name>`` and named ``<sweep dir name>/<job number>``
    in the loggers, so a tracker groups the jobs of one sweep.
    """
    hydra_cfg = HydraConfig.get()
    sweep = Path(hydra_cfg.sweep.dir).name
    cfg.tags = [*(cfg.get("tags") or []), f"sweep:{sweep}"]
    cfg.name = f"{sweep}/{hydra_cfg.job.num}"
    parallel = hydra_cfg.launcher.get("n_jobs")
    if parallel is not None:  # jobs share this machine (joblib): do not oversubscribe its cores
        threads, workers = share_cores(int(parallel), int(cfg.data.num_workers))
        torch.set_num_threads(threads)
        cfg.data.num_workers = workers
    try:
        return _objective(train(cfg, overrides))
    except SegError as error:
        message = user_message(error)
        log.error("error: %s", message, exc_info=bool(cfg.get("full_traceback")))
    except Exception as error:  # a crash in one job must not stop the sweep
        log.exception("job failed")
        message = f"{type(error).__name__}: {error}"
    record_failure(Path(hydra_cfg.runtime.output_dir), message)
    return math.nan


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Train; return the best monitored value so Hydra sweepers (Optuna) can optimise it."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    exit_on_user_error(lambda: check_rank(cfg.trainer))
    full_traceback = bool(cfg.get("full_traceback"))
    if full_traceback:
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then shows errors whole, its own frames too
    debug = hydra_cfg.runtime.choices.get("debug")
    if debug:
        changed = debug_changes(hydra_cfg.job.config_name, overrides, cfg)
        log.info("debug=%s changes %d values:%s", debug, len(changed), "".join(f"\n  {c}" for c in changed))
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, overrides)
    return _objective(exit_on_user_error(lambda: train(cfg, overrides), full_traceback))


if __name__ == "__main__":
    sys.argv += other_rank_overrides(sys.argv[1:], os.environ)  # only global rank 0 writes
    main()
