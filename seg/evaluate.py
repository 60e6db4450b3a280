"""Score a trained model on a dataset split: per-class Dice and IoU, confusion matrix, samples.

``seg-evaluate run_dir=<training run> [split=test]`` or ``seg-evaluate model_path=<model> data=<dataset>``.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seg.command import command
from seg.errors import exit_on_user_error
from seg.hardware import tune_allocator
from seg.inference.evaluation import evaluate
from seg.overrides import split_override


def command_line_data_root() -> str | None:
    """``data.root=DIR`` as given on the command line, if it was: with ``run_dir`` it moves the
    run's saved data to DIR (the composed ``data`` is not used then)."""
    for override in HydraConfig.get().overrides.task:
        key, value = split_override(override)
        if key == "data.root":
            return value
    return None


@command("evaluate")
def main(cfg: DictConfig) -> float:
    """Evaluate; return the mean Dice (for sweepers)."""
    data_root = command_line_data_root() if cfg.run_dir else None
    tune_allocator()  # full frames: batches of large activations, allocated anew at every call
    output = Path(HydraConfig.get().runtime.output_dir)
    report = exit_on_user_error(lambda: evaluate(cfg, output, data_root))
    return report["mean"]["dice"]


if __name__ == "__main__":
    main()
