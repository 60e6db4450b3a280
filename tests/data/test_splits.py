"""Sequence-disjoint validation: ``data.val_sequences`` holds whole drives out of train."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate
from support import compose_train
from support.datasets import CAMVID, write_folder

from seg.data.datamodule import SegmentationDataModule
from seg.errors import ConfigError, building

#: Frames per sequence in the generated training folder (and two val frames of a third drive's kind).
TRAIN = {"0001TP": 3, "0006R0": 4, "0016E5": 5}


def write_sequences(root: Path) -> Path:
    """A folder dataset whose file names carry their sequence, as CamVid's do."""
    write_folder(root, {"train": sum(TRAIN.values()), "val": 2}, size=32)
    frames = sorted((root / "train/images").iterdir())
    names = [f"{seq}_{i:06d}.png" for seq, count in TRAIN.items() for i in range(count)]
    for frame, name in zip(frames, names, strict=True):
        frame.rename(frame.with_name(name))
        (root / "train/masks" / frame.name).rename(root / "train/masks" / name)
    for i, frame in enumerate(sorted((root / "val/images").iterdir())):
        frame.rename(frame.with_name(f"0016E5_{900 + i:06d}.png"))
        (root / "val/masks" / frame.name).rename(root / "val/masks" / f"0016E5_{900 + i:06d}.png")
    return root


def datamodule(root: Path, *overrides: str) -> SegmentationDataModule:
    cfg = compose_train(
        ["data=folder", f"data.root={root}", "data.num_classes=3", "data.image_size=32", "data.num_workers=0",
         f"paths.data_dir={root.parent}", "paths.output_dir=unused", *overrides]
    )  # fmt: skip
    with building("data"):
        return instantiate(cfg.data)


def names(dm: SegmentationDataModule, split: str) -> set[str]:
    return {sample.image.name for sample in dm.datasets[split].frames.samples}


@pytest.mark.parametrize("held", [["0001TP"], ["0006R0", "0016E5"]])
def test_held_out_sequences_validate_and_leave_train(tmp_path: Path, held: list[str]) -> None:
    root = write_sequences(tmp_path / "ds")
    dm = datamodule(root, f"data.val_sequences=[{','.join(held)}]")
    dm.setup("fit")
    train, val = names(dm, "train"), names(dm, "val")
    all_train = {p.name for p in (root / "train/images").iterdir()}
    assert val == {n for n in all_train if n.split("_")[0] in held}
    assert train == all_train - val and not train & val
    assert dm.split_sizes() == {"train": len(all_train) - len(val), "val": len(val)}
    assert len(val) == sum(TRAIN[s] for s in held)
    summary = dm.validation_summary()
    assert summary["split"] == "sequences" and summary["sequences"] == held
    assert "sequence-disjoint" in summary["description"]


def test_without_the_option_the_standard_splits_are_unchanged(tmp_path: Path) -> None:
    root = write_sequences(tmp_path / "ds")
    dm = datamodule(root)
    dm.setup("fit")
    assert names(dm, "train") == {p.name for p in (root / "train/images").iterdir()}
    assert names(dm, "val") == {p.name for p in (root / "val/images").iterdir()}
    assert dm.validation_summary()["split"] == "split"


def test_held_out_sequences_need_no_val_folder(tmp_path: Path) -> None:
    root = write_sequences(tmp_path / "ds")
    shutil.rmtree(root / "val")
    dm = datamodule(root, "data.val_sequences=[0006R0]")
    assert dm.has_split("val")
    dm.setup("fit")
    assert dm.split_sizes()["val"] == TRAIN["0006R0"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.val_sequences=[0001TP,Seq05VD]"],
            r"^data\.val_sequences: .*Seq05VD.* are 0001TP, 0006R0, 0016E5$",
        ),
        (
            ["data.val_sequences=[0001TP,0006R0,0016E5]"],
            r"^data\.val_sequences=.*every training sequence.*keep",
        ),
        (
            ["data.val_sequences=[0001TP]", "data.val_fraction=0.2"],
            r"^data\.val_sequences=.*data\.val_fraction=null",
        ),
    ],
)
def test_mistakes_are_one_line_naming_the_key(tmp_path: Path, overrides: list[str], message: str) -> None:
    root = write_sequences(tmp_path / "ds")
    with pytest.raises(ConfigError, match=message) as caught:
        datamodule(root, *overrides).setup("fit")
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(not (CAMVID / "train").is_dir(), reason=f"CamVid not found at {CAMVID}")
def test_camvid_0001tp_held_out() -> None:
    cfg = compose_train(
        ["data=camvid", f"data.root={CAMVID}", "data.val_sequences=[0001TP]", "data.cache=false",
         "paths.output_dir=unused"]
    )  # fmt: skip
    dm = instantiate(cfg.data)
    assert dm.split_sizes() == {"train": 305, "val": 62}
    found, _ = dm.samples()
    assert {s.image.name[:6] for s in found["val"]} == {"0001TP"}
    assert not {s.image.name for s in found["train"]} & {s.image.name for s in found["val"]}


@pytest.mark.slow
def test_tiny_training_validates_on_the_held_out_sequence(tmp_path: Path) -> None:
    from seg.training.pipeline import train

    root = write_sequences(tmp_path / "ds")
    cfg = compose_train(
        ["data=folder", f"data.root={root}", "data.num_classes=3", "data.image_size=32", "data.num_workers=0",
         "data.batch_size=4", "data.val_sequences=[0006R0]", "model.net.base_channels=8", "trainer=cpu",
         "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "logger=none",
         f"paths.data_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"]
    )  # fmt: skip
    metrics = train(cfg)
    assert metrics["status"] == "finished" and metrics["best"] is not None
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["validation"]["split"] == "sequences"
    assert written["validation"]["sizes"] == {
        "train": sum(TRAIN.values()) - TRAIN["0006R0"],
        "val": TRAIN["0006R0"],
    }
