"""``python -m seg.check_data data=<name> data.root=DIR``: check a dataset before training on it."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

import seg.config  # noqa: F401  (registers the config resolvers)
from seg.artifacts import write_json
from seg.data.checks import blocking_problems, check_splits, format_report
from seg.errors import SegError, exit_on_user_error
from seg.viz import save_class_histogram

log = logging.getLogger(__name__)


def check_data(cfg: DictConfig, output_dir: Path) -> list[str]:
    """Check every split, print the report, write ``class_histogram.png`` and ``report.json``.

    Returns the reasons the data cannot be trained on (empty when it can).
    """
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    reports = check_splits(datamodule)
    names = datamodule.class_names
    for report in reports:
        print(format_report(report, names, datamodule.ignore_index), flush=True)
    shares = {
        r.split: (r.pixels / max(int(r.pixels.sum()) + r.ignored, 1)).tolist()
        for r in reports
        if r.pixels is not None and r.samples
    }
    chart = save_class_histogram(output_dir / "class_histogram.png", names, shares, datamodule.palette)
    write_json(
        output_dir / "report.json",
        {
            r.split: {
                "samples": r.samples,
                "sizes": {f"{w}x{h}": n for (w, h), n in r.sizes.items()},
                "pixels": dict(zip(names, r.pixels.tolist(), strict=True)) if r.pixels is not None else None,
                "ignored_pixels": r.ignored,
                "problems": [{"kind": p.kind, "path": p.path, "message": p.message} for p in r.problems],
            }
            for r in reports
        },
    )
    print(f"Class histogram: {chart}\nReport:          {output_dir / 'report.json'}", flush=True)
    return blocking_problems(reports)


@hydra.main(version_base="1.3", config_path="../conf", config_name="check_data")
def main(cfg: DictConfig) -> None:
    reasons = exit_on_user_error(lambda: check_data(cfg, Path(HydraConfig.get().runtime.output_dir)))
    if reasons:
        exit_on_user_error(lambda: _fail(reasons))
    print("OK: the data can be trained on.")


def _fail(reasons: list[str]) -> None:
    raise SegError(
        f"{len(reasons)} problem(s) found, the data cannot be trained on as it is; first: {reasons[0]}"
    )


if __name__ == "__main__":
    main()
