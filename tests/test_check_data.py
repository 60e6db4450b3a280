from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import run_cli
from fixtures import write_folder
from PIL import Image


def _check(root: Path, tmp_path: Path):
    args = [
        "seg.check_data",
        "data=folder",
        f"data.root={root}",
        "data.num_classes=3",
        f"paths.log_dir={tmp_path}",
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
