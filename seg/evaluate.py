"""Score a trained model on a dataset split: per-class Dice and IoU, confusion matrix, samples.

``seg-evaluate run=<training run or model file> [split=test] [data=<dataset>]``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from seg.command import command


@command("evaluate")
def main(cfg: DictConfig) -> float:
    """Evaluate; return the mean Dice (for sweepers)."""
    from seg.inference.evaluation import run_evaluation

    return run_evaluation(cfg)


if __name__ == "__main__":
    main()
