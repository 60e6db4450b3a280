"""Never lose a run: kill and resume, graceful stops, NaN losses, atomic files, concurrent caches."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from support import (
    RESUMABLE,
    TINY,
    WITH_SUPPORT,
    assert_continues_like,
    cli_environ,
    cli_ok,
    compose_train,
    metrics_of,
    run_cli,
    start_cli,
    wait_for_checkpoint,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seg.artifacts import atomic_path, write_json
from seg.data.sampling import SeededSampler
from seg.errors import NonFiniteLossError
from seg.inference.formats import export_torchscript
from seg.models.unet import UNet
from seg.training.pipeline import train


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, data_cache: Path, uninterrupted: dict[str, Any]
) -> None:
    args = ["seg.train", *RESUMABLE, f"paths.log_dir={tmp_path}", f"paths.data_dir={data_cache}"]
    process = start_cli(args, tmp_path)
    run_dir = wait_for_checkpoint(tmp_path / "train" / "runs", process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()  # it really died before the end
    original_config = (run_dir / ".hydra" / "config.yaml").read_text()

    cli_ok(["seg.train", f"resume={run_dir}"], cwd=tmp_path)
    assert_continues_like(run_dir, uninterrupted)
    # Resumed from an epoch's end, the TensorBoard curve has every logged step exactly once.
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    steps = [event.step for event in events.Scalars("train/loss_step")]
    assert len(steps) == len(set(steps)) == 4 * 16 // 2
    assert (run_dir / ".hydra" / "config.yaml").read_text() == original_config
    assert list((run_dir / ".hydra").glob("resumed-*/config.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_graceful_stop_saves_everything_and_resumes_mid_epoch(
    tmp_path: Path, data_cache: Path, uninterrupted: dict[str, Any], sig: signal.Signals, status: int
) -> None:
    args = ["seg.train", *RESUMABLE, f"paths.log_dir={tmp_path}", f"paths.data_dir={data_cache}"]
    process = start_cli(args, tmp_path)
    run_dir = wait_for_checkpoint(tmp_path / "train" / "runs", process)
    time.sleep(0.2)  # into the second epoch
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    assert process.returncode == status, err[-2000:]
    assert f"Resume with: python -m seg.train resume={run_dir.relative_to(tmp_path)}" in out + err
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] >= 16
    assert (run_dir / "model.pt").is_file()
    assert metrics_of(run_dir)["status"] == f"stopped by {sig.name}"
    card = (run_dir / "README.md").read_text()  # the model card says why, and what it has
    assert f"Training did not finish (stopped by {sig.name})" in card
    assert "### val: Dice" in card

    result = cli_ok(["seg.train", f"resume={run_dir}"], cwd=tmp_path)
    assert "not resumable" not in result.stderr
    assert_continues_like(run_dir, uninterrupted)  # mid-epoch too, the loader continues its order


@pytest.mark.slow
def test_a_stop_saves_where_the_checkpoint_callback_writes_and_resume_finds_it(
    tmp_path: Path, data_cache: Path
) -> None:
    """With ``callbacks.model_checkpoint.dirpath`` moved out of the run dir, SIGTERM saves the last
    checkpoint there (no ``checkpoints/`` folder appears) and ``resume=`` continues from it."""
    elsewhere = tmp_path / "elsewhere"
    args = ["seg.train", *[o for o in TINY if not o.startswith("trainer.max_epochs")],
            "trainer.max_epochs=2", f"callbacks.model_checkpoint.dirpath={elsewhere}",
            "+callbacks.slow._target_=support.probes.SlowSteps", "+callbacks.slow.seconds=0.05",
            f"paths.log_dir={tmp_path}", f"paths.data_dir={data_cache}"]  # fmt: skip
    process = start_cli(args, tmp_path, env=WITH_SUPPORT)
    deadline = time.monotonic() + 120
    while not (elsewhere / "last.ckpt").is_file():  # the end of epoch 0
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    stopped = torch.load(elsewhere / "last.ckpt", map_location="cpu", weights_only=True)
    assert (
        16 <= stopped["global_step"] < 32
    )  # saved by the stop, in epoch 1 (at its first batch at the earliest)
    assert metrics_of(run_dir)["status"] == "stopped by SIGTERM"
    assert not (run_dir / "checkpoints").exists()

    cli_ok(["seg.train", f"resume={run_dir}"], cwd=tmp_path, env=WITH_SUPPORT)
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "finished" and metrics["resumed"]
    assert [e["step"] for e in metrics["epochs"]] == [16, 32]
    assert metrics["paths"]["last_checkpoint"] == str(elsewhere / "last.ckpt")
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_resume_refuses_changes_to_what_is_learned(tmp_path: Path, cli_run: Path) -> None:
    result = run_cli(["seg.train", f"resume={cli_run}", "model.optimizer.lr=0.1"], cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: model.optimizer.lr cannot change when resuming")
    )


@pytest.mark.slow
def test_resume_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = run_cli(["seg.train", f"resume={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "no .hydra/config.yaml there" in result.stderr


@pytest.mark.slow
def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, data_cache: Path
) -> None:
    cfg = compose_train(
        [*TINY, f"paths.data_dir={data_cache}", f"paths.output_dir={tmp_path}", "trainer.max_epochs=3",
         "~loss", "+loss._target_=support.probes.NanAfter", "+loss.calls=20"]
    )  # fmt: skip
    with pytest.raises(
        NonFiniteLossError, match=r"became nan at epoch 1, step 20; .*lower learning rate .*dice_ce"
    ):
        train(cfg)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 16  # the end of epoch 0, before anything went wrong
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert (tmp_path / "model.pt").is_file()
    assert metrics_of(tmp_path)["status"] == "failed"


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = write_json(tmp_path / "metrics.json", {"good": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failed_model_export_leaves_the_old_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = UNet(num_classes=2, base_channels=4)
    path = export_torchscript(net, tmp_path / "model.pt")
    before = path.read_bytes()

    def broken_save(self: Any, name: str) -> None:
        Path(name).write_bytes(before[: len(before) // 2])
        raise OSError("interrupted mid-write")

    monkeypatch.setattr(torch.jit.RecursiveScriptModule, "save", broken_save)
    with pytest.raises(OSError, match="mid-write"):
        export_torchscript(net, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


#: Builds a small synthetic dataset in ``argv[1]``, holding its finished temporary folder until
#: ``argv[2]`` processes have one (a file each in ``argv[3]``), so every build overlaps the others
#: at the rename; a build whose rename loses the race leaves a mark there.
OVERLAPPING_BUILD = """
import os, sys, time
from pathlib import Path
from seg.data.synthetic import SyntheticScenes
marks, rename = Path(sys.argv[3]), Path.rename

def held_rename(self, target):
    (marks / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 60  # a build that died first must not hang the others
    while len(list(marks.glob("ready-*"))) < int(sys.argv[2]) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        return rename(self, target)
    except OSError:
        (marks / f"lost-{os.getpid()}").touch()
        raise

Path.rename = held_rename
print(SyntheticScenes(num_train=12, num_val=2, num_test=0, image_size=32, max_shapes=5, noise=10.0,
      seed=0, class_names=["background", "flat", "dots"]).build(sys.argv[1]))
"""


@pytest.mark.slow
def test_two_processes_building_the_same_cache(tmp_path: Path) -> None:
    """Two builds of one synthetic dataset, both finished and renaming at the same moment: one
    rename wins, the other finds the dataset in place and uses it; both return the same folder,
    and no temporary folder is left behind."""
    cache, marks = tmp_path / "cache", tmp_path / "marks"
    marks.mkdir()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OVERLAPPING_BUILD, str(cache), "2", str(marks)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_environ(),
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err[-1500:] for _, err in outputs]
    assert len(list(marks.glob("lost-*"))) == 1  # they did overlap: one rename lost
    (root,) = {out.strip() for out, _ in outputs}
    assert [p.name for p in cache.iterdir()] == [Path(root).name]  # no half-built leftovers
    assert len(list((Path(root) / "train" / "images").iterdir())) == 12
    assert len(list((Path(root) / "train" / "masks").iterdir())) == 12


def test_without_the_requeue_signals_training_still_stops_cleanly(tmp_path: Path) -> None:
    """Windows has no SIGUSR1 or SIGUSR2: the module imports, Ctrl-C and SIGTERM are still handled,
    and a log line says that no signal requeues."""
    code = """
import logging, signal
del signal.SIGUSR1, signal.SIGUSR2
logging.basicConfig(level=logging.INFO, format="%(message)s")
from seg.training.callbacks import REQUEUE_SIGNALS, GracefulStop
assert REQUEUE_SIGNALS == ()
stop = GracefulStop()
stop.on_fit_start(None, None)
print(sorted(s.name for s in stop._previous))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['SIGINT', 'SIGTERM']"
    assert "This OS has no SIGUSR1 or SIGUSR2" in done.stderr


@pytest.mark.slow
def test_a_file_corrupted_mid_run_stops_with_its_name_and_resume_finishes(
    tmp_path: Path, data_cache: Path, uninterrupted: dict[str, Any]
) -> None:
    """Without the in-memory cache, a file is decoded only when read: one that breaks after the
    start-up header check stops the run with one line naming it and a saved last checkpoint,
    and once the file is fixed, resume= finishes like a run never stopped."""
    data = tmp_path / "data"
    shutil.copytree(data_cache, data)
    cfg = compose_train([*RESUMABLE, f"paths.data_dir={data}"])
    # this run's dataset: the session's data folder holds those of other tests too
    images = sorted((instantiate(cfg.data).root / "train" / "images").glob("*.png"))
    sampler = SeededSampler(len(images), cfg.data.seed)
    sampler.set_epoch(1)
    broken = images[list(sampler)[-1][0]]  # read last in the second epoch, long after the check
    original = broken.read_bytes()
    args = [
        "seg.train",
        *RESUMABLE,
        "data.cache=false",
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={data}",
    ]
    # cut as step 20 (the second epoch's fifth) begins, in the training process: no race with it
    args += [
        "+callbacks.cut._target_=support.probes.TruncateAtStep",
        f"+callbacks.cut.path={broken}",
        "+callbacks.cut.step=20",
    ]
    result = run_cli(args, cwd=tmp_path, env=WITH_SUPPORT)
    assert result.returncode == 2, result.stderr[-2000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == [error_lines[0]], result.stderr[-2000:]
    assert f"cannot read image {broken}" in error_lines[0]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    assert f"resume={run_dir.relative_to(tmp_path)}" in result.stdout + result.stderr
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert 20 < checkpoint["global_step"] < 32  # saved where it failed, late in the second epoch

    broken.write_bytes(original)
    result = cli_ok(["seg.train", f"resume={run_dir}"], cwd=tmp_path, env=WITH_SUPPORT)
    assert_continues_like(run_dir, uninterrupted)
