"""Print a Markdown table of CamVid runs: best and last-3 val mIoU, epochs, seconds per epoch.

Reads each run's metrics file (``seg.rundir.METRICS_FILE``: the validation history under
``epochs``), so it works on any finished or stopped run directory. Usage:
    python scripts/camvid_table.py outputs/camvid_disjoint/runs [more run dirs or parents]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from seg.metrics import metric_key
from seg.reports.tables import Column, markdown_table
from seg.rundir import METRICS_FILE

#: Thin classes shown beside the means: the ones recipes differ on most.
THIN_CLASSES = ("Pole", "SignSymbol")


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


COLUMNS = [
    Column("row"),
    Column("best", "val mIoU best (epoch)", align="right"),
    Column("last3", "last 3", _percent, "right"),
    Column("val/pixel_accuracy", "pixel acc.", _percent, "right"),
    Column("val/accuracy", "mean class acc.", _percent, "right"),
    *(Column(f"val/iou/{metric_key(name)}", name, _percent, "right") for name in THIN_CLASSES),
    Column("epochs", align="right"),
    Column("per_epoch", "s/epoch", _seconds, "right"),
]


def run_dirs(paths: list[str]) -> list[Path]:
    """The run directories named, or found one level below a parent, in name order."""
    found: list[Path] = []
    for path in map(Path, paths):
        found += (
            [path]
            if (path / METRICS_FILE).exists()
            else sorted(p.parent for p in path.glob(f"*/{METRICS_FILE}"))
        )
    return found


def row(run: Path) -> dict[str, Any]:
    """The table row of one run, named by the run directory's suffix after its timestamp."""
    metrics = json.loads((run / METRICS_FILE).read_text())
    validations = [e for e in metrics["epochs"] if "val/iou" in e]
    best = max(validations, key=lambda e: e["val/iou"])
    last3 = [e["val/iou"] for e in validations[-3:]]
    epochs = metrics["epochs"][-1]["epoch"] + 1
    return {
        **best,
        "row": run.name.split("_", 2)[-1] if run.name.count("_") >= 2 else run.name,
        "best": f"{_percent(best['val/iou'])} ({best['epoch']})",
        "last3": sum(last3) / len(last3),
        "epochs": epochs,
        "per_epoch": metrics["train_seconds"] / epochs,
    }


if __name__ == "__main__":
    print(markdown_table([row(run) for run in run_dirs(sys.argv[1:])], COLUMNS), end="")
