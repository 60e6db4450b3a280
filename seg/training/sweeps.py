"""Sweeps: what ``seg.train`` runs, each job of a multirun, the value sweepers optimise, the
summary table at the end, and cores shared between parallel jobs."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from seg.artifacts import atomic_path, write_json
from seg.errors import SegError, install_hint, user_message
from seg.hardware import usable_cores
from seg.metrics import DEFAULT_MONITOR
from seg.overrides import override_key, split_override
from seg.reports import tables
from seg.rundir import METRICS_FILE, RunDir, SweepDir
from seg.training.callbacks import stop_asked
from seg.training.cluster import check_rank
from seg.training.debugging import report_debug_changes
from seg.training.pipeline import train

log = logging.getLogger(__name__)

#: The columns of the summary; ``best <monitor>`` goes after ``status`` (see ``columns``).
COLUMNS = (
    "job",
    "overrides",
    "status",
    "best epoch",
    "final val/loss",
    "seconds",
    "run dir",
)


def columns(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The summary's columns: ``COLUMNS`` with ``best <monitor>`` for each metric the jobs monitored."""
    monitors = dict.fromkeys(row["monitor"] for row in rows if row.get("monitor"))
    best = tuple(f"best {monitor}" for monitor in monitors) or ("best value",)
    return (*COLUMNS[:3], *best, *COLUMNS[3:])


def _job_row(job: RunDir, varying: set[str]) -> dict[str, Any]:
    overrides = yaml.safe_load(job.overrides.read_text()) or []
    shown = " ".join(o for o in overrides if override_key(o) in varying) or " ".join(overrides)
    row: dict[str, Any] = {"job": job.path.name, "overrides": shown, "run dir": str(job.path)}
    metrics = job.read_metrics()
    if metrics is None:
        row["status"] = f"failed: no {METRICS_FILE} (see the job's log)"
        return row
    best, final = metrics.get("best") or {}, metrics.get("final") or {}
    status = metrics.get("status", "?")
    if metrics.get("error"):
        status = f"{status}: {metrics['error']}"
    monitor = metrics.get("monitor", DEFAULT_MONITOR)
    row.update(
        {
            "status": status,
            "monitor": monitor,
            "mode": metrics.get("mode", "max"),
            "score": best.get(monitor),
            f"best {monitor}": best.get(monitor),
            "best epoch": best.get("epoch"),
            "final val/loss": final.get("val/loss"),
            "seconds": metrics.get("train_seconds"),
        }
    )
    return row


def summarize_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of ``sweep_dir``, the best finished job marked; writes the summary.

    A job's score is the best value of the metric its checkpoint callback monitored, and "best"
    follows that callback's ``mode`` (max or min). Jobs that monitored different metrics are not
    compared: no job is marked then.
    """
    sweep = SweepDir(sweep_dir)
    jobs = sweep.jobs()
    if not jobs:
        return []
    per_job = [yaml.safe_load(j.overrides.read_text()) or [] for j in jobs]
    values: dict[str, set[str]] = {}
    for overrides in per_job:
        for o in overrides:
            key, value = split_override(o)
            values.setdefault(key, set()).add(value)
    varying = {k for k, v in values.items() if len(v) > 1}
    rows = [_job_row(job, varying) for job in jobs]
    finished = [r for r in rows if str(r.get("status")) == "finished" and tables.is_number(r.get("score"))]
    best = None
    if len({(r["monitor"], r["mode"]) for r in finished}) == 1:
        pick = min if finished[0]["mode"] == "min" else max
        best = pick(finished, key=lambda r: r["score"])
    for row in rows:
        row["best"] = "*" if row is best else ""

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["best", *columns(rows)], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(sweep.summary_csv) as tmp:
        tmp.write_text(buffer.getvalue())
    table = markdown(rows, columns(rows))
    with atomic_path(sweep.summary_md) as tmp:
        tmp.write_text(table)
    return rows


def markdown(rows: list[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """The rows as a Markdown table; the best job is marked with a star."""
    shown = [tables.Column(c, fmt="{:.1f}" if c == "seconds" else None) for c in ("best", *columns)]
    return tables.markdown_table(rows, shown, floats="{:.4f}", nan="nan")


class SweepSummary(Callback):
    """At the end of a multirun, writes the summary (``SweepDir``) in the sweep folder, prints it.

    Failed jobs are rows with their error; the sweep still exits with status 1 so scripts notice.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = SweepDir(Path(config.hydra.sweep.dir))
        if not sweep.path.is_dir():
            return
        rows = summarize_sweep(sweep.path)
        if not rows:
            return
        print(f"\nSweep summary ({sweep.summary_md}):\n{markdown(rows, columns(rows))}", flush=True)
        failed = [r for r in rows if not str(r.get("status")).startswith("finished")]
        if failed:
            print(f"error: {len(failed)} of {len(rows)} jobs failed (see the table)", flush=True)
            raise SystemExit(1)


def share_cores(parallel_jobs: int, num_workers: int) -> tuple[int, int]:
    """Torch threads and dataloader workers for one of ``parallel_jobs`` jobs sharing this machine."""
    cores = usable_cores()
    jobs = cores if parallel_jobs <= 0 else min(parallel_jobs, cores)
    per_job = max(1, cores // jobs)
    return per_job, min(num_workers, max(0, per_job - 1))


def record_failure(output_dir: Path, message: str) -> None:
    """Leave the run's metrics saying the job failed and why, unless the run wrote its own."""
    run_dir = RunDir.of(output_dir)
    metrics = run_dir.read_metrics()
    if metrics is None:
        metrics = {"status": "failed", "error": message}
    elif metrics.get("error"):
        return
    else:
        metrics["error"] = message
    write_json(run_dir.metrics, metrics)


def objective(metrics: dict[str, Any]) -> float:
    """The value sweepers optimise: the best monitored score (``val/dice``), NaN if there is none."""
    best = metrics.get("best")
    return float("nan") if not best else float(best[metrics["monitor"]])


def run_job(cfg: DictConfig) -> float:
    """What ``seg.train`` runs: one training, or one job of a multirun (``-m``); returns the best
    monitored value, which a Hydra sweeper optimises."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    check_rank(cfg.trainer)
    report_debug_changes(cfg, overrides)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return sweep_job(cfg, overrides)
    return objective(train(cfg, overrides))


def run_search(cfg: DictConfig) -> float | None:
    """What ``seg.search`` runs: the Optuna study of ``seg.training.search`` (Optuna comes with the
    sweep extra); returns the best trial's value."""
    try:
        from seg.training.search import search
    except ModuleNotFoundError as error:
        if error.name != "optuna":
            raise
        raise SegError(f"seg.search needs Optuna, in the sweep extra: {install_hint('sweep')}") from None
    return search(cfg)


def sweep_job(
    cfg: DictConfig,
    overrides: Sequence[str],
    callbacks: Sequence[pl.Callback] = (),
    planned: tuple[type[Exception], ...] = (),
) -> float:
    """One job of a multirun (or trial of ``seg.search``): a failure is recorded and reported, and
    the other jobs go on.

    Every job is tagged ``sweep:<sweep dir name>`` and named ``<sweep dir name>/<job number>``
    in the loggers, so a tracker groups the jobs of one sweep. ``callbacks`` join the trainer's;
    an exception of a ``planned`` type (a pruned trial) is no failure: it is raised to the caller.
    """
    asked = stop_asked()
    if asked is not None:  # Ctrl-C in an earlier job's last batches: no more jobs
        log.info("%s stopped the sweep: no more jobs start", asked.name)
        raise SystemExit(128 + int(asked))
    hydra_cfg = HydraConfig.get()
    sweep = Path(hydra_cfg.sweep.dir).name
    cfg.tags = [*(cfg.get("tags") or []), f"sweep:{sweep}"]
    cfg.name = f"{sweep}/{hydra_cfg.job.num}"
    parallel = hydra_cfg.launcher.get("n_jobs")
    if parallel is not None:  # jobs share this machine (joblib): do not oversubscribe its cores
        threads, workers = share_cores(int(parallel), int(cfg.data.num_workers))
        torch.set_num_threads(threads)
        cfg.data.num_workers = workers
    try:
        return objective(train(cfg, overrides, callbacks))
    except planned:
        raise
    except SegError as error:
        message = user_message(error)
        log.error("error: %s", message, exc_info=bool(cfg.get("full_traceback")))
    except Exception as error:  # a crash in one job must not stop the sweep
        log.exception("job failed")
        message = f"{type(error).__name__}: {error}"
    record_failure(Path(hydra_cfg.runtime.output_dir), message)
    return math.nan
