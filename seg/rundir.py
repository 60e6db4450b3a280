"""The files of a training run: every path in a run directory and the best-model rule.

A run directory (Hydra's ``runtime.output_dir``; ``paths.output_dir`` in the config) holds::

    .hydra/config.yaml      the config as composed (overrides.yaml beside it); a resumed run
                            writes its own under .hydra/resumed-<time>/
    config_resolved.yaml    the same config with every value resolved
    config_tree.txt         the config tree as printed when the run started
    run_info.json           git commit, package versions, command line
    checkpoints/            the checkpoint callback's ``dirpath``: the best checkpoint and last.ckpt
    model.pt                the best weights as TorchScript
    metrics.json            status, best and final validation values, test values, paths
    classes.json            class names, colours, ignore index, input channels (``ClassInfo``)
    README.md               the model card: a view of the files here (seg.reports.model_card)
    images/                 training curves and the latest validation pictures
    tensorboard/            TensorBoard events (``logger=tensorboard``; the logger config names it)
    logger_runs.json        the MLflow / W&B run ids a resumed run continues (those loggers only)
    eval/<split>/           ``seg.evaluate`` reports (``EvalDir``)
    export/                 ``seg.export`` output, and exports.json: what it wrote, checked
    <task>.log              Hydra's log of the command (train.log)

A sweep directory holds one run directory per job and ``summary.csv`` / ``summary.md``; a
``seg.search`` one also its Optuna study, ``study.db`` (unless ``search.storage`` names another).

Everything else asks this module for these paths; no other module spells the file names.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from seg.errors import SegError
from seg.renamed import upgrade_saved_config

if TYPE_CHECKING:
    import pytorch_lightning as pl

#: Hydra's copy of a run's config (``hydra.output_subdir``); a resumed run writes its own inside.
HYDRA_DIR = ".hydra"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
CLASSES_FILE = "classes.json"
MODEL_CARD_FILE = "README.md"
#: In an export folder: what each format's file is and how well it agrees with the fp32 model.
EXPORTS_FILE = "exports.json"
LAST_CHECKPOINT = "last.ckpt"
#: The MLflow and W&B run ids, so that a resumed run continues those runs (``seg.loggers``).
LOGGER_RUNS_FILE = "logger_runs.json"
#: The config key that says where checkpoints go; every other checkpoint path follows from it.
CHECKPOINT_DIR_KEY = "callbacks.model_checkpoint.dirpath"


log = logging.getLogger(__name__)
_NOTICED: set[tuple[Path, str]] = set()  # each renamed key of each saved config is noticed once


@dataclass(frozen=True)
class RunDir:
    """The paths of one training run.

    ``checkpoints`` is where the checkpoint callback writes (``callbacks.model_checkpoint.dirpath``);
    build a ``RunDir`` with :meth:`of` (from the config) or :meth:`of_trainer` (from the running
    trainer) so that it is never rebuilt by hand.

    The best model of a run: the checkpoint its checkpoint callback ranked best by the monitored
    metric (``last.ckpt`` when none was ranked yet), chosen by :meth:`ranked_best` while the run
    ends and recorded in ``metrics.json``. :meth:`best_checkpoint` finds that file again (for
    ``seg.export``, which needs the Lightning checkpoint); :meth:`model` is the same weights as the
    TorchScript ``model.pt`` written beside it (for ``seg.evaluate`` and ``seg.predict``).
    ``resume=`` continues from :attr:`last_checkpoint`, not from the best one.
    """

    path: Path
    checkpoints: Path

    @classmethod
    def of(cls, path: str | Path, cfg: DictConfig | None = None) -> RunDir:
        """The run in ``path``; its checkpoint folder from ``cfg`` (else the run's saved config)."""
        path = Path(path)
        if cfg is None:
            cfg = cls(path, path).load_config()
        return cls(path, _checkpoint_dir(cfg, path))

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir:
        """The run a checkpoint file belongs to: the directory above its checkpoint folder."""
        return cls.of(Path(checkpoint).parent.parent)

    @classmethod
    def holding(cls, path: str | Path) -> RunDir | None:
        """The training run ``path`` belongs to: the run directory itself, or the run whose folder
        holds the file (``model.pt``) or holds the folder it is in (``checkpoints/``, ``export/``);
        ``None`` where no saved run config is found."""
        path = Path(path)
        for folder in (path,) if path.is_dir() else (path.parent, path.parent.parent):
            if cls(folder, folder).saved_config() is not None:
                return cls.of(folder)
        return None

    @classmethod
    def of_trainer(cls, trainer: pl.Trainer, path: str | Path | None = None) -> RunDir:
        """The run a trainer writes: ``path`` (default: the trainer's ``default_root_dir``, which
        is ``paths.output_dir``) and the trainer's checkpoint callback's ``dirpath``."""
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or checkpoint.dirpath is None:  # Lightning sets dirpath at setup
            raise RuntimeError("the trainer has no ModelCheckpoint callback with a dirpath yet")
        return cls(Path(path or trainer.default_root_dir), Path(checkpoint.dirpath))

    # The config.
    @property
    def hydra_config(self) -> Path:
        return self.path / HYDRA_DIR / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.path / HYDRA_DIR / "overrides.yaml"

    @property
    def resolved_config(self) -> Path:
        return self.path / "config_resolved.yaml"

    @property
    def config_tree(self) -> Path:
        return self.path / "config_tree.txt"

    @property
    def hydra_settings(self) -> Path:
        """Hydra's own settings of the run (``runtime.choices``: the option of every group)."""
        return self.path / HYDRA_DIR / "hydra.yaml"

    @property
    def run_info(self) -> Path:
        return self.path / "run_info.json"

    def saved_config(self) -> Path | None:
        """The config the run started with: Hydra's copy, else the resolved one (a run started
        from Python rather than the command line), else None."""
        for path in (self.hydra_config, self.resolved_config):
            if path.is_file():
                return path
        return None

    def load_config(self) -> DictConfig | None:
        """The saved config (:meth:`saved_config`), keys and classes renamed since it was written
        spelled today's way (``seg.renamed``, with a notice); None when the run saved none."""
        saved = self.saved_config()
        if saved is None:
            return None
        cfg, notices = upgrade_saved_config(OmegaConf.load(saved))
        for notice in notices:
            if (saved, notice) not in _NOTICED:
                _NOTICED.add((saved, notice))
                log.warning("note: %s: %s (saved by an earlier seg, read with today's name)", saved, notice)
        return cfg

    # What the run wrote.
    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def classes(self) -> Path:
        return self.path / CLASSES_FILE

    @property
    def model_card(self) -> Path:
        return self.path / MODEL_CARD_FILE

    @property
    def images(self) -> Path:
        return self.path / "images"

    @property
    def curves(self) -> Path:
        return self.images / "curves.png"

    @property
    def val_predictions(self) -> Path:
        return self.images / "val_predictions.png"

    @property
    def val_confusion_matrix(self) -> Path:
        return self.images / "val_confusion_matrix.png"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def exports(self) -> Path:
        """What ``seg.export`` wrote into :attr:`export_dir`, and how well each agrees with fp32."""
        return self.export_dir / EXPORTS_FILE

    @property
    def eval_root(self) -> Path:
        return self.path / "eval"

    def eval_dir(self, split: str) -> Path:
        return self.eval_root / split

    @property
    def logger_runs(self) -> Path:
        return self.path / LOGGER_RUNS_FILE

    def log_file(self, command: str = "train") -> Path:
        """Hydra's log of the command that wrote here (``hydra.job.name``: the command's config)."""
        return self.path / f"{command}.log"

    def entries(self, cfg: DictConfig | None = None) -> set[str]:
        """The name of everything seg writes at the top of a run directory: the files and folders
        above, Hydra's log, and the folder each configured logger keeps there (from ``cfg``'s
        ``logger`` group, default the run's saved config)."""
        named = {
            self.hydra_config.parent, self.resolved_config, self.config_tree, self.run_info,
            self.checkpoints, self.model_file, self.metrics, self.classes, self.model_card,
            self.images, self.export_dir, self.eval_root, self.logger_runs, self.log_file(),
        }  # fmt: skip
        names = {path.name for path in named if path.parent == self.path}
        if cfg is None:
            cfg = self.load_config() or OmegaConf.create()
        for logger in (cfg.get("logger") or {}).values():
            if logger and logger.get("name") and "save_dir" in logger:
                names.add(str(logger.name))  # <save_dir = the run dir>/<name>
        return names

    def read_metrics(self) -> dict[str, Any] | None:
        """The content of ``metrics.json``, or None when the run has not written one."""
        return json.loads(self.metrics.read_text()) if self.metrics.is_file() else None

    # The best model.
    @staticmethod
    def ranked_best(checkpoint: pl.callbacks.ModelCheckpoint) -> str:
        """The checkpoint callback's best file, or its last one when it ranked none ('' if neither)."""
        return checkpoint.best_model_path or checkpoint.last_model_path

    def best_checkpoint(self) -> Path:
        """The run's best checkpoint (see the class docstring); found by name in :attr:`checkpoints`
        when the run directory was moved after ``metrics.json`` recorded it."""
        recorded = ((self.read_metrics() or {}).get("paths") or {}).get("best_checkpoint")
        if recorded:
            for candidate in (Path(recorded), self.checkpoints / Path(recorded).name):
                if candidate.is_file():
                    return candidate
        if self.last_checkpoint.is_file():
            return self.last_checkpoint
        raise SegError(
            f"{self.path} holds neither a best checkpoint named in {METRICS_FILE} nor "
            f"{self.last_checkpoint}; pass a training run directory or a .ckpt file"
        )

    def model(self) -> Path:
        """``model.pt``: the best checkpoint's network as TorchScript, written when the run ends."""
        if not self.model_file.is_file():
            raise SegError(f"{self.path} holds no {MODEL_FILE}; pass a training run directory or a model")
        return self.model_file


def _checkpoint_dir(cfg: DictConfig | None, run_dir: Path) -> Path:
    """``callbacks.model_checkpoint.dirpath`` of ``cfg`` with ``paths.output_dir`` set to ``run_dir``."""
    default = run_dir / "checkpoints"
    if cfg is None:
        return default
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if OmegaConf.select(cfg, "paths") is not None:
            cfg.paths.output_dir = str(run_dir)
    try:
        dirpath = OmegaConf.select(cfg, CHECKPOINT_DIR_KEY, default=None)
    except Exception:  # an interpolation that needs Hydra: the default layout
        return default
    return Path(dirpath) if dirpath else default


@dataclass(frozen=True)
class EvalDir:
    """The files of one ``seg.evaluate`` report (a run's ``eval/<split>/``, or a folder of its own)."""

    path: Path

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def report(self) -> Path:
        return self.path / "metrics.md"

    @property
    def confusion_matrix(self) -> Path:
        return self.path / "confusion_matrix.png"

    @property
    def samples(self) -> Path:
        return self.path / "samples"


@dataclass(frozen=True)
class SweepDir:
    """A multirun's folder: one run directory per job, and the summary of them all."""

    path: Path

    @property
    def summary_csv(self) -> Path:
        return self.path / "summary.csv"

    @property
    def summary_md(self) -> Path:
        return self.path / "summary.md"

    @property
    def study(self) -> Path:
        """The SQLite file of a ``seg.search`` study kept in the sweep folder (the default storage)."""
        return self.path / "study.db"

    def jobs(self) -> list[RunDir]:
        """The job run directories (those with Hydra's overrides), in job order."""
        found = [p for p in self.path.iterdir() if (p / HYDRA_DIR / "overrides.yaml").is_file()]
        found.sort(key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))
        return [RunDir.of(p) for p in found]


def classes_beside(model_path: Path) -> Path | None:
    """The classes file (``ClassInfo``) next to a model file, or in the run directory above it."""
    for folder in (model_path.parent, model_path.parent.parent):
        if (folder / CLASSES_FILE).is_file():
            return folder / CLASSES_FILE
    return None
