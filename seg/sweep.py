"""Sweeps: a summary table of every job at the end of a multirun, and cores shared between jobs."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from seg.artifacts import atomic_path
from seg.reports import tables
from seg.reports.tables import is_number as _is_number

log = logging.getLogger(__name__)

COLUMNS = (
    "job",
    "overrides",
    "status",
    "best val/dice",
    "best epoch",
    "final val/loss",
    "seconds",
    "run dir",
)


def _job_row(job_dir: Path, varying: set[str]) -> dict[str, Any]:
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    shown = " ".join(o for o in overrides if o.split("=", 1)[0].lstrip("+~") in varying) or " ".join(
        overrides
    )
    row: dict[str, Any] = {"job": job_dir.name, "overrides": shown, "run dir": str(job_dir)}
    metrics_file = job_dir / "metrics.json"
    if not metrics_file.is_file():
        row["status"] = "failed: no metrics.json (see the job's log)"
        return row
    metrics = json.loads(metrics_file.read_text())
    best, final = metrics.get("best") or {}, metrics.get("final") or {}
    status = metrics.get("status", "?")
    if metrics.get("error"):
        status = f"{status}: {metrics['error']}"
    monitor = metrics.get("monitor", "val/dice")
    row.update(
        {
            "status": status,
            "best val/dice": best.get(monitor),
            "best epoch": best.get("epoch"),
            "final val/loss": final.get("val/loss"),
            "seconds": metrics.get("train_seconds"),
        }
    )
    return row


def summarize_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of ``sweep_dir``, the best finished job marked; writes summary.csv/.md."""
    jobs = sorted(
        (p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()),
        key=lambda p: int(p.name) if p.name.isdigit() else p.name,
    )
    if not jobs:
        return []
    per_job = [yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text()) or [] for j in jobs]
    values: dict[str, set[str]] = {}
    for overrides in per_job:
        for o in overrides:
            key, _, value = o.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    varying = {k for k, v in values.items() if len(v) > 1}
    rows = [_job_row(job, varying) for job in jobs]
    finished = [r for r in rows if str(r.get("status")) == "finished" and _is_number(r.get("best val/dice"))]
    best = max(finished, key=lambda r: r["best val/dice"], default=None)
    for row in rows:
        row["best"] = "*" if row is best else ""

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["best", *COLUMNS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(sweep_dir / "summary.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    table = markdown(rows)
    with atomic_path(sweep_dir / "summary.md") as tmp:
        tmp.write_text(table)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table; the best job is marked with a star."""
    columns = [tables.Column(c, fmt="{:.1f}" if c == "seconds" else None) for c in ("best", *COLUMNS)]
    return tables.markdown_table(rows, columns, floats="{:.4f}", nan="nan")


class SweepSummary(Callback):
    """At the end of a multirun, writes ``summary.csv`` and ``summary.md`` in the sweep folder, prints them.

    Failed jobs are rows with their error; the sweep still exits with status 1 so scripts notice.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = summarize_sweep(sweep_dir)
        if not rows:
            return
        print(f"\nSweep summary ({sweep_dir / 'summary.md'}):\n{markdown(rows)}", flush=True)
        failed = [r for r in rows if not str(r.get("status")).startswith("finished")]
        if failed:
            print(f"error: {len(failed)} of {len(rows)} jobs failed (see the table)", flush=True)
            raise SystemExit(1)


def share_cores(parallel_jobs: int, num_workers: int) -> tuple[int, int]:
    """Torch threads and dataloader workers for one of ``parallel_jobs`` jobs sharing this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = cores if parallel_jobs <= 0 else min(parallel_jobs, cores)
    per_job = max(1, cores // jobs)
    return per_job, min(num_workers, max(0, per_job - 1))


def record_failure(output_dir: Path, message: str) -> None:
    """Leave a ``metrics.json`` saying the job failed and why, unless the run wrote its own."""
    from seg.artifacts import write_json

    path = output_dir / "metrics.json"
    if path.is_file():
        metrics = json.loads(path.read_text())
        if metrics.get("error"):
            return
        metrics["error"] = message
    else:
        metrics = {"status": "failed", "error": message}
    write_json(path, metrics)
