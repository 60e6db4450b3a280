"""A real (tiny) training run through the whole stack, and what it leaves behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from support import synthetic_class_names
from support.models import assert_torchscript_alone_matches
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seg.lightning_module import SegmentationModule
from seg.metrics import build_metrics, summarize

CLASS_NAMES = synthetic_class_names()


def _val_batches(run: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from hydra.utils import instantiate

    datamodule = instantiate(run["cfg"].data)
    datamodule.setup("fit")
    return list(datamodule.val_dataloader())


def test_training_learns(trained_run: dict[str, Any]) -> None:
    epochs = trained_run["metrics"]["epochs"]
    assert len(epochs) == 10
    assert epochs[-1]["val/loss"] < epochs[0]["val/loss"]

    # Chance level: the best constant answer, "everything is background".
    metrics = build_metrics(len(CLASS_NAMES))
    for _, mask in _val_batches(trained_run):
        metrics.update(torch.zeros_like(mask), mask)
    chance = summarize(metrics.compute(), CLASS_NAMES, "val")["val/dice"]
    best = trained_run["metrics"]["best"]["val/dice"]
    assert best > 2 * chance, f"best val dice {best:.3f} vs chance {chance:.3f}"


def test_train_loss_goes_down(trained_run: dict[str, Any]) -> None:
    events = EventAccumulator(str(trained_run["dir"] / "tensorboard")).Reload()
    per_epoch = [e.value for e in events.Scalars("train/loss_epoch")]
    assert len(per_epoch) == 10
    assert per_epoch[-1] < per_epoch[0]
    assert len(events.Scalars("train/loss_step")) >= 10


def test_run_dir_layout(trained_run: dict[str, Any]) -> None:
    run_dir: Path = trained_run["dir"]
    assert (run_dir / "model.pt").is_file()
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints
    assert any(name.startswith("best-") for name in checkpoints)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best, final = metrics["best"], metrics["final"]
    assert metrics["monitor"] == "val/dice"
    assert best["val/dice"] == max(e["val/dice"] for e in metrics["epochs"])
    assert final["epoch"] == 9
    for name in CLASS_NAMES:
        assert f"val/dice/{name}" in best and f"val/iou/{name}" in best
    assert metrics["test"]["test/dice"] > 0
    assert Path(metrics["paths"]["best_checkpoint"]).is_file()
    assert Path(metrics["paths"]["torchscript"]) == run_dir / "model.pt"
    classes = json.loads((run_dir / "classes.json").read_text())
    assert classes["class_names"] == list(CLASS_NAMES)


def test_tensorboard_has_per_class_dice(trained_run: dict[str, Any]) -> None:
    events = EventAccumulator(str(trained_run["dir"] / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"val/dice", "val/iou", "val/loss", "train/loss_step", "train/loss_epoch"} <= tags
    for name in CLASS_NAMES:
        assert f"val/dice/{name}" in tags
    assert "test/dice" in tags


def test_checkpoint_alone_rebuilds_the_module(trained_run: dict[str, Any]) -> None:
    """The best checkpoint, loaded without the run's config, scores on the validation split what
    the run recorded for its best epoch (the run validated under the CPU trainer's precision, this
    in fp32: hence 0.01), and far above the same network untrained."""
    best = Path(trained_run["metrics"]["paths"]["best_checkpoint"])
    module = SegmentationModule.load_from_checkpoint(best, map_location="cpu")
    assert module.class_names == list(CLASS_NAMES)
    assert module.hparams.optimizer["lr"] == pytest.approx(3e-3)

    def val_dice(net: torch.nn.Module) -> float:
        metrics = build_metrics(len(CLASS_NAMES))
        with torch.no_grad():
            for images, masks in _val_batches(trained_run):
                metrics.update(net(images).argmax(1), masks)
        return summarize(metrics.compute(), CLASS_NAMES, "val")["val/dice"]

    recorded = trained_run["metrics"]["best"]["val/dice"]
    assert val_dice(module.eval()) == pytest.approx(recorded, abs=0.01)
    untrained = SegmentationModule(**module.hparams).eval()
    assert val_dice(untrained) < recorded - 0.1


@pytest.mark.slow
def test_torchscript_alone_matches_the_checkpoint(trained_run: dict[str, Any], tmp_path: Path) -> None:
    best = Path(trained_run["metrics"]["paths"]["best_checkpoint"])
    module = SegmentationModule.load_from_checkpoint(best, map_location="cpu")
    images = torch.cat([b[0] for b in _val_batches(trained_run)])[:4].float() / 255
    odd = torch.rand(2, 3, 50, 70)
    assert_torchscript_alone_matches(trained_run["dir"] / "model.pt", module.net, [images, odd], tmp_path)


@pytest.mark.slow
def test_runs_without_a_logger_and_with_a_scheduler(make_cfg: Any, tmp_path: Path) -> None:
    """``scheduler=cosine`` decays the rate once per epoch along a cosine to zero over
    ``trainer.max_epochs``: 3e-3 in epoch 0, 3e-3 (1 + cos(pi/3)) / 2 = 2.25e-3 in epoch 1,
    3e-3 (1 + cos(2 pi/3)) / 2 = 0.75e-3 in epoch 2; and no logger means no TensorBoard folder."""
    from support.probes import RecordLearningRate

    from seg.training.pipeline import train

    cfg = make_cfg("logger=none", "scheduler=cosine", "trainer.max_epochs=3", "test_after_training=false",
                   "data.generator.num_train=16")  # fmt: skip
    metrics = train(cfg, callbacks=[RecordLearningRate(str(tmp_path / "lr"))])
    run_dir = Path(cfg.paths.output_dir)
    assert (run_dir / "model.pt").is_file()
    assert not (run_dir / "tensorboard").exists()
    assert metrics["paths"]["tensorboard"] is None and metrics["test"] is None
    rates = [float(line.split()[1]) for line in (tmp_path / "lr.rank0").read_text().splitlines()]
    assert rates == pytest.approx([3e-3] * 2 + [2.25e-3] * 2 + [0.75e-3] * 2, rel=1e-6)
