"""``seg.search``: an Optuna study of tiny trainings kept in SQLite, stopped and resumed, a pruned
trial, the best trial's command line, and the search settings' mistakes as one line."""

from __future__ import annotations

import csv
import shlex
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from support import TINY, cli_ok, compose_train, run_cli

from seg.errors import ConfigError
from seg.training.search import override, search_space

#: Every trial: two epochs of two training batches of four 32x32 images, one validation batch.
_SET_HERE = ("trainer.max_epochs", "model.optimizer.lr", "data.image_size", "data.batch_size", "model.net.")
TRIAL = [
    *[o for o in TINY if not o.startswith(_SET_HERE)],
    "data.image_size=32",
    "data.batch_size=4",
    "model.net.base_channels=4",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "logger=none",
    "test_after_training=false",
    "print_config=false",
]
SEED, STARTUP = 7, 3
#: The study of the resume test: the learning rate and a config group, TPE after 3 random trials.
STUDY = [
    f"search.sampler.seed={SEED}",
    f"search.sampler.n_startup_trials={STARTUP}",
    "search.pruner.n_startup_trials=2",
    "search.pruner.n_warmup_steps=0",
    "+search.params.loss={type: categorical, choices: [dice, dice_ce]}",
]
#: The parameters in the order the study samples them (search.params' order).
PARAMS = ("model.optimizer.lr", "loss")


def _search(logs: Path, data_cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        ["seg.search", *TRIAL, *args, f"paths.log_dir={logs}", f"paths.data_dir={data_cache}"], cwd=logs
    )


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def _summary(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "summary.csv").open()))


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> dict[str, Any]:
    """A study of 4 trials, then the same command line with ``search.n_trials=8``."""
    logs = tmp_path_factory.mktemp("search")
    folder = logs / "search" / "lr"
    storage = f"sqlite:///{folder / 'study.db'}"  # the default: the study's folder
    first = _search(logs, data_cache, *STUDY, "search.n_trials=4")
    assert first.returncode == 0, first.stderr[-3000:]
    before = _trials(storage, "lr")
    second = _search(logs, data_cache, *STUDY, "search.n_trials=8")
    assert second.returncode == 0, second.stderr[-3000:]
    return {"logs": logs, "folder": folder, "storage": storage, "before": before, "second": second}


@pytest.mark.slow
def test_a_stopped_study_resumes_keeping_its_trials_and_tpe_samples_after_startup(
    resumed: dict[str, Any],
) -> None:
    before, after = resumed["before"], _trials(resumed["storage"], "lr")
    assert "resuming study lr with 4 finished trials" in resumed["second"].stdout
    assert [t.number for t in after] == list(range(8))
    assert [(t.number, t.params, t.value, t.state) for t in after[:4]] == [
        (t.number, t.params, t.value, t.state) for t in before
    ]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after)
    assert {t.params["loss"] for t in after} == {"dice", "dice_ce"}  # a config group was searched

    # Each trial is what its sampler proposes from the trials before it: TPESampler seeded with
    # seed + trial number, random for the first STARTUP trials, TPE's model after them.
    for k, trial in enumerate(after):
        distributions = {name: trial.distributions[name] for name in PARAMS}
        proposed = {}
        for sampler in (
            optuna.samplers.TPESampler(seed=SEED + k, n_startup_trials=STARTUP),
            optuna.samplers.RandomSampler(seed=SEED + k),
        ):
            replay = optuna.create_study(direction="maximize", sampler=sampler)
            replay.add_trials(after[:k])
            proposed[type(sampler).__name__] = replay.ask(distributions).params
        assert proposed["TPESampler"] == trial.params, k
        assert (proposed["RandomSampler"] == trial.params) == (k < STARTUP), k

    rows = _summary(resumed["folder"])
    assert [r["job"] for r in rows] == [str(n) for n in range(8)]
    statuses = {TrialState.COMPLETE: "finished", TrialState.PRUNED: "pruned"}
    assert [r["status"] for r in rows] == [statuses[t.state] for t in after]
    for row, trial in zip(rows, after, strict=True):
        assert Path(row["run dir"]) == resumed["folder"] / str(trial.number)
        assert (Path(row["run dir"]) / "train.log").is_file()


@pytest.mark.slow
def test_the_best_trial_is_printed_as_a_command_line_that_composes_it(resumed: dict[str, Any]) -> None:
    best = optuna.load_study(study_name="lr", storage=resumed["storage"]).best_trial
    lines = resumed["second"].stdout.splitlines()
    (line,) = [line for line in lines if line.startswith("Best trial:")]
    assert line.startswith(f"Best trial: {best.number} of study lr, val/dice {best.value:.4f}")
    command = shlex.split(lines[lines.index(line) + 1])
    assert command[:3] == ["python", "-m", "seg.train"]
    run_dir = resumed["folder"] / str(best.number)
    assert command[3:] == yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    cfg = compose_train([*command[3:], "paths.output_dir=unused"])
    assert cfg.model.optimizer.lr == best.params["model.optimizer.lr"]  # every digit
    assert cfg.loss == compose_train([f"loss={best.params['loss']}", "paths.output_dir=unused"]).loss
    rows = _summary(resumed["folder"])
    assert [r["job"] for r in rows if r["best"] == "*"] == [str(best.number)]


@pytest.mark.slow
def test_a_study_resumed_with_other_training_settings_is_refused(
    resumed: dict[str, Any], data_cache: Path
) -> None:
    result = _search(resumed["logs"], data_cache, *STUDY, "search.n_trials=9", "trainer.max_epochs=3")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: study lr in {resumed['storage']} was started otherwise (seg.train overrides added: "
        "trainer.max_epochs=3, left out: none): resume it with its own command line, "
        "or start another with search.study_name=NAME"
    ]
    assert len(_trials(resumed["storage"], "lr")) == 8


@pytest.mark.slow
def test_a_pruned_trial_is_pruned_in_the_study_and_the_summary(tmp_path: Path, data_cache: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    pruner = "+search.pruner={_target_: optuna.pruners.ThresholdPruner, lower: 2.0, n_warmup_steps: 1}"
    result = _search(tmp_path, data_cache, "search.study_name=pruned", f"search.storage={storage}",
                     "search.n_trials=1", "trainer.max_epochs=3", "~search.pruner", pruner)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = _trials(storage, "pruned")
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [0, 1]  # val/dice < 2 always; epoch 0 is warm-up
    folder = tmp_path / "search" / "pruned"
    assert not (folder / "study.db").exists()  # the study is where search.storage says
    (row,) = _summary(folder)
    assert (row["status"], row["best"]) == ("pruned", "")
    metrics = yaml.safe_load((folder / "0" / "metrics.json").read_text())
    assert metrics["status"] == "pruned" and metrics["stop_reason"].startswith("pruned at epoch 1 (val/dice ")
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]  # the third epoch never ran
    assert trial.value == pytest.approx(metrics["epochs"][1]["val/dice"])
    assert Path(metrics["paths"]["best_checkpoint"]).is_file() and (folder / "0" / "model.pt").is_file()
    assert "No trial of study pruned completed yet." in result.stdout


def test_the_search_space_is_read_nested_or_dotted() -> None:
    nested = {"model": {"optimizer": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}},
              "loss": {"type": "categorical", "choices": ["dice", "ce"]},
              "model.net.base_channels": {"type": "int", "low": 8, "high": 32, "step": 8}}  # fmt: skip
    assert search_space(nested) == {
        "model.optimizer.lr": FloatDistribution(1e-4, 0.1, log=True),
        "loss": CategoricalDistribution(["dice", "ce"]),
        "model.net.base_channels": IntDistribution(8, 32, step=8),
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": {"optimizer": {"lr": {"type": "float", "lo": 1, "high": 2}}}},
         "search.params.model.optimizer.lr.lo is not a setting of a float parameter: use low, high, "),
        ({"loss": {"type": "choice", "choices": ["dice"]}}, "search.params.loss={'type': 'choice', "),
        ({"seed": 3}, "search.params.seed=3 is not a parameter: write {type: float|int|categorical, ...}"),
        ({"a": {"type": "float", "low": 2.0, "high": 1.0}}, "search.params.a: "),
        ({}, "search.params is empty"),
    ],
)  # fmt: skip
def test_a_wrong_parameter_is_one_error_naming_it(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        search_space(params)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("value", [0.1 + 0.2, 3.0e-5, 7, True, None, "dice_ce"])
def test_an_override_reads_back_as_the_sampled_value(value: Any) -> None:
    (parsed,) = OverridesParser.create().parse_overrides([override("model.optimizer.lr", value)])
    assert parsed.key_or_group == "model.optimizer.lr" and parsed.value() == value


@pytest.mark.slow
def test_a_searched_key_that_seg_train_lacks_is_one_error_line(tmp_path: Path, data_cache: Path) -> None:
    typo = "+search.params.model.optimizer.lrr={type: float, low: 0.1, high: 1}"
    result = _search(tmp_path, data_cache, typo)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.strip()][-1] == (
        "error: a trial with model.optimizer.lr=0.0001 model.optimizer.lrr=0.1 cannot run: "
        "model.optimizer.lrr is not a key of seg.train's config: did you mean model.optimizer.lr?"
    )
    assert not list(tmp_path.glob("search/lr/[0-9]*"))  # no trial ran


@pytest.mark.slow
def test_ctrl_c_stops_the_search_and_the_same_command_resumes_it(tmp_path: Path, data_cache: Path) -> None:
    """Ctrl-C in a trial stops the whole search (exit 130) and no other trial starts; the same
    command line run again keeps the study's trials and adds the missing ones."""
    import signal
    import time

    from support import start_cli

    args = [*TRIAL, "trainer.max_epochs=15", "search.n_trials=1", "search.pruner=null"]
    args += [f"paths.log_dir={tmp_path}", f"paths.data_dir={data_cache}"]
    process = start_cli(["seg.search", *args], tmp_path)
    storage = f"sqlite:///{tmp_path / 'search' / 'lr' / 'study.db'}"
    deadline = time.monotonic() + 300
    checkpoints = tmp_path / "search" / "lr" / "0" / "checkpoints"
    while time.monotonic() < deadline and not any(checkpoints.glob("*.ckpt")):  # trial 0 is training
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-2000:]
    first = _trials(storage, "lr")
    assert len(first) == 1  # no trial started after the stop

    cli_ok(["seg.search", *args], cwd=tmp_path)
    trials = _trials(storage, "lr")
    assert trials[0].params == first[0].params and trials[0].state == TrialState.FAIL  # kept
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE]


def test_a_stop_asked_in_an_earlier_job_starts_no_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the last batches of a job lets that job finish; the sweep then starts no other."""
    import signal

    from seg.training import callbacks
    from seg.training.sweeps import sweep_job

    monkeypatch.setattr(callbacks, "_stop_asked", signal.SIGINT)
    with pytest.raises(SystemExit) as stopped:
        sweep_job(compose_train(["paths.output_dir=unused"]), [])
    assert stopped.value.code == 130
