"""``python -m seg.bench``: training and inference speed against a plain loop and the machine's peak."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import seg.config  # noqa: F401  (registers the config resolvers)
from seg.benchmark import run_bench
from seg.errors import exit_on_user_error
from seg.hardware import tune_allocator


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    tune_allocator()
    exit_on_user_error(lambda: run_bench(cfg))


if __name__ == "__main__":
    main()
