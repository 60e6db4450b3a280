"""``--help`` shows the command's own groups and keys with their composed defaults, required keys
marked, and none of the private config files."""

from __future__ import annotations

import subprocess
import sys

from support import REPO

from seg.command_help import help_text, program_name


def _rows(page: str) -> dict[str, str]:
    """``key -> the rest of its row`` for the key rows of a help page (a leading * kept)."""
    rows = {}
    for line in page.split("Keys (")[1].splitlines()[1:]:
        if line.startswith(("  ", " *")) and line.strip():
            key = line[2:].split()[0]
            rows[line[1].strip() + key] = line[2 + len(key) :].strip()
    return rows


def test_predict_help_marks_its_required_keys_and_lists_only_its_groups() -> None:
    page = help_text("predict", "Predict.", [], "seg-predict")
    rows = _rows(page)
    assert rows["*run"].startswith("(required)")
    assert rows["*input"].startswith("(required)")
    assert rows["alpha"].startswith("0.5")
    assert "tta             none, flip, flip_scale" in page
    groups = page.split("Config groups")[1].split("Keys (")[0]
    assert "data" not in groups and "loss" not in groups  # train's groups, not predict's
    assert "_loader" not in page and "_module" not in page


def test_train_help_shows_defaults_as_composed_with_the_other_overrides() -> None:
    plain = _rows(help_text("train", "Train.", [], "seg-train"))
    camvid = _rows(help_text("train", "Train.", ["data=camvid", "model.optimizer.lr=0.01"], "seg-train"))
    assert plain["data.image_size"].startswith("128")
    assert camvid["data.image_size"].startswith("256")
    assert camvid["model.optimizer.lr"].startswith("0.01 ")
    assert "learning rate" in camvid["model.optimizer.lr"]  # the comment beside the key in conf/
    assert not any(key.startswith("*") for key in plain)  # training needs nothing more
    page = help_text("train", "Train.", ["model=smp"], "seg-train")
    assert "model.net.base_channels" not in _rows(page)  # not a key of smp
    assert "model.net.encoder_weights" in _rows(page)


def test_the_program_is_named_as_the_user_started_it() -> None:
    assert program_name("check_data", "/venv/bin/seg-check-data") == "seg-check-data"
    assert program_name("train", "/repo/seg/train.py") == "python -m seg.train"


def test_help_from_the_command_line_exits_cleanly_and_starts_no_run(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "seg.evaluate", "--help", "split=val"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("python -m seg.evaluate: Score a trained model")
    assert _rows(done.stdout)["split"].startswith("val")
    assert not (tmp_path / "outputs").exists()
