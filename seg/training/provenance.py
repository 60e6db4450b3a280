"""What reproduces a run: its resolved config, the git commit of seg, package versions."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from seg.artifacts import write_json
from seg.hardware import cpu_name
from seg.rundir import RunDir


def write_run_info(cfg: DictConfig, run_dir: RunDir) -> None:
    """Save what reproduces the run: the resolved config, the git commit, package versions."""
    run_dir.path.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir.resolved_config, resolve=True)
    packages = {}
    for name in (
        "seg",
        "torch",
        "pytorch-lightning",
        "torchmetrics",
        "hydra-core",
        "omegaconf",
        "albumentations",
        "numpy",
    ):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    write_json(
        run_dir.run_info,
        {"git": _git_state(), "packages": packages, "python": platform.python_version(),
         "machine": platform.machine(), "cpu": cpu_name(), "gpu": _gpu_name(cfg),
         "command": " ".join(sys.argv)},
    )  # fmt: skip


def _gpu_name(cfg: DictConfig) -> str | None:
    """The CUDA GPU the run trains on (its name, times the devices), or None on the CPU."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    if accelerator not in ("auto", "gpu", "cuda") or not torch.cuda.is_available():
        return None
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    count = devices if isinstance(devices, int) and devices > 0 else torch.cuda.device_count()
    return f"{count} x {torch.cuda.get_device_name(0)}"


def _git_state() -> dict[str, Any] | None:
    """The commit of the source checkout seg runs from (and whether it had local changes); None
    for an installed package (whose folder may sit inside some other repository)."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "pyproject.toml").is_file() or not (repo / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return None
