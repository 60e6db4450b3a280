"""``python -m seg.train [overrides]``: train a segmentation model from the Hydra config."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import seg.config  # noqa: F401  (registers the config resolvers)
from seg.errors import exit_on_user_error
from seg.run import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; return the best monitored value so Hydra sweepers can optimise it."""
    overrides = list(HydraConfig.get().overrides.task)
    metrics = exit_on_user_error(lambda: train(cfg, overrides))
    best = metrics["best"]
    return None if best is None else best[metrics["monitor"]]


if __name__ == "__main__":
    main()
