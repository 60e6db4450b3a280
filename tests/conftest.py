"""Shared fixtures: tiny generated data, the real composed config shrunk for speed, trained runs.
The helpers they use (and the tests too) are in ``tests/support``."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from omegaconf import DictConfig, open_dict
from support import RESUMABLE, TINY, cli_ok, compose_train, metrics_of

from seg.hydra_setup import set_up


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n N`` (pytest-xdist, as ``make test`` runs), each worker gets its own share
    of the cores, and so does every process its tests start: tests on different workers never
    compete for a core, so the timings that budgets and progress lines measure stay a test's own."""
    set_up()  # what every command does first: the resolvers the configs use
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or workers < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    share = cores[int(worker.removeprefix("gw")) % workers :: workers]
    if share:
        import torch

        os.sched_setaffinity(0, share)
        torch.set_num_threads(len(share))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files with the most slow tests first, each file's tests in their order: ``make test``
    hands whole files to its workers in this order (``--no-loadscope-reorder``), so the long files
    start at once and the short ones fill the end, instead of a long one running alone last."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the session, so synthetic datasets are generated once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_cfg(data_cache: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/train.yaml`` with the tiny overrides plus ``extra``; outputs go to tmp_path."""

    def make(*extra: str, output_dir: Path | None = None) -> DictConfig:
        out = output_dir or tmp_path / "run"
        cfg = compose_train([*TINY, f"paths.data_dir={data_cache}", f"paths.output_dir={out}", *extra])
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
        return cfg

    return make


@pytest.fixture(scope="session")
def trained_run(data_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny real training run shared by the tests that inspect its outputs."""
    from seg.training.pipeline import train

    out = tmp_path_factory.mktemp("trained")
    cfg = compose_train([*TINY, f"paths.data_dir={data_cache}", f"paths.output_dir={out}"])
    metrics = train(cfg)
    return {"dir": out, "metrics": metrics, "cfg": cfg}


@pytest.fixture(scope="session")
def cli_run(data_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny training run made through the command line, with its .hydra config: its run dir."""
    logs = tmp_path_factory.mktemp("cli_logs")
    overrides = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    args = [
        "seg.train",
        *overrides,
        "trainer.max_epochs=3",
        f"paths.log_dir={logs}",
        f"paths.data_dir={data_cache}",
    ]
    cli_ok(args, cwd=logs)
    (run_dir,) = (logs / "train" / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> dict[str, Any]:
    """``metrics.json`` of a ``RESUMABLE`` run that nothing stopped, to compare resumed runs with:
    trained once for the whole session, by the first worker that asks (the others wait for it)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the folder every worker's own temporary folder is in
    saved = shared / "uninterrupted.json"
    with FileLock(f"{saved}.lock"):
        if not saved.is_file():
            logs = tmp_path_factory.mktemp("uninterrupted")
            args = ["seg.train", *RESUMABLE, f"paths.log_dir={logs}", f"paths.data_dir={data_cache}"]
            cli_ok(args, cwd=logs)
            saved.write_text(json.dumps(metrics_of(next((logs / "train" / "runs").iterdir()))))
    return json.loads(saved.read_text())
