"""A command line Hydra cannot compose is one ``error:`` line naming the key or option and the fix."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig
from support import cli_environ, compose_train

from seg.command import command
from seg.config import CONF_DIR
from seg.config_errors import config_error_message
from seg.errors import SegError


def _message(overrides: list[str], config_name: str = "train") -> str:
    with (
        pytest.raises(Exception) as caught,
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
    ):
        compose(config_name=config_name, overrides=overrides)
    return config_error_message(caught.value, config_name)


@pytest.mark.parametrize(
    ("overrides", "suggestion"),
    [
        (["callbacks.early_stopping.patiense=3"], "callbacks.early_stopping.patience"),
        (["debug=overfit", "trainer.overfit_batchez=1"], "trainer.overfit_batches"),
        (["logger=mlflow", "logger.mlflow.trackin_uri=http://127.0.0.1:5000"], "logger.mlflow.tracking_uri"),
        (["data.rooot=/data"], "data.root"),
        (["model.optimizer.lrr=0.1"], "model.optimizer.lr"),
        (["data_root=/data"], "data.root"),
        (["nmae=baseline"], "name"),
    ],
)
def test_a_misspelt_key_names_the_key_it_resembles(overrides: list[str], suggestion: str) -> None:
    key = overrides[-1].split("=")[0]
    assert _message(overrides) == f"{key} is not a key of seg.train's config: did you mean {suggestion}?"


def test_an_old_evaluate_key_points_to_the_one_that_replaced_it() -> None:
    assert _message(["data_root=/data"], "evaluate") == (
        "data_root is not a key of seg.evaluate's config: did you mean data.root?"
    )


def test_a_new_argument_of_an_instantiated_object_says_how_to_add_it() -> None:
    assert _message(["trainer.accumulate_grad_batchez_twice=2"]) == (
        "trainer.accumulate_grad_batchez_twice is not a key of seg.train's config; to pass a new "
        "argument to Trainer, write +trainer.accumulate_grad_batchez_twice=..., or see every key "
        "with: python -m seg.train --cfg job"
    )
    # The + form it names does compose (Lightning then checks the argument itself).
    assert (
        compose_train(["+trainer.accumulate_grad_batchez_twice=2"]).trainer.accumulate_grad_batchez_twice == 2
    )


def test_an_unknown_key_outside_any_object_points_to_the_whole_config() -> None:
    assert _message(["quite_unrelated=1"], "export") == (
        "quite_unrelated is not a key of seg.export's config; see every key with: "
        "python -m seg.export --cfg job"
    )


def test_an_unknown_group_option_lists_the_real_ones_and_the_closest() -> None:
    assert _message(["loss=dice_lovaz"]) == (
        "loss=dice_lovaz is not an option of loss: choose one of ce, combo, dice, dice_ce, "
        "dice_lovasz, focal, lovasz, tversky; did you mean loss=dice_lovasz?"
    )
    # Files starting with _ are shared pieces, not options.
    assert "_loader" not in _message(["data=nope"])


def test_an_override_that_does_not_parse_is_named() -> None:
    message = _message(["model.optimizer.lr=[1,"])
    assert message.startswith("cannot read the override 'model.optimizer.lr=[1,': ")
    assert "\n" not in message


@command("train")
def _task(cfg: DictConfig) -> str | None:
    """Runs once Hydra has composed: reports how Hydra would report the task's own errors."""
    return os.environ.get("HYDRA_FULL_ERROR")


def _stopped_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """What ``_task`` run with ``argv`` prints on stderr, having exited with status 2."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as stopped:
        _task()
    assert stopped.value.code == 2
    return capsys.readouterr().err.strip()


def test_the_command_exits_2_with_one_line_and_runs_its_task_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _stopped_line(["seg.train", "loss=hinge", f"paths.log_dir={tmp_path}"], monkeypatch, capsys)
    assert err.startswith("error: loss=hinge is not an option of loss: choose one of ce,") and "\n" not in err
    assert "HYDRA_FULL_ERROR" not in os.environ

    monkeypatch.setattr("sys.argv", ["seg.train", f"paths.log_dir={tmp_path}", "hydra.output_subdir=null"])
    assert _task() is None  # the task sees the user's setting: unset
    assert "HYDRA_FULL_ERROR" not in os.environ
    GlobalHydra.instance().clear()


def test_hydra_full_error_keeps_hydras_own_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr("sys.argv", ["seg.train", "data.rooot=x", f"paths.log_dir={tmp_path}"])
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'data\.rooot'"):
        _task()
    GlobalHydra.instance().clear()


def test_a_sweeps_bad_option_is_one_line_before_any_job_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr("sys.argv", ["seg.train", "-m", "loss=dice,hinge", f"paths.log_dir={tmp_path}"])
    with pytest.raises(SystemExit) as stopped:
        _task()
    assert stopped.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [
        "error: loss=hinge is not an option of loss: choose one of ce, combo, dice, dice_ce, "
        "dice_lovasz, focal, lovasz, tversky"
    ]
    assert not list((tmp_path / "train" / "multiruns").glob("*/0"))
    GlobalHydra.instance().clear()


def _failing(config_name: str, seen: dict[str, object]) -> Callable[[], None]:
    def task(cfg: DictConfig) -> None:
        seen["HYDRA_FULL_ERROR"] = os.environ.get("HYDRA_FULL_ERROR")
        raise SegError(f"{cfg.task_name} failed")

    return command(config_name)(task)


@pytest.mark.parametrize(
    "config_name", ["train", "evaluate", "predict", "export", "shard", "check_data", "bench"]
)
def test_every_command_turns_a_user_error_into_one_line_or_a_traceback_with_full_traceback(
    config_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    tuned: list[bool] = []
    monkeypatch.setattr("seg.command.tune_allocator", lambda: tuned.append(True))
    seen: dict[str, object] = {}
    args = [f"seg.{config_name}", f"paths.log_dir={tmp_path}", "hydra.output_subdir=null"]
    monkeypatch.setattr("sys.argv", args)
    with pytest.raises(SystemExit) as stopped:
        _failing(config_name, seen)()
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {config_name} failed"
    assert seen["HYDRA_FULL_ERROR"] is None
    # the allocator is tuned where the command's config says so (the commands that run a network)
    assert tuned == ([True] if config_name in ("train", "evaluate", "predict", "bench") else [])

    monkeypatch.setattr("sys.argv", [*args, "full_traceback=true"])
    with pytest.raises(SegError, match=f"{config_name} failed"):
        _failing(config_name, seen)()
    assert seen["HYDRA_FULL_ERROR"] == "1"  # Hydra's own errors come whole too
    assert "HYDRA_FULL_ERROR" not in os.environ
    GlobalHydra.instance().clear()


def test_a_group_given_a_list_is_one_line_not_hydras_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _stopped_line(["seg.train", "trainer=[1]", f"paths.log_dir={tmp_path}"], monkeypatch, capsys)
    assert err.startswith("error: cannot compose seg.train's config from this command line (TypeError: ")
    assert "a group takes one option name (trainer=cpu)" in err and "\n" not in err
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("config_name", "args"), [("evaluate", []), ("predict", ["input=photos"]), ("export", [])]
)
def test_a_required_key_left_out_is_one_line(
    config_name: str,
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``run: ???`` not given on the command line: its name and the fix, not OmegaConf's traceback."""
    main = importlib.import_module(f"seg.{config_name}").main
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(
        "sys.argv", [f"seg.{config_name}", *args, f"paths.log_dir={tmp_path}", "hydra.output_subdir=null"]
    )
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == "error: run is required: add run=<value> to the command line"
    GlobalHydra.instance().clear()


COMMANDS = ("train", "evaluate", "predict", "export", "search", "shard", "check_data", "bench")


def test_help_and_command_line_mistakes_answer_without_importing_lightning(tmp_path: Path) -> None:
    """Every command's ``--help`` and a mistyped key: in a fresh interpreter (not the tests'
    zygote, which has Lightning already), nothing imports Lightning before the library call."""
    code = (
        "import importlib, sys\n"
        f"for name in {COMMANDS!r}:\n"
        "    for args in (['--help'], ['no_such_key_anywhere=1']):\n"
        "        sys.argv = [f'seg.{name}', *args]\n"
        "        try:\n"
        "            importlib.import_module(f'seg.{name}').main()\n"
        "        except SystemExit as stop:\n"
        "            assert stop.code == 2, (name, args, stop.code)\n"
        "print('lightning imported:', 'pytorch_lightning' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=cli_environ(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "lightning imported: False"
    assert result.stderr.count("error:") == len(COMMANDS)  # each mistake named in one line
