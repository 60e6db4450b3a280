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


def command_line_data_root() -> str | None:
    """``data.root=DIR`` as given on the command line, if it was: with ``run_dir`` it moves the
    run's saved data to DIR, as ``data_root=DIR`` does (the composed ``data`` is not used then)."""
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "data.root":
            return value
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    """Evaluate; return the mean Dice (for sweepers)."""
    if cfg.run_dir and not cfg.data_root:
        cfg.data_root = command_line_data_root()
    tune_allocator()  # full frames: batches of large activations, allocated anew at every call
    output = Path(HydraConfig.get().runtime.output_dir)
    report = exit_on_user_error(lambda: evaluate(cfg, output))
    return report["mean"]["dice"]


if __name__ == "__main__":
    main()
