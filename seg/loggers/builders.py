"""Building each logger from seg's config: run name, tags, run directory, a resumed tracking run."""

from __future__ import annotations

import csv
import json
import logging
import netrc
import os
import secrets
import string
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning import loggers as pl_loggers
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from seg.artifacts import write_json
from seg.errors import ConfigError, first_line, install_hint
from seg.rundir import LOGGER_RUNS_FILE

log = logging.getLogger(__name__)


def _require(module: str, option: str) -> None:
    if find_spec(module) is None:
        raise ConfigError(
            f"{option} needs the {module} package: {install_hint(module)} (`make install` includes it), "
            "or choose another logger (logger=tensorboard, logger=csv)"
        )


def _remembered(run_dir: str | os.PathLike[str], kind: str) -> str | None:
    path = Path(run_dir) / LOGGER_RUNS_FILE
    return json.loads(path.read_text()).get(kind) if path.is_file() else None


def _remember(run_dir: str | os.PathLike[str], kind: str, run_id: str) -> None:
    path = Path(run_dir) / LOGGER_RUNS_FILE
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
            raise ConfigError(f"logger.mlflow.tracking_uri={tracking_uri}: {first_line(error)}") from error
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
