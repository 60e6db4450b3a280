"""Every run directory describes itself: a model card whose metadata parses, whose scores are the
run's own, whose pictures exist and whose snippet runs, kept true by seg.evaluate and seg.export."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from support import CONF_DIR

from seg.inference.evaluation import evaluate
from seg.inference.formats import export_run
from seg.reports.model_card import write_model_card
from seg.rundir import RunDir


def front_matter(card: str) -> dict[str, Any]:
    """The card's YAML metadata (between the first two ``---`` lines)."""
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def scores(card: str) -> dict[tuple[str, str], float]:
    """``(split, metric) -> value`` of the card's ``model-index``."""
    (model,) = front_matter(card)["model-index"]
    return {
        (result["dataset"]["split"], metric["type"]): metric["value"]
        for result in model["results"]
        for metric in result["metrics"]
    }


def test_a_training_run_writes_a_card_that_is_true_to_its_files(
    trained_run: dict[str, Any], tmp_path: Path
) -> None:
    run = RunDir.of(trained_run["dir"])
    card = run.model_card.read_text()
    metrics = trained_run["metrics"]
    meta = front_matter(card)
    assert (meta["library_name"], meta["license"], meta["pipeline_tag"]) == (
        "seg",
        "unknown",
        "image-segmentation",
    )
    assert scores(card) == {
        ("val", "dice"): metrics["best"]["val/dice"],
        ("val", "iou"): metrics["best"]["val/iou"],
        ("test", "dice"): metrics["test"]["test/dice"],
        ("test", "iou"): metrics["test"]["test/iou"],
    }
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", card)
    assert {"images/curves.png", "images/val_predictions.png"} <= set(links)
    assert all((run.path / link).is_file() for link in links)
    assert f"**Parameters:** {metrics['network']['parameters']:,}" in card
    assert "Random initialisation" in card
    for name in ("background", "speckle"):  # the per-class tables and the class list
        assert card.count(f"| {name} |") >= 3

    snippet = re.search(r"```python\n(.*?)```", card, re.S)
    assert snippet is not None
    done = subprocess.run(
        [sys.executable, "-c", snippet.group(1)], cwd=run.path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("prediction (1, 240, 320) classes ['background',")


def test_evaluate_adds_its_splits_and_export_its_files(trained_run: dict[str, Any], tmp_path: Path) -> None:
    run = RunDir.of(shutil.copytree(trained_run["dir"], tmp_path / "run"))
    reports = {}
    for split in ("test", "val"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                config_name="evaluate", overrides=[f"run={run.path}", f"split={split}", "precision=32"]
            )
        reports[split] = evaluate(cfg, tmp_path / "unused")
    card = run.model_card.read_text()
    found = scores(card)
    for split, report in reports.items():  # both kept, each as seg.evaluate measured it
        assert found[(split, "dice")] == pytest.approx(report["mean"]["dice"])
        assert f"![{split}: confusion matrix](eval/{split}/confusion_matrix.png)" in card
    assert found[("val", "dice")] != trained_run["metrics"]["best"]["val/dice"]  # replaced, not kept

    export_run(str(run.path), "torchscript")
    card = run.model_card.read_text()
    row = re.search(r"\| torchscript \| `export/model.pt` \| ([0-9.]+)% of pixels \| ([0-9.e+-]+) \|", card)
    assert row is not None and float(row.group(1)) == 100.0 and float(row.group(2)) < 1e-4
    assert scores(card) == found  # the results stay


def test_limitations_are_derived_from_the_run(trained_run: dict[str, Any], tmp_path: Path) -> None:
    run = RunDir.of(shutil.copytree(trained_run["dir"], tmp_path / "run"))
    metrics = run.read_metrics()
    assert metrics is not None
    metrics["validation"]["split"] = "fraction"
    metrics["stop_reason"] = "time budget reached after 50 s of the 60 s budget"
    metrics["train_pixels"]["pixels"][3] = 0
    run.metrics.write_text(__import__("json").dumps(metrics))
    card = write_model_card(run).read_text()
    limits = card.split("## Limitations")[1]
    assert "random share of the training data's own frames" in limits
    assert "cut short by its time budget: time budget reached after 50 s" in limits
    assert "never occur in the training split: wide_stripes" in limits


def test_an_override_holding_an_interpolation_is_shown_as_typed(
    trained_run: dict[str, Any], tmp_path: Path
) -> None:
    """Hydra saves overrides as typed; one that refers to another key (a list of transforms sized
    by ``${data.image_size}``) is text in the card, not resolved against the overrides file."""
    run = RunDir.of(shutil.copytree(trained_run["dir"], tmp_path / "run"))
    typed = "data.train_transforms=[{_target_:albumentations.RandomCrop,height:${data.image_size}}]"
    run.overrides.parent.mkdir(exist_ok=True)
    run.overrides.write_text(yaml.safe_dump([typed, "trainer.max_epochs=3"]))
    card = write_model_card(run).read_text()
    assert f"`{typed}` `trainer.max_epochs=3`" in card
