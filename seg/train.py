"""Train a segmentation model from the Hydra config.

``seg-train [group=option ...] [key=value ...]`` (or ``python -m seg.train``); ``-m`` sweeps.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig

from seg.command import command
from seg.training.cluster import other_rank_overrides


@command("train", extra_overrides=lambda argv: other_rank_overrides(argv, os.environ))
def main(cfg: DictConfig) -> float:
    """Train; return the best monitored value (what a Hydra sweeper would optimise)."""
    from seg.training.sweeps import run_job

    return run_job(cfg)


if __name__ == "__main__":
    main()
