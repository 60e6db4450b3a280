"""What the tests share besides fixtures: the tiny configs, composing the real config, running a
command as a user would, and reading what a run left. ``conftest.py`` holds the fixtures."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from seg.hydra_setup import set_up
from support.warm import WarmCommands, WarmProcess, serves

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"

#: Overrides that make a real training run take seconds: 64x64 images, a narrow U-Net,
#: everything in the test process (no worker processes, no progress bar).
TINY = [
    "data.generator.num_train=128",
    "data.generator.num_val=16",
    "data.generator.num_test=16",
    "data.image_size=64",
    "data.num_workers=0",
    "data.batch_size=8",
    "model.net.base_channels=8",
    "model.optimizer.lr=3e-3",
    "trainer=cpu",
    "trainer.max_epochs=10",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=2",
]


#: One epoch of a width-4 U-Net on 32x32 crops, in the test process: a real data config trained
#: only to show that it trains, evaluates and exports.
ONE_EPOCH = [
    "data.num_workers=0",
    "data.batch_size=4",
    "data.image_size=32",
    "model.net.base_channels=4",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides``, as the command line would."""
    set_up()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@functools.cache
def synthetic_class_names() -> tuple[str, ...]:
    """The class names of the default data, ``conf/data/synthetic.yaml``."""
    return tuple(compose_train(["paths.output_dir=unused"]).data.class_names)


def cli_environ() -> dict[str, str]:
    """This process's environment, with PYTHONPATH set so that commands import this checkout's
    ``seg`` (not another copy installed in the same environment) and nothing else."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def command_environ(env: dict[str, str] | None) -> dict[str, str]:
    """The environment of a command a test starts: ``cli_environ()``, unbuffered output, ``env``."""
    return {**cli_environ(), "PYTHONUNBUFFERED": "1", **(env or {})}


#: Lets a command started by a test also import ``support`` (``_target_: support.probes.X``).
WITH_SUPPORT = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


def run_cli(
    args: Sequence[str],
    cwd: Path,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    merge_stderr: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` as a user would, from ``cwd``, with ``env`` added to the environment:
    a process of its own, forked from a zygote that has imported the libraries already
    (``support.warm``) where ``serves(env)``, else a fresh interpreter. ``merge_stderr``
    sends stderr to stdout, as ``> log 2>&1`` does."""
    environ = command_environ({"HYDRA_FULL_ERROR": "0", **(env or {})})
    if serves(env):
        return _WARM.run(list(args), cwd, environ, timeout, merge_stderr)
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        timeout=timeout,
    )


_WARM = WarmCommands()


def cli_ok(args: Sequence[str], cwd: Path, **options: Any) -> subprocess.CompletedProcess[str]:
    """``run_cli`` for a command that must succeed: a failure shows the end of its stderr."""
    result = run_cli(args, cwd, **options)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


#: Four fp32 epochs of 16 steps, two dataloader workers; checkpoints only at epoch ends.
RESUMABLE = [
    *[o for o in TINY if not o.startswith(("trainer.max_epochs", "data.num_workers", "trainer=cpu"))],
    "trainer=cpu",
    "trainer.precision=32-true",
    "trainer.max_epochs=4",
    "data.num_workers=2",
    "callbacks.step_checkpoint.every_n_train_steps=1000",
]


def start_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str] | WarmProcess:
    """Start ``python -m <args>`` in the background, with ``env`` added to the environment (forked
    from the zygote, as ``run_cli`` is)."""
    environ = command_environ(env)
    if serves(env):
        return _WARM.start(list(args), cwd, environ)
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(
    runs: Path, process: subprocess.Popen[str] | WarmProcess, timeout: float = 120
) -> Path:
    """The run dir under ``runs`` as soon as it holds a ``last.ckpt``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for checkpoint in runs.glob("*/checkpoints/last.ckpt"):
            return checkpoint.parent.parent
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def metrics_of(run_dir: Path) -> dict[str, Any]:
    """The run's ``metrics.json``."""
    return json.loads((run_dir / "metrics.json").read_text())


def assert_continues_like(run_dir: Path, uninterrupted: dict[str, Any]) -> None:
    """The resumed run in ``run_dir`` finished with the epochs, steps and final validation metrics
    of an uninterrupted one (same seed, fp32 on CPU, the loader's position restored: float
    summation order is the only freedom left, hence 1e-6)."""
    resumed = metrics_of(run_dir)
    assert resumed["status"] == "finished" and resumed["resumed"]
    assert [(e["epoch"], e["step"]) for e in resumed["epochs"]] == [
        (e["epoch"], e["step"]) for e in uninterrupted["epochs"]
    ]
    for key in ("val/loss", "val/dice", "val/iou"):
        assert resumed["final"][key] == pytest.approx(uninterrupted["final"][key], abs=1e-6)
