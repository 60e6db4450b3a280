"""Check a dataset before training on it: counts, sizes, mask values, class shares, problems.

``seg-check-data data=<name> data.root=DIR``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from seg.command import command


@command("check_data")
def main(cfg: DictConfig) -> None:
    from seg.reports.data_report import check_data

    check_data(cfg)


if __name__ == "__main__":
    main()
