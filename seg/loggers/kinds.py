"""One adapter per logger kind: how it holds pictures, tables, files, hyperparameters and a run's end."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pytorch_lightning import loggers as pl_loggers
from pytorch_lightning.loggers.logger import Logger

from seg.artifacts import atomic_path
from seg.reports import tables

log = logging.getLogger(__name__)


def _markdown(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table given as lists (one per row) through the project's Markdown writer."""
    return tables.markdown_table(
        [dict(zip(columns, row, strict=True)) for row in rows], columns, floats="{:.4f}"
    )


def _csv_text(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def _file_name(key: str) -> str:
    return key.replace("/", "_")


class _Kind:
    """How one logger kind holds what Lightning has no common call for. By default: nothing,
    and hyperparameters and scores through Lightning's generic calls."""

    name = "logger"

    def image(self, logger: Any, key: str, image: np.ndarray, step: int) -> None:
        pass

    def table(self, logger: Any, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        pass

    def files(self, logger: Any, run_dir: Path, names: Sequence[str]) -> None:
        pass

    def hparams(self, logger: Any, params: dict[str, Any], scores: dict[str, float], step: int) -> None:
        logger.log_hyperparams(params)
        logger.log_metrics(scores, step)

    def finish(self, logger: Any, status: str) -> None:
        logger.finalize("success" if status == "finished" else "failed")

    def where(self, logger: Any) -> Any:
        return None


class _TensorBoard(_Kind):
    name = "tensorboard"

    def image(self, logger: Any, key: str, image: np.ndarray, step: int) -> None:
        logger.experiment.add_image(key, image, step, dataformats="HWC")

    def table(self, logger: Any, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        logger.experiment.add_text(key, _markdown(columns, rows))

    def hparams(self, logger: Any, params: dict[str, Any], scores: dict[str, float], step: int) -> None:
        logger.log_hyperparams(params, scores)  # the HPARAMS tab: settings beside scores

    def where(self, logger: Any) -> Any:
        return logger.log_dir


class _Csv(_Kind):
    name = "csv"

    def table(self, logger: Any, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        with atomic_path(Path(logger.log_dir) / f"{_file_name(key)}.csv") as tmp:
            tmp.write_text(_csv_text(columns, rows))

    def where(self, logger: Any) -> Any:
        return str(Path(logger.log_dir) / "metrics.csv")


class _MLflow(_Kind):
    name = "mlflow"

    def image(self, logger: Any, key: str, image: np.ndarray, step: int) -> None:
        logger.experiment.log_image(logger.run_id, image, key=key, step=step)

    def table(self, logger: Any, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        logger.experiment.log_text(logger.run_id, _csv_text(columns, rows), f"tables/{_file_name(key)}.csv")

    def files(self, logger: Any, run_dir: Path, names: Sequence[str]) -> None:
        for name in names:
            folder = str(Path(name).parent)
            logger.experiment.log_artifact(
                logger.run_id, str(run_dir / name), None if folder == "." else folder
            )

    def finish(self, logger: Any, status: str) -> None:
        mlflow_status = {"finished": "FINISHED", "failed": "FAILED"}.get(status, "KILLED")
        logger.experiment.set_terminated(logger.run_id, mlflow_status)

    def where(self, logger: Any) -> Any:
        client = logger.experiment
        return {
            "tracking_uri": client.tracking_uri,
            "experiment_id": logger.experiment_id,
            "run_id": logger.run_id,
        }


class _Wandb(_Kind):
    name = "wandb"

    def image(self, logger: Any, key: str, image: np.ndarray, step: int) -> None:
        import wandb

        logger.experiment.log({key: wandb.Image(image, caption=f"epoch {step}")})

    def table(self, logger: Any, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        import wandb

        logger.experiment.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

    def files(self, logger: Any, run_dir: Path, names: Sequence[str]) -> None:
        for name in names:
            logger.experiment.save(str(run_dir / name), base_path=str(run_dir), policy="now")

    def hparams(self, logger: Any, params: dict[str, Any], scores: dict[str, float], step: int) -> None:
        logger.log_hyperparams(params)
        logger.experiment.summary.update(scores)

    def finish(self, logger: Any, status: str) -> None:
        logger.experiment.finish(exit_code=0 if status == "finished" else 1)

    def where(self, logger: Any) -> Any:
        run = logger.experiment
        offline = run.settings.mode in ("offline", "dryrun")
        return {"dir": str(Path(run.dir).parent), "run_id": run.id, "offline": offline, "url": run.url}


_KINDS: list[tuple[type[Logger], _Kind]] = [
    (pl_loggers.TensorBoardLogger, _TensorBoard()),
    (pl_loggers.CSVLogger, _Csv()),
    (pl_loggers.MLFlowLogger, _MLflow()),
    (pl_loggers.WandbLogger, _Wandb()),
]


def kind_of(logger: Logger) -> _Kind:
    return next((kind for cls, kind in _KINDS if isinstance(logger, cls)), _Kind())


def for_each(loggers: Iterable[Logger], what: str, call: Callable[[_Kind, Logger], Any]) -> None:
    """``call`` for every logger; a tracker that fails (a server gone) is a warning, not a lost run."""
    for logger in loggers:
        kind = kind_of(logger)
        try:
            call(kind, logger)
        except Exception as error:
            log.warning("could not send %s to %s: %s: %s", what, kind.name, type(error).__name__, error)
