"""What every command sets up before Hydra composes its config, called once by ``seg.command``
(and by whatever else composes seg's configs: the tests, the benchmark, scripts): the resolvers
the YAML files use, and two filters on messages a user cannot act on. Nothing happens at import."""

from __future__ import annotations

import logging
import re
import sys
import warnings
from datetime import datetime

from omegaconf import OmegaConf

from seg.hardware import best_precision
from seg.rundir import HYDRA_DIR, RunDir
from seg.training import cluster
from seg.training.resume import AUTO


def _run_dir(resume: str | None, runs: str, stamp: str) -> str:
    """A resumed run's own directory; in a SLURM batch job one named by the job, which a requeued
    job finds again; else a new one named by the time."""
    if resume and resume != AUTO:
        return str(resume)
    job = cluster.job_id()
    return f"{runs}/slurm-{job}" if job else f"{runs}/{stamp}"


def _hydra_subdir(resume: str | None, output_dir: str) -> str:
    """Where Hydra saves this run's config: ``HYDRA_DIR``, or a folder inside it when the run continues."""
    continuing = resume and (resume != AUTO or RunDir.of(output_dir).hydra_config.is_file())
    return f"{HYDRA_DIR}/resumed-{datetime.now():%Y-%m-%d_%H-%M-%S}" if continuing else HYDRA_DIR


def _default_resume() -> str | None:
    """``auto`` inside a SLURM or submitit job (a requeued job continues its run), else no resume."""
    return AUTO if cluster.requeueable_job() else None


def _stderr_is_terminal() -> bool:
    """Whether stderr, where the progress bar draws, is an interactive terminal."""
    return sys.stderr.isatty()


def _name_suffix(name: str | None) -> str:
    """``_<name>`` for a directory name (other characters than letters, digits, ``.-_`` become ``-``)."""
    return "_" + re.sub(r"[^0-9A-Za-z._-]+", "-", str(name)).strip("-") if name else ""


def register_resolvers() -> None:
    """Resolvers the configs use: ``seg.precision`` (detected precision), ``seg.run_dir`` and
    ``seg.hydra_subdir`` (a resumed run writes into its own directory, keeping its config),
    ``seg.terminal`` (whether a progress bar can draw), ``seg.default_resume`` (auto in SLURM),
    ``seg.name_suffix`` (a named run's directory ends with its name)."""
    for name, function in (
        ("seg.precision", best_precision),
        ("seg.run_dir", _run_dir),
        ("seg.hydra_subdir", _hydra_subdir),
        ("seg.terminal", _stderr_is_terminal),
        ("seg.default_resume", _default_resume),
        ("seg.name_suffix", _name_suffix),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


class _DropAdverts(logging.Filter):
    """Lightning prints a hosted-service advert on every Trainer; users of seg do not need it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless cloud logging" not in record.getMessage()


def set_up() -> None:
    """Register the resolvers and install the message filters; calling it again does nothing."""
    register_resolvers()
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdverts())
    # Lightning 2.6 calls a torch API that torch 2.13 deprecates, once per run; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
