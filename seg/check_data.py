"""Check a dataset before training on it: counts, sizes, mask values, class shares, problems.

``seg-check-data data=<name> data.root=DIR``.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seg.command import command
from seg.errors import exit_on_user_error
from seg.reports.data_report import check_data


@command("check_data")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(lambda: check_data(cfg, Path(HydraConfig.get().runtime.output_dir)))
    print("OK: the data can be trained on.")


if __name__ == "__main__":
    main()
