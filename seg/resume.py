"""Continuing a stopped run: its saved config, its last checkpoint, its run directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from seg.errors import ConfigError, SegError

#: Overrides a resumed run accepts: they change how it runs, not what it learns.
SAFE_ON_RESUME = (
    "resume",
    "trainer.max_epochs",
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
    "test_after_training",
    "tune_allocator",
    "paths.",
    "hydra.",
)


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def resume_config(cfg: DictConfig, overrides: Sequence[str] = ()) -> tuple[DictConfig, Path]:
    """The config ``cfg.resume``'s run was started with, plus the allowed command-line overrides.

    Returns it with ``paths.output_dir`` set to that run directory, and the checkpoint to
    continue from. Overrides that would change what is learned (model, loss, optimizer, data
    content, precision, ...) are refused, naming the key and the allowed ones.
    """
    run_dir = Path(cfg.resume)
    saved = run_dir / ".hydra" / "config.yaml"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if not saved.is_file():
        raise SegError(f"resume={run_dir}: no .hydra/config.yaml there; pass a training run directory")
    if not checkpoint.is_file():
        raise SegError(f"resume={run_dir}: no checkpoints/last.ckpt to continue from")
    refused = [_key(o) for o in overrides if not _key(o).startswith(SAFE_ON_RESUME)]
    if refused:
        allowed = ", ".join(k.rstrip(".") + ("*" if k.endswith(".") else "") for k in SAFE_ON_RESUME[1:])
        raise ConfigError(
            f"{refused[0]} cannot change when resuming (the checkpoint was trained with the run's "
            f"saved config); start a new run instead, or override only: {allowed}"
        )
    resumed = OmegaConf.load(saved)
    for override in overrides:
        key = _key(override)
        if key != "resume" and not key.startswith("hydra."):
            OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), force_add=True)
    step = int(torch.load(checkpoint, map_location="cpu", weights_only=True).get("global_step", 0))
    with open_dict(resumed):
        resumed.paths.output_dir = str(run_dir)
        resumed.resume = str(run_dir)
        for logger in (resumed.get("logger") or {}).values():
            if logger and str(logger.get("_target_", "")).endswith("TensorBoardLogger"):
                logger.purge_step = step  # TensorBoard drops what the stopped run logged after it
    return resumed, checkpoint
