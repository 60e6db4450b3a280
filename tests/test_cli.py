"""``python -m seg.train`` as a user runs it: sweeps, and one clear line for each user mistake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY, run_cli
from PIL import Image


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and "Warning" not in line]


@pytest.mark.slow
def test_multirun_sweep_makes_one_run_dir_per_value(tmp_path: Path, data_cache: Path) -> None:
    result = run_cli(
        [
            "seg.train",
            "-m",
            "model.optimizer.lr=1e-2,1e-3",
            *[o for o in TINY if not o.startswith(("trainer.max_epochs", "model.optimizer.lr"))],
            "trainer.max_epochs=2",
            f"paths.log_dir={tmp_path}",
            f"paths.data_dir={data_cache}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweeps = list((tmp_path / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    lrs = []
    for job in jobs:
        assert (job / "model.pt").is_file()
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        lrs += [float(o.split("=")[1]) for o in overrides if o.startswith("model.optimizer.lr=")]
    assert lrs == [1e-2, 1e-3]


@pytest.mark.slow
def test_missing_data_root_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dataset"
    result = run_cli(
        [
            "seg.train",
            "data=folder",
            f"data.root={missing}",
            "data.num_classes=2",
            f"paths.log_dir={tmp_path}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = _error_lines(result.stderr)
    assert lines == [
        f"error: data.root {missing} does not exist: expected <root>/train/images/ with masks in "
        "<root>/train/masks/; put the dataset there or pass data.root=DIR"
    ]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_unknown_config_option_lists_the_valid_ones(tmp_path: Path) -> None:
    result = run_cli(["seg.train", "data=nope", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'data/nope'" in result.stderr
    assert "synthetic" in result.stderr and "folder" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_image_mask_size_mismatch_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32)).save(root / split / "images" / f"{i}.png")
            size = (32, 16) if (split, i) == ("val", 1) else (32, 32)
            Image.fromarray(np.zeros(size[::-1], dtype=np.uint8)).save(root / split / "masks" / f"{i}.png")
    result = run_cli(
        ["seg.train", "data=folder", f"data.root={root}", "data.num_classes=2", f"paths.log_dir={tmp_path}"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = _error_lines(result.stderr)
    assert len(lines) == 1
    assert lines[0].startswith(f"error: image {root}/val/images/1.png is 32x32 but its mask")
    assert "32x16" in lines[0]


@pytest.mark.slow
def test_bad_config_value_names_the_key(tmp_path: Path) -> None:
    result = run_cli(["seg.train", "data.batch_size=0", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    assert _error_lines(result.stderr) == ["error: data.batch_size=0 is not valid: expected an integer >= 1"]
