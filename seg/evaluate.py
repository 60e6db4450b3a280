"""``python -m seg.evaluate run_dir=<training run> [split=test]`` or ``model_path=<model> data=<dataset>``."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import seg.config  # noqa: F401  (registers the config resolvers)
from seg.errors import exit_on_user_error
from seg.hardware import tune_allocator
from seg.inference.evaluation import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    """Evaluate; return the mean Dice (for sweepers)."""
    tune_allocator()  # full frames: batches of large activations, allocated anew at every call
    output = Path(HydraConfig.get().runtime.output_dir)
    report = exit_on_user_error(lambda: evaluate(cfg, output))
    return report["mean"]["dice"]


if __name__ == "__main__":
    main()
