"""seg.renamed: old key spellings read under the new name, with one notice each."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf
from support import cli_ok, run_cli

from seg.data.masks import MaskFormat
from seg.errors import ConfigError
from seg.lightning_module import SegmentationModule
from seg.renamed import rename_overrides, upgrade_saved_config


def test_old_keys_are_spelled_the_new_way_with_one_notice_each() -> None:
    overrides, notices = rename_overrides("predict", ["model_path=a/model.pt", "input=x", "+model_path.y=1"])
    assert overrides == ["run=a/model.pt", "input=x", "+run.y=1"]
    assert notices == ["note: model_path= is now run= (model_path= keeps working for this release)"]
    assert rename_overrides("train", ["model_path=a", "trainer=cpu"]) == (["model_path=a", "trainer=cpu"], [])
    assert rename_overrides("predict", ["run=a", "model_paths=b"]) == (["run=a", "model_paths=b"], [])


def test_two_old_keys_that_became_one_keep_the_inner_path(tmp_path: Path) -> None:
    model = tmp_path / "export" / "model.onnx"
    overrides, notices = rename_overrides(
        "evaluate", [f"run_dir={tmp_path}", "split=val", f"model_path={model}"]
    )
    assert overrides == [f"run={model}", "split=val"] and len(notices) == 2
    overrides, _ = rename_overrides("evaluate", [f"model_path={model}", f"run_dir={tmp_path}"])
    assert overrides == [f"run={model}"]
    with pytest.raises(ConfigError, match=r"run_dir=.* and model_path=.* both set run= and disagree"):
        rename_overrides("evaluate", [f"run_dir={tmp_path / 'a'}", f"model_path={tmp_path / 'b' / 'm.pt'}"])


def test_the_new_key_beside_an_old_one_is_one_value_not_the_last_one(tmp_path: Path) -> None:
    model = tmp_path / "export" / "model.onnx"
    overrides, notices = rename_overrides("evaluate", [f"run={tmp_path}", f"model_path={model}"])
    assert overrides == [f"run={model}"] and len(notices) == 1
    overrides, _ = rename_overrides("export", [f"model_path={model}", "format=onnx", f"run={tmp_path}"])
    assert overrides == [f"run={model}", "format=onnx"]
    with pytest.raises(ConfigError, match=r"run=.*/a and model_path=.*/b both set run= and disagree"):
        rename_overrides("predict", [f"run={tmp_path / 'a'}", f"model_path={tmp_path / 'b'}"])
    assert rename_overrides("predict", ["run=a", "run=b"]) == (["run=a", "run=b"], [])  # Hydra's to judge
    with pytest.raises(
        ConfigError, match=r"^data/decoder=binary and data/mask_format=rgb both set data/mask_format=: give"
    ):
        rename_overrides("train", ["data/decoder=binary", "data/mask_format=rgb"])


@pytest.mark.slow
def test_the_old_spelling_works_on_the_command_line(cli_run: Path, tmp_path: Path) -> None:
    """``seg.export model_path=<run>`` exports as ``run=<run>`` does, and says the new name once."""
    result = cli_ok(["seg.export", f"model_path={cli_run}", f"output={tmp_path}"], cwd=tmp_path)
    assert result.stderr.count("note: model_path= is now run=") == 1
    assert (tmp_path / "model.pt").is_file()
    result = run_cli(["seg.evaluate", f"run_dir={tmp_path}/a", f"model_path={tmp_path}/b.pt"], cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1].startswith("error: run_dir=")
        and "traceback" not in result.stderr.lower()
    )


def test_a_config_saved_before_the_renames_reads_with_todays_names() -> None:
    saved = OmegaConf.create(
        {
            "model": {
                "_target_": "seg.module.SegmentationModule",
                "net": {"_target_": "seg.models.unet.UNet"},
            },
            "data": {
                "num_classes": 3,
                "decoder": {"_target_": "seg.data.masks.MaskDecoder", "num_classes": "${data.num_classes}"},
                "train_transforms": [{"_target_": "seg.module.SegmentationModule"}],
            },
        }
    )
    upgraded, notices = upgrade_saved_config(saved)
    assert "decoder" not in upgraded.data and upgraded.data.mask_format.num_classes == 3
    assert OmegaConf.to_container(upgraded.data.mask_format)["num_classes"] == "${data.num_classes}"
    assert get_class(upgraded.data.mask_format._target_) is MaskFormat
    assert get_class(upgraded.model._target_) is SegmentationModule
    assert upgraded.data.train_transforms[0]._target_ == "seg.lightning_module.SegmentationModule"
    assert upgraded.model.net._target_ == "seg.models.unet.UNet"
    assert "data.decoder is now data.mask_format" in notices and len(notices) == 4
    assert upgrade_saved_config(upgraded)[1] == []


@pytest.mark.slow
def test_an_old_run_and_the_old_mask_spelling_still_work(cli_run: Path, tmp_path: Path) -> None:
    """A run whose saved config uses the old names evaluates as it did; ``data/decoder=`` on a
    command line is ``data/mask_format=``, with one notice."""
    run = tmp_path / "old_run"
    shutil.copytree(cli_run, run, ignore=shutil.ignore_patterns("eval"))
    saved = run / ".hydra" / "config.yaml"
    text = saved.read_text()
    assert "mask_format:" in text and "seg.lightning_module.SegmentationModule" in text
    text = text.replace("mask_format:", "decoder:").replace(
        "seg.data.masks.MaskFormat", "seg.data.masks.MaskDecoder"
    )
    saved.write_text(text.replace("seg.lightning_module.SegmentationModule", "seg.module.SegmentationModule"))
    result = cli_ok(["seg.evaluate", f"run={run}", "split=val", "num_samples=0"], cwd=tmp_path)
    assert "data.decoder is now data.mask_format" in result.stderr + result.stdout
    result = cli_ok(["seg.check_data", "data/decoder=binary", "--cfg", "job"], cwd=tmp_path)
    assert "note: data/decoder= is now data/mask_format=" in result.stderr
    assert OmegaConf.create(result.stdout).data.mask_format._target_ == "seg.data.masks.BinaryMask"
