"""``python -m seg.bench``: training and inference speed against a plain loop and the machine's peak."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import seg.config  # noqa: F401  (registers the config resolvers)
from seg.benchmark import BenchConfig, run_bench
from seg.hardware import tune_allocator


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    tune_allocator()
    options = OmegaConf.to_container(cfg, resolve=True)
    fields = set(BenchConfig.__dataclass_fields__)
    bench = BenchConfig(**{k: v for k, v in options.items() if k in fields})
    bench.output_dir = str(Path(HydraConfig.get().runtime.output_dir))
    bench.data_dir = str(cfg.paths.data_dir)
    run_bench(bench)


if __name__ == "__main__":
    main()
