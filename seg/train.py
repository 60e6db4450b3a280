"""Train a segmentation model from the Hydra config.

``seg-train [group=option ...] [key=value ...]`` (or ``python -m seg.train``); ``-m`` sweeps.
"""

from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from seg.command import command
from seg.errors import exit_on_user_error
from seg.training.cluster import check_rank, other_rank_overrides
from seg.training.debugging import report_debug_changes
from seg.training.pipeline import train
from seg.training.sweeps import objective, sweep_job


@command("train", extra_overrides=lambda argv: other_rank_overrides(argv, os.environ))
def main(cfg: DictConfig) -> float:
    """Train; return the best monitored value (what a Hydra sweeper would optimise)."""
    overrides = list(HydraConfig.get().overrides.task)
    exit_on_user_error(lambda: check_rank(cfg.trainer))
    full_traceback = bool(cfg.get("full_traceback"))
    if full_traceback:
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then shows errors whole, its own frames too
    report_debug_changes(cfg, overrides)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return sweep_job(cfg, overrides)
    return objective(exit_on_user_error(lambda: train(cfg, overrides), full_traceback))


if __name__ == "__main__":
    main()
