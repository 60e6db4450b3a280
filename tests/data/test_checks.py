from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image
from support import CONF_DIR, run_cli
from support.datasets import binary_255, write_folder

from seg.reports.data_report import check_data


def _check(root: Path, tmp_path: Path, *overrides: str):
    args = [
        "seg.check_data",
        "data=folder",
        f"data.root={root}",
        "data.num_classes=3",
        f"paths.log_dir={tmp_path}",
        *overrides,
    ]
    return run_cli(args, cwd=tmp_path)


def test_good_data_passes_and_writes_the_histogram(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", {"train": 3, "val": 2}, size=32)
    result = _check(root, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "== train: 3 samples" in result.stdout and "32x32 (3)" in result.stdout
    assert "OK: the data can be trained on." in result.stdout
    run = next((tmp_path / "check_data" / "runs").iterdir())
    with Image.open(run / "class_histogram.png") as chart:
        assert chart.size[0] > 300
    report = json.loads((run / "report.json").read_text())
    assert sum(report["train"]["pixels"].values()) == 3 * 32 * 32


def test_broken_data_lists_every_problem_and_fails(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", {"train": 3, "val": 2}, size=32)
    (root / "train/images/001.png").write_text("not a png")
    Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(root / "val/masks/000.png")
    Image.new("L", (16, 16)).save(root / "val/masks/001.png")
    Image.new("RGB", (32, 32)).save(root / "train/images/lonely.png")
    result = _check(root, tmp_path)
    assert result.returncode == 2
    out = result.stdout
    assert "PROBLEM (image without mask)" in out and "lonely.png" in out
    assert "cannot read image" in out and "001.png" in out
    assert "holds label value(s) [7]" in out
    assert "is 32x32 but its mask" in out and "is 16x16" in out
    assert result.stderr.strip().splitlines()[-1].startswith("error: 4 problem(s) found")


def test_0_255_masks_show_their_values_and_the_mapping_applied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_folder(tmp_path / "ds", {"train": 3, "val": 2}, num_classes=2, size=32, encode=binary_255)
    train = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "train/masks").iterdir())])
    foreground = int((train == 255).sum())
    # In the test process (the command line around it is the other tests' business): seconds less.
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "check_data",
            ["data=folder", f"data.root={root}", "data.num_classes=2",
             "data.mask_format.mask_values={0:0,255:1}", "data.class_names=[background,foreground]",
             f"paths.data_dir={tmp_path}"],
        )  # fmt: skip
    run = tmp_path / "report"
    check_data(cfg, run)
    out = capsys.readouterr().out
    mapping = (
        "Masks: mask values -> classes (data.mask_format.mask_values): 0 -> background, 255 -> foreground"
    )
    assert mapping in out
    train_part = out.split("== train")[1].split("== val")[0]
    rows = {line.split()[0]: line.split() for line in train_part.splitlines() if "-> " in line}
    assert rows["0"][1] == str(train.size - foreground) and rows["0"][-1] == "background"
    assert rows["255"][1] == str(foreground) and rows["255"][-1] == "foreground"
    report = json.loads((run / "report.json").read_text())
    assert report["train"]["mask_values"] == [
        {"value": "0", "pixels": train.size - foreground, "class": "background"},
        {"value": "255", "pixels": foreground, "class": "foreground"},
    ]
    assert report["train"]["pixels"] == {"background": train.size - foreground, "foreground": foreground}
