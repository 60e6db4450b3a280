"""Continuing a stopped run: its saved config, its last checkpoint, its run directory."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from seg.config_tree import leaves
from seg.errors import ConfigError, SegError
from seg.overrides import override_key
from seg.rundir import RunDir

log = logging.getLogger(__name__)

#: ``resume=auto``: continue this run's own directory when it holds a checkpoint of the same config.
AUTO = "auto"

#: Overrides a resumed run accepts: they change how it runs, not what it learns.
SAFE_ON_RESUME = (
    "resume",
    "name",
    "tags",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.min_epochs",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "data.root",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.cache",
    "data.cache_memory_share",
    "test_after_training",
    "tune_allocator",
    "model.compile",
    "print_config",
    "full_traceback",
    "paths.",
    "hydra.",
)


def _key(override: str) -> str:
    return override_key(override)


def _safe(key: str) -> bool:
    return key.startswith(SAFE_ON_RESUME)


def _learned_difference(saved: DictConfig, current: DictConfig) -> str | None:
    """The first key whose value differs between two configs and changes what is learned."""
    old = leaves(OmegaConf.to_container(saved, resolve=True))
    new = leaves(OmegaConf.to_container(current, resolve=True))
    for key in sorted(set(old) | set(new)):
        if not _safe(key) and old.get(key) != new.get(key):
            return key
    return None


def resume_config(cfg: DictConfig, overrides: Sequence[str] = ()) -> tuple[DictConfig, Path | None]:
    """The config to run and the checkpoint to continue from (None: start fresh).

    ``resume=<run dir>``: the config that run was started with, plus the allowed command-line
    overrides, with ``paths.output_dir`` set to that run directory. Overrides that would change
    what is learned (model, loss, optimizer, data content, precision, ...) are refused, naming
    the key and the allowed ones. ``resume=auto``: this run's own directory is continued when it
    holds a last checkpoint written with the same config, else the run starts fresh. Either way
    the checkpoint is ``RunDir.last_checkpoint``, in the folder the run's checkpoint callback
    writes to (``callbacks.model_checkpoint.dirpath``).
    """
    if cfg.resume == AUTO:
        return _resume_auto(cfg)
    path = Path(cfg.resume)
    run_dir = RunDir.of(path)
    if not run_dir.hydra_config.is_file():
        saved = run_dir.hydra_config.relative_to(path)
        raise SegError(f"resume={path}: no {saved} there; pass a training run directory")
    resumed = run_dir.load_config()
    assert resumed is not None  # its hydra_config is a file
    checkpoint = run_dir.last_checkpoint
    if not checkpoint.is_file():
        raise SegError(f"resume={path}: no {checkpoint} to continue from")
    refused = [_key(o) for o in overrides if not _safe(_key(o))]
    if refused:
        allowed = ", ".join(k.rstrip(".") + ("*" if k.endswith(".") else "") for k in SAFE_ON_RESUME[1:])
        raise ConfigError(
            f"{refused[0]} cannot change when resuming (the checkpoint was trained with the run's "
            f"saved config); start a new run instead, or override only: {allowed}"
        )
    for override in overrides:
        key = _key(override)
        if key != "resume" and not key.startswith("hydra."):
            OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), force_add=True)
    return _continue(resumed, path, checkpoint), checkpoint


def _resume_auto(cfg: DictConfig) -> tuple[DictConfig, Path | None]:
    run_dir = RunDir.of(cfg.paths.output_dir, cfg)
    checkpoint = run_dir.last_checkpoint
    with open_dict(cfg):
        cfg.resume = None
    if not checkpoint.is_file():
        return cfg, None
    saved = run_dir.load_config()
    if saved is not None:
        differs = _learned_difference(saved, cfg)
        if differs is not None:
            log.warning(
                "resume=auto: %s's checkpoint was trained with another %s; starting fresh",
                run_dir.path, differs,
            )  # fmt: skip
            return cfg, None
    log.info("resume=auto: continuing %s from %s", run_dir.path, checkpoint)
    return _continue(cfg, run_dir.path, checkpoint), checkpoint


def _continue(cfg: DictConfig, run_dir: Path, checkpoint: Path) -> DictConfig:
    """``cfg`` set to continue ``run_dir`` from ``checkpoint``, in the same TensorBoard run."""
    step = int(torch.load(checkpoint, map_location="cpu", weights_only=True).get("global_step", 0))
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.resume = str(run_dir)
        for logger in (cfg.get("logger") or {}).values():
            tensorboard = logger and str(logger.get("_target_", "")).endswith("TensorBoardLogger")
            if logger and ("purge_step" in logger or tensorboard):
                logger.purge_step = step  # TensorBoard and CSV drop what the stopped run logged after it
    return cfg
