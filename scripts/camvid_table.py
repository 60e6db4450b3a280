"""Print one markdown table row per CamVid run: best and last-3 val mIoU, epochs, seconds per epoch.

Reads each run's ``metrics.json`` (the validation history under ``epochs``), so it works on any
finished or stopped run directory. Usage:
    python scripts/camvid_table.py outputs/camvid_disjoint/runs [more run dirs or parents]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = (
    "| row | val mIoU best (epoch) | last 3 | pixel acc. | mean class acc. | Pole | SignSymbol "
    "| epochs | s/epoch |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def run_dirs(paths: list[str]) -> list[Path]:
    """The run directories named, or found one level below a parent, in name order."""
    found: list[Path] = []
    for path in map(Path, paths):
        found += (
            [path]
            if (path / "metrics.json").exists()
            else sorted(p.parent for p in path.glob("*/metrics.json"))
        )
    return found


def row(run: Path) -> str:
    """The table row of one run, named by the run directory's suffix after its timestamp."""
    metrics = json.loads((run / "metrics.json").read_text())
    validations = [e for e in metrics["epochs"] if "val/iou" in e]
    best = max(validations, key=lambda e: e["val/iou"])
    last3 = [e["val/iou"] for e in validations[-3:]]
    epochs = metrics["epochs"][-1]["epoch"] + 1
    name = run.name.split("_", 2)[-1] if run.name.count("_") >= 2 else run.name

    per_epoch = metrics["train_seconds"] / epochs

    def pct(value: float) -> str:
        return f"{100 * value:.1f}"

    return (
        f"| {name} | {pct(best['val/iou'])} ({best['epoch']}) | {pct(sum(last3) / len(last3))} "
        f"| {pct(best['val/pixel_accuracy'])} | {pct(best['val/accuracy'])} | {pct(best['val/iou/pole'])} "
        f"| {pct(best['val/iou/signsymbol'])} | {epochs} | {per_epoch:.{0 if per_epoch >= 10 else 2}f} |"
    )


if __name__ == "__main__":
    print(HEADER)
    for run in run_dirs(sys.argv[1:]):
        print(row(run))
