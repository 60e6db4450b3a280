"""Experiment loggers: building them from the config, and sending them what Lightning does not.

Scalars (losses, Dice and IoU per class) reach every logger through Lightning's ``self.log``.
Pictures, tables, files, hyperparameters with the run's best scores, and the end of a run have
no common Lightning call; the functions below are the one place that knows how each logger
kind holds them, and skip a kind that cannot (CSV holds no pictures, TensorBoard no files):

=============  ======================  =====================  ======================
kind           pictures                tables                 files
=============  ======================  =====================  ======================
TensorBoard    IMAGES tab, per epoch   TEXT tab (Markdown)    -
CSV            -                       ``<key>.csv`` beside   -
                                       ``metrics.csv``
MLflow         images, per step        ``tables/<key>.csv``   artifacts
W&B            media, per epoch        ``wandb.Table``        run files
=============  ======================  =====================  ======================

The builders (``mlflow_logger``, ``wandb_logger``, ``CSVLogger``) turn seg's config (run name,
tags, run directory) into each library's terms, stop with one line when a library is missing
or a server does not answer, and continue the same tracking run when a run directory is resumed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import netrc
import os
import secrets
import string
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from pytorch_lightning import loggers as pl_loggers
from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from seg.artifacts import atomic_path, write_json
from seg.errors import ConfigError

log = logging.getLogger(__name__)

#: In the run directory: the MLflow and W&B run ids, so that a resumed run continues those runs.
RUN_IDS_FILE = "logger_runs.json"


# --------------------------------------------------------------------------------------- builders
def _require(module: str, option: str) -> None:
    if find_spec(module) is None:
        raise ConfigError(
            f"{option} needs the {module} package: pip install -e '.[track]' (`make install` includes it), "
            "or choose another logger (logger=tensorboard, logger=csv)"
        )


def _remembered(run_dir: str | os.PathLike[str], kind: str) -> str | None:
    path = Path(run_dir) / RUN_IDS_FILE
    return json.loads(path.read_text()).get(kind) if path.is_file() else None


def _remember(run_dir: str | os.PathLike[str], kind: str, run_id: str) -> None:
    path = Path(run_dir) / RUN_IDS_FILE
    ids = json.loads(path.read_text()) if path.is_file() else {}
    write_json(path, {**ids, kind: run_id})


def run_label(name: str | None, run_dir: str | os.PathLike[str]) -> str:
    """``name``, or the run directory's name (its date and time) when the run has none."""
    return str(name) if name else Path(run_dir).name


def _check_server(uri: str) -> None:
    """Fail in seconds, naming the fix, when no MLflow server answers (its client retries for minutes)."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        raise ConfigError(
            f"logger.mlflow.tracking_uri={uri}: no MLflow server answers there ({error}); start one "
            "(mlflow server --host 127.0.0.1 --port 5000) or leave tracking_uri at its default, a local store"
        ) from None


def mlflow_logger(
    tracking_uri: str,
    experiment_name: str,
    run_dir: str,
    run_name: str | None = None,
    tags: Sequence[str] = (),
    artifact_location: str | None = None,
) -> pl_loggers.MLFlowLogger:
    """Lightning's MLFlowLogger for this run, its MLflow run created (or, on resume, found) now.

    Args:
        tracking_uri: ``sqlite:///<file>`` (a local store, the default) or ``http(s)://host:port``
            (a server, which keeps the artifacts where it was told to).
        experiment_name: the MLflow experiment; created when it does not exist.
        run_dir: this run's directory; the MLflow run id is kept there for ``resume=``.
        run_name: shown as the MLflow run name (default: the run directory's name).
        tags: seg's tags, in the MLflow tag ``tags`` (comma-separated).
        artifact_location: where a local store keeps the artifacts of a new experiment.
    """
    _require("mlflow", "logger=mlflow")
    scheme = urlparse(tracking_uri).scheme
    if scheme in ("http", "https"):
        _check_server(tracking_uri)
    if scheme in ("http", "https") or scheme.startswith("databricks"):
        artifact_location = None  # the server decides
    else:
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if artifact_location and "://" not in artifact_location:
            artifact_location = Path(artifact_location).resolve().as_uri()
    logger = pl_loggers.MLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_label(run_name, run_dir),
        tracking_uri=tracking_uri,
        tags={"tags": ", ".join(tags)} if tags else None,
        artifact_location=artifact_location,
        run_id=_remembered(run_dir, "mlflow"),
    )
    if rank_zero_only.rank == 0:
        try:
            run_id = logger.run_id  # creates the experiment and the run: a bad store fails before training
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"logger.mlflow.tracking_uri={tracking_uri}: {first}") from error
        assert run_id is not None
        _remember(run_dir, "mlflow", run_id)
    return logger


def _wandb_key_set() -> bool:
    """Whether W&B has an API key: ``WANDB_API_KEY``, or the ``.netrc`` entry ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(
    project: str,
    run_dir: str,
    run_name: str | None = None,
    tags: Sequence[str] = (),
    offline: bool | None = None,
    entity: str | None = None,
) -> pl_loggers.WandbLogger:
    """Lightning's WandbLogger for this run; offline unless W&B has an API key, so it never asks for a login.

    Args:
        project: the W&B project.
        run_dir: this run's directory; the W&B run goes to ``<run_dir>/wandb/`` and its id is kept
            there for ``resume=``.
        run_name: shown as the W&B run name (default: the run directory's name).
        tags: W&B tags.
        offline: ``None``: offline when no API key is set (``wandb sync <run folder>`` uploads it
            later) and ``WANDB_MODE`` does not say otherwise; ``True``/``False`` to choose.
        entity: the W&B team or user (default: yours).
    """
    _require("wandb", "logger=wandb")
    if offline is None:
        offline = not _wandb_key_set() and "WANDB_MODE" not in os.environ
    alphabet = string.ascii_lowercase + string.digits  # W&B's own run ids look the same
    run_id = _remembered(run_dir, "wandb") or "".join(secrets.choice(alphabet) for _ in range(8))
    logger = pl_loggers.WandbLogger(
        name=run_label(run_name, run_dir),
        save_dir=run_dir,
        project=project,
        id=run_id,
        tags=list(tags),
        entity=entity,
        **({"mode": "offline"} if offline else {}),
    )
    if rank_zero_only.rank == 0:
        _remember(run_dir, "wandb", run_id)
    return logger


class CSVLogger(pl_loggers.CSVLogger):
    """Lightning's CSVLogger (``<save_dir>/<name>/metrics.csv``, one row per logging step), resumable.

    Lightning starts ``metrics.csv`` afresh when the folder has one. With ``purge_step`` (set by
    ``resume=``) the rows logged before that step are kept and the resumed run appends after
    them, as TensorBoard does with its events.
    """

    def __init__(
        self,
        save_dir: str,
        name: str = "csv",
        version: str = "",
        purge_step: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(save_dir, name=name, version=version, **kwargs)
        self._purge_step = purge_step
        self._kept: list[dict[str, str]] = []
        path = Path(self.log_dir) / "metrics.csv"
        if purge_step is not None and path.is_file():
            with path.open(newline="") as file:
                self._kept = [row for row in csv.DictReader(file) if float(row["step"]) < purge_step]

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        fresh = self._experiment is None
        with warnings.catch_warnings():
            if self._purge_step is not None:  # "previous log files will be deleted": not those kept
                warnings.filterwarnings("ignore", message="Experiment logs directory .* exists")
            writer = super().experiment
        if fresh and self._kept:
            writer.metrics.extend(self._kept)
            writer.save()
            self._kept = []
        return writer


# ------------------------------------------------------------------------- one adapter per kind
def _markdown(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


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


def _kind(logger: Logger) -> _Kind:
    return next((kind for cls, kind in _KINDS if isinstance(logger, cls)), _Kind())


def _each(loggers: Iterable[Logger], what: str, call: Callable[[_Kind, Logger], Any]) -> None:
    """``call`` for every logger; a tracker that fails (a server gone) is a warning, not a lost run."""
    for logger in loggers:
        kind = _kind(logger)
        try:
            call(kind, logger)
        except Exception as error:
            log.warning("could not send %s to %s: %s: %s", what, kind.name, type(error).__name__, error)


# ------------------------------------------------------------------------------------ public API
@rank_zero_only
def log_image(loggers: Iterable[Logger], key: str, image: np.ndarray, step: int) -> None:
    """An ``(H, W, 3)`` uint8 picture, to every logger that holds pictures."""
    _each(loggers, key, lambda kind, logger: kind.image(logger, key, image, step))


@rank_zero_only
def log_table(
    loggers: Iterable[Logger], key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """A table (one list per row), to every logger that holds tables."""
    _each(loggers, key, lambda kind, logger: kind.table(logger, key, columns, rows))


@rank_zero_only
def log_files(loggers: Iterable[Logger], run_dir: Path, names: Sequence[str]) -> None:
    """Files of the run directory, by their paths relative to it, to every logger that holds files."""
    present = [name for name in names if (run_dir / name).is_file()]
    _each(loggers, "files", lambda kind, logger: kind.files(logger, run_dir, present))


@rank_zero_only
def log_hparams(
    loggers: Iterable[Logger], params: Mapping[str, Any], scores: Mapping[str, float], step: int
) -> None:
    """The run's settings beside its best scores (TensorBoard's HPARAMS tab, MLflow params, W&B config)."""
    params, scores = dict(params), dict(scores)
    _each(loggers, "hyperparameters", lambda kind, logger: kind.hparams(logger, params, scores, step))


@rank_zero_only
def finish(loggers: Iterable[Logger], status: str) -> None:
    """End every logger's run: ``status`` is ``finished``, ``failed`` or ``stopped by <signal>``."""
    _each(loggers, "the end of the run", lambda kind, logger: kind.finish(logger, status))


def log_run_outputs(
    loggers: Iterable[Logger],
    run_dir: Path,
    metrics: Mapping[str, Any],
    class_names: Sequence[str],
    curves: Path | None,
    files: Sequence[Path | None],
) -> None:
    """What the run leaves, to every logger that holds it: the curves picture, the per-class scores
    of the best epoch (and of the test) as the table ``per_class``, and ``files`` of the run dir."""
    from PIL import Image

    from seg.metrics import metric_key

    loggers = list(loggers)
    epochs = metrics.get("epochs") or []
    if curves is not None and curves.is_file() and epochs:
        log_image(loggers, "curves", np.asarray(Image.open(curves).convert("RGB")), epochs[-1]["epoch"])
    best, test = metrics.get("best") or {}, metrics.get("test") or {}
    if best:
        stages = [("val", best)] + ([("test", test)] if test else [])
        scores = [(stage, values, m) for stage, values in stages for m in ("dice", "iou", "accuracy")]
        columns = ["class"] + [f"{stage} {m}" for stage, _, m in scores]
        rows = [[name] + [v.get(f"{s}/{m}/{metric_key(name)}") for s, v, m in scores] for name in class_names]
        log_table(loggers, "per_class", columns, rows)
    names = [
        str(path.relative_to(run_dir)) for path in files if path is not None and path.is_relative_to(run_dir)
    ]
    log_files(loggers, run_dir, names)


def where(loggers: Iterable[Logger]) -> dict[str, Any]:
    """Where each logger keeps this run, by kind (for ``metrics.json`` and the final report)."""
    found: dict[str, Any] = {}
    for logger in loggers:
        kind = _kind(logger)
        try:
            location = kind.where(logger)
        except Exception as error:  # a tracker gone must not cost the run's metrics.json
            location = f"unknown ({type(error).__name__}: {error})"
        if location is not None:
            found[kind.name] = location
    return found


def report_lines(locations: Mapping[str, Any], shown: Callable[[str], str] = str) -> list[str]:
    """How to look at each logger's record of the run, one line per kind; ``shown`` formats paths."""
    lines = []
    if "tensorboard" in locations:
        lines.append(f"TensorBoard:     tensorboard --logdir {shown(locations['tensorboard'])}")
    if "csv" in locations:
        lines.append(f"CSV:             {shown(locations['csv'])}")
    mlflow = locations.get("mlflow")
    if isinstance(mlflow, dict):
        uri, run = mlflow["tracking_uri"], mlflow["run_id"]
        if urlparse(uri).scheme in ("http", "https"):
            lines.append(
                f"MLflow:          {uri.rstrip('/')}/#/experiments/{mlflow['experiment_id']}/runs/{run}"
            )
        else:
            lines.append(f"MLflow:          mlflow ui --backend-store-uri {uri}  (run {run})")
    wandb = locations.get("wandb")
    if isinstance(wandb, dict):
        if wandb["offline"]:
            lines.append(f"W&B (offline):   wandb sync {shown(wandb['dir'])}")
        else:
            lines.append(f"W&B:             {wandb['url']}")
    return lines
