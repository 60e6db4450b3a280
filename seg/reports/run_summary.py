"""The lines a finished run ends with: its headline numbers and where every output went."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from seg.loggers import report_lines
from seg.rundir import RunDir

log = logging.getLogger(__name__)


def shown(path: str | os.PathLike[str] | None) -> str:
    """``path`` relative to the working directory when it lies below it, else as it is."""
    if path is None:
        return ""
    absolute = Path(path).resolve()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def log_run_summary(metrics: dict[str, Any], run_dir: RunDir) -> None:
    """Log the headline numbers and where the outputs went."""
    monitor, best = metrics["monitor"], metrics["best"]
    paths = {key: shown(value) for key, value in metrics["paths"].items()}
    lines = [""]
    if best is not None:
        lines.append(
            f"Best {monitor} {best[monitor]:.4f} at epoch {best['epoch']} "
            f"(trained {metrics['train_seconds']:.0f} s)"
        )
    if metrics.get("validation"):
        lines.append(f"Validated on {metrics['validation']['description']}")
    test = metrics["test"] or {}
    if "test/dice" in test:
        lines.append(f"Test dice {test['test/dice']:.4f}, test IoU {test['test/iou']:.4f} (best weights)")
    lines += [
        f"Run dir:         {paths['run_dir']}",
        f"Best checkpoint: {paths['best_checkpoint']}",
        f"TorchScript:     {paths['torchscript']}",
        f"Metrics:         {shown(run_dir.metrics)}",
    ]
    lines += report_lines(metrics.get("loggers") or {}, shown)
    for line in lines:
        log.info(line)
