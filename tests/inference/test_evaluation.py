"""seg.evaluate: the numbers of trainer.test, from the checkpoint and from TorchScript; the report files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from support import CONF_DIR, cli_ok, run_cli, synthetic_class_names

from seg.errors import SegError
from seg.inference.evaluation import evaluate
from seg.lightning_module import SegmentationModule
from seg.metrics import metric_key
from seg.rundir import RunDir

CLASS_NAMES = synthetic_class_names()


def _eval_cfg(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=list(overrides))


def test_checkpoint_and_torchscript_give_the_same_numbers(
    trained_run: dict[str, Any], tmp_path: Path
) -> None:
    best = trained_run["metrics"]["paths"]["best_checkpoint"]
    reports = []
    for name, model in (("ckpt", best), ("pt", trained_run["dir"] / "model.pt")):
        cfg = _eval_cfg(f"run={model}", f"output_dir={tmp_path / name}", "precision=32")
        reports.append(evaluate(cfg, tmp_path))
    ckpt, script = reports
    assert ckpt["confusion_matrix"] == script["confusion_matrix"]
    assert ckpt["mean"] == pytest.approx(script["mean"])
    assert ckpt["images"] == 16


def test_evaluate_equals_trainer_test_on_the_same_weights(
    trained_run: dict[str, Any], tmp_path: Path
) -> None:
    """``seg.evaluate run=<run dir>`` (the run's model.pt, its saved data config) scores the test split
    exactly as Lightning's ``trainer.test`` does with the run's best checkpoint, class by class."""
    run_dir = RunDir.of(trained_run["dir"])
    module = SegmentationModule.load_from_checkpoint(run_dir.best_checkpoint(), map_location="cpu")
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, precision="32-true", logger=False, enable_progress_bar=False
    )
    tested = trainer.test(module, datamodule=instantiate(trained_run["cfg"].data), verbose=False)[0]

    cfg = _eval_cfg(f"run={run_dir.path}", f"output_dir={tmp_path}", "precision=32")
    report = evaluate(cfg, tmp_path)
    assert report["model"] == run_dir.model_file and report["images"] == 16
    assert 0.1 < report["mean"]["dice"] <= 1  # above chance (13 classes): the comparison is not of NaNs
    close = {"abs": 1e-6, "nan_ok": True}
    for ours, theirs in (("dice", "dice"), ("iou", "iou"), ("class_accuracy", "accuracy")):
        assert report["mean"][ours] == pytest.approx(tested[f"test/{theirs}"], **close), ours
    assert report["mean"]["pixel_accuracy"] == pytest.approx(tested["test/pixel_accuracy"], **close)
    for row in report["per_class"]:
        for metric in ("dice", "iou", "accuracy"):
            key = f"test/{metric}/{metric_key(row['class'])}"
            assert row[metric] == pytest.approx(tested[key], **close), key


def test_report_files(trained_run: dict[str, Any], tmp_path: Path) -> None:
    cfg = _eval_cfg(
        f"run={trained_run['dir'] / 'model.pt'}", "num_samples=3",
        f"output_dir={tmp_path}", "split=val",
    )  # fmt: skip
    report = evaluate(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["class"] for row in saved["per_class"]] == list(CLASS_NAMES)
    assert set(saved["mean"]) == {"dice", "iou", "class_accuracy", "pixel_accuracy"}
    assert saved["mean"]["dice"] == pytest.approx(report["mean"]["dice"])
    assert sum(row["pixel_share"] for row in saved["per_class"]) == pytest.approx(1.0)
    assert "| **mean** |" in (tmp_path / "metrics.md").read_text()
    with Image.open(tmp_path / "confusion_matrix.png") as image:
        assert image.size[0] >= 400 and image.size[1] >= 400
    samples = sorted((tmp_path / "samples").iterdir())
    assert len(samples) == 3
    with Image.open(samples[0]) as image:
        width, height = image.size
        assert width > 3 * height  # four panels side by side


@pytest.mark.slow
def test_a_run_from_the_command_line(cli_run: Path, tmp_path: Path) -> None:
    result = cli_ok(["seg.evaluate", f"run={cli_run}", "num_samples=1"], cwd=tmp_path)
    assert "| **mean** |" in result.stdout
    out = cli_run / "eval" / "test"
    assert (out / "metrics.json").is_file() and (out / "confusion_matrix.png").is_file()
    assert len(list((out / "samples").glob("*.png"))) == 1


@pytest.mark.slow
def test_data_root_on_the_command_line_moves_a_runs_data(cli_run: Path, tmp_path: Path) -> None:
    """``run=<run> data.root=<copy>`` reads the run's data from the copy: same frames, same
    numbers, and the report names the copy."""
    saved_root = Path(OmegaConf.load(cli_run / "config_resolved.yaml").data.root)
    moved = tmp_path / "moved"
    shutil.copytree(saved_root, moved)
    args = [f"run={cli_run}", "split=val", "precision=32", f"output_dir={tmp_path / 'moved_eval'}"]
    cli_ok(["seg.evaluate", *args, f"data.root={moved}"], cwd=tmp_path)
    report = json.loads((tmp_path / "moved_eval" / "metrics.json").read_text())
    assert Path(report["data_root"]).is_relative_to(moved)

    in_place = evaluate(_eval_cfg(*args[:3], f"output_dir={tmp_path / 'in_place'}"), tmp_path)
    assert not Path(in_place["data_root"]).is_relative_to(moved)
    assert report["images"] == in_place["images"] > 0
    assert report["confusion_matrix"] == in_place["confusion_matrix"]


def test_model_for_other_data_is_refused(trained_run: dict[str, Any], tmp_path: Path) -> None:
    cfg = _eval_cfg(
        "data=folder",
        f"data.root={tmp_path}",
        "data.num_classes=3",
        f"run={trained_run['dir'] / 'model.pt'}",
    )
    with pytest.raises(SegError, match="predicts 13 classes but the data has 3"):
        evaluate(cfg, tmp_path)


def test_a_model_file_in_a_run_is_scored_on_its_data_into_the_commands_folder(
    trained_run: dict[str, Any], tmp_path: Path
) -> None:
    """``run=<run>/export/<file>``: the run holding the file brings the data; the report goes to the
    command's own folder, since the run's ``eval/`` and model card describe its ``model.pt``."""
    run = tmp_path / "run"
    shutil.copytree(trained_run["dir"], run, ignore=shutil.ignore_patterns("eval"))
    (run / "export").mkdir()
    shutil.copy(run / "model.pt", run / "export" / "copy.pt")
    report = evaluate(_eval_cfg(f"run={run / 'export' / 'copy.pt'}", "precision=32"), tmp_path / "command")
    own = evaluate(_eval_cfg(f"run={run}", "precision=32"), tmp_path / "unused")
    assert (tmp_path / "command" / "eval" / "test" / "metrics.json").is_file()
    assert (run / "eval" / "test" / "metrics.json").is_file() and not (tmp_path / "unused").exists()
    assert report["confusion_matrix"] == own["confusion_matrix"] and report["images"] == 16


def test_a_model_file_outside_a_run_needs_its_data_named(trained_run: dict[str, Any], tmp_path: Path) -> None:
    shutil.copy(trained_run["dir"] / "model.pt", tmp_path / "model.pt")
    shutil.copy(trained_run["dir"] / "classes.json", tmp_path / "classes.json")
    with pytest.raises(SegError, match=r"is not inside a training run.*add data=<dataset> data.root=<dir>"):
        evaluate(_eval_cfg(f"run={tmp_path / 'model.pt'}"), tmp_path)


def test_run_saved_before_a_loading_setting_existed_takes_its_default(
    trained_run: dict[str, Any], tmp_path: Path
) -> None:
    """A run saved by a seg without a newer ``conf/data/_loader.yaml`` key (here ``val_sequences``)
    is evaluated with that key's default, exactly as before."""
    run = tmp_path / "older_run"
    shutil.copytree(trained_run["dir"], run)
    config_file = RunDir.of(run).saved_config()
    assert config_file is not None
    saved = OmegaConf.load(config_file)
    del saved.data["val_sequences"]
    OmegaConf.save(saved, config_file)
    older = evaluate(_eval_cfg(f"run={run}", "precision=32", f"output_dir={tmp_path / 'a'}"), tmp_path)
    today = evaluate(
        _eval_cfg(f"run={trained_run['dir']}", "precision=32", f"output_dir={tmp_path / 'b'}"), tmp_path
    )
    assert older["confusion_matrix"] == today["confusion_matrix"]


def test_run_saved_with_other_data_settings_is_one_line(trained_run: dict[str, Any], tmp_path: Path) -> None:
    """A run directory whose saved data config lacks arguments this version requires (a run of an
    older seg) is refused in one line that names the way around it, not a TypeError."""
    run = tmp_path / "old_run"
    (run / ".hydra").mkdir(parents=True)
    (run / "model.pt").write_bytes((trained_run["dir"] / "model.pt").read_bytes())
    (run / "classes.json").write_bytes((trained_run["dir"] / "classes.json").read_bytes())
    (run / ".hydra" / "config.yaml").write_text(
        "data:\n  _target_: seg.data.datamodule.SegmentationDataModule\n  root: somewhere\n"
    )
    with pytest.raises(SegError, match=r"its saved data config does not fit this version of seg .*"
                       r"name the data instead: run=.*old_run data=<name>"):  # fmt: skip
        evaluate(_eval_cfg(f"run={run}"), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"", "cannot load model"), (b"not a model at all", "cannot load model")],
)
def test_bad_model_files_are_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    model = tmp_path / "model.pt"
    if content is not None:
        model.write_bytes(content)
    result = run_cli(["seg.evaluate", f"run={model}", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.mark.slow
def test_truncated_model_is_one_line(cli_run: Path, tmp_path: Path) -> None:
    data = (cli_run / "model.pt").read_bytes()
    model = tmp_path / "model.pt"
    model.write_bytes(data[: len(data) // 2])
    result = run_cli(["seg.evaluate", f"run={model}", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load model {model}"), result.stderr
