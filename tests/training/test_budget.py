"""Training to a budget: the schedule's shape, the learning rate at zero when the budget ends on a
fast or a slow machine, the whole run inside its time, and the clock carried across a resume."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from support import TINY, WITH_SUPPORT, cli_ok, compose_train, start_cli, wait_for_checkpoint
from support.probes import RecordLearningRate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seg.errors import OptionError
from seg.training.budget import BudgetSchedule, TrainingBudget, duration_seconds, duration_text
from seg.training.pipeline import train

LR = 3e-3
#: A tiny run with no epoch limit to speak of: the time budget alone ends it.
BUDGETED = [
    *[o for o in TINY if not o.startswith(("trainer.max_epochs", "trainer.log_every_n_steps"))],
    "trainer.max_epochs=1000",
    "trainer.log_every_n_steps=1",
    "scheduler=budget",
    f"model.optimizer.lr={LR}",
]


def _schedule(shape: str, warmup: float) -> BudgetSchedule:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    return BudgetSchedule(optimizer, shape=shape, warmup=warmup)


@pytest.mark.parametrize(
    ("shape", "warmup", "progress", "factor"),
    [
        ("linear", 0.0, 0.0, 1.0),
        ("linear", 0.0, 0.25, 0.75),
        ("linear", 0.0, 1.0, 0.0),
        ("linear", 0.1, 0.05, 0.5),  # halfway up the warm-up
        ("linear", 0.1, 0.55, 0.5),  # halfway down the rest
        ("cosine", 0.0, 0.5, 0.5),
        ("cosine", 0.0, 0.25, (1 + math.cos(math.pi / 4)) / 2),
        ("cosine", 0.2, 1.0, 0.0),
    ],
)
def test_schedule_shape(shape: str, warmup: float, progress: float, factor: float) -> None:
    assert _schedule(shape, warmup).factor(progress) == pytest.approx(factor, abs=1e-12)


def test_schedule_follows_steps_without_a_clock() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = BudgetSchedule(optimizer, total_steps=4)
    lrs = []
    for _ in range(4):
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.75, 0.5, 0.25, 0.0])


def test_bad_schedule_values_name_the_key() -> None:
    with pytest.raises(OptionError, match=r"^shape='step' is not valid: expected linear or cosine"):
        _schedule("step", 0.0)
    with pytest.raises(OptionError, match=r"^warmup=1.0 is not valid: expected a fraction in \[0, 1\)"):
        _schedule("linear", 1.0)
    assert duration_seconds("01:02:03:04") == 93784.0
    assert duration_seconds(None) is None


def test_duration_text_is_what_max_time_reads() -> None:
    assert duration_text(93784) == "01:02:03:04"  # 1 day, 2 h, 3 min, 4 s
    assert duration_text(60) == "00:00:01:00"
    assert duration_seconds(duration_text(86399)) == 86399.0


def _lr_curve(run_dir: Path) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    (tag,) = [t for t in events.Tags()["scalars"] if t.startswith("lr-")]
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.mark.slow
def test_learning_rate_reaches_zero_at_the_budget_on_a_machine_twice_as_slow(
    tmp_path: Path, data_cache: Path
) -> None:
    """The same 12-second budget on this machine and on one whose steps take twice as long."""
    budget, seconds = "00:00:00:12", 12
    runs = {}
    step_seconds = 0.0
    for machine in ("fast", "slow"):
        extra = []
        if machine == "slow":  # each step takes as long again: a machine half as fast
            extra = [
                "+callbacks.slow._target_=support.probes.SlowSteps",
                f"+callbacks.slow.seconds={step_seconds}",
            ]
        cfg = compose_train(
            [*BUDGETED, f"paths.data_dir={data_cache}", f"paths.output_dir={tmp_path / machine}",
             f"trainer.max_time={budget}", *extra]
        )  # fmt: skip
        instantiate(cfg.data).prepare_data()  # generate the data outside the timed run
        began = time.monotonic()
        metrics = train(cfg)
        wall = time.monotonic() - began
        curve = _lr_curve(tmp_path / machine)
        runs[machine] = {"wall": wall, "steps": metrics["final"]["step"], "curve": curve}
        if machine == "fast":
            step_seconds = metrics["train_seconds"] / metrics["final"]["step"]
        # Annealed to zero exactly at the end: the last step's rate is within 2% of zero.
        last_step, last_lr = curve[-1]
        assert last_step >= metrics["final"]["step"] - 2
        assert last_lr <= 0.02 * LR, (machine, curve[-5:])
        assert max(lr for _, lr in curve) >= 0.9 * LR
        # Training, the final validation, test and export fit in the budget.
        assert wall <= seconds * 1.2, (machine, wall)
    ratio = runs["slow"]["steps"] / runs["fast"]["steps"]
    assert 0.1 <= ratio <= 0.75, runs  # the slow machine did fewer steps, and still annealed


def _first_lr_after(curve: list[tuple[int, float]], step: int) -> float:
    return next(lr for s, lr in curve if s > step)


@pytest.mark.slow
def test_resume_continues_the_budget_clock(tmp_path: Path, data_cache: Path) -> None:
    """Stopped a fifth or more into a 24 s budget and resumed, the run continues its schedule."""
    args = ["seg.train", *BUDGETED, "trainer.precision=32-true", "trainer.max_time=00:00:00:24",
            "callbacks.step_checkpoint.every_n_train_steps=25",
            "+callbacks.slow._target_=support.probes.SlowSteps", "+callbacks.slow.seconds=0.2",
            f"paths.log_dir={tmp_path}",
            f"paths.data_dir={data_cache}"]  # fmt: skip
    process = start_cli(args, tmp_path, env=WITH_SUPPORT)
    run_dir = wait_for_checkpoint(tmp_path / "train" / "runs", process)
    process.send_signal(signal.SIGTERM)  # 25 steps of at least 0.2 s in: a fifth of the budget or more
    process.communicate(timeout=120)
    assert process.returncode == 143
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith(TrainingBudget.__name__)]
    used = state["elapsed"]
    assert 0 < used < 18
    stopped_at = checkpoint["global_step"]
    lr_at_stop = [lr for s, lr in _lr_curve(run_dir) if s <= stopped_at][-1]
    assert lr_at_stop < 0.9 * LR  # the schedule had moved on

    cli_ok(["seg.train", f"resume={run_dir}"], cwd=tmp_path, env=WITH_SUPPORT)
    curve = _lr_curve(run_dir)
    # The resumed run starts where the schedule was, not at the base learning rate ...
    assert _first_lr_after(curve, stopped_at) <= lr_at_stop + 0.05 * LR
    # ... ends it at zero, and uses only what was left of the budget: the clock went on from
    # where it stopped (a restarted clock would have allowed another 24 s).
    assert curve[-1][1] <= 0.02 * LR
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (state,) = [v for k, v in final["callbacks"].items() if k.startswith(TrainingBudget.__name__)]
    assert used < state["elapsed"] <= 24, (used, state["elapsed"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["resumed"]


@pytest.mark.slow
def test_ddp_ranks_share_rank_0_clock(tmp_path: Path, data_cache: Path) -> None:
    """Rank 1 starts seconds after rank 0 (it is a second process that imports everything): with
    its own clock it would use another learning rate and could stop at another step, and DDP
    would hang. Every rank reads rank 0's clock: the same rate at every step, the same last step."""
    record = tmp_path / "lr"
    args = ["seg.train", *BUDGETED, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.max_time=00:00:00:25", "+callbacks.record._target_=support.probes.RecordLearningRate",
            f"+callbacks.record.path={record}", f"paths.log_dir={tmp_path}",
            f"paths.data_dir={data_cache}"]  # fmt: skip
    cli_ok(args, cwd=tmp_path, timeout=300, env=WITH_SUPPORT)
    ranks = [Path(f"{record}.rank{r}").read_text().splitlines() for r in (0, 1)]
    assert len(ranks[0]) > 20
    assert ranks[0] == ranks[1]
    assert float(ranks[0][-1].split()[1]) <= 0.02 * LR


class _Clock:
    """A clock the test sets by hand: the budget's seconds, whatever the machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _trainer(**fields: object) -> SimpleNamespace:
    """What TrainingBudget reads of a trainer: a 1000-step budget, 10 validation batches (2 in the
    sanity check), a test split twice the size of validation, one process."""
    datamodule = SimpleNamespace(has_split=lambda split: True, split_sizes=lambda: {"val": 10, "test": 20})
    base = {"estimated_stepping_batches": 1000, "lr_scheduler_configs": [], "world_size": 1,
            "datamodule": datamodule, "num_val_batches": [10], "num_sanity_val_batches": [2],
            "sanity_checking": True, "global_step": 0, "should_stop": False,
            "check_val_every_n_epoch": 5}  # fmt: skip
    return SimpleNamespace(**{**base, **fields})


def test_budget_clock_reserves_the_final_evaluation_and_stops_in_time() -> None:
    """A 100 s budget on an injected clock. The run began at 0; a 2-batch sanity check from 1 s to
    3 s stands for the whole 10-batch validation: 2 s x 10 / 2 = 10 s. The reserve is that once
    more for the final validation, twice more for the test split (20 frames against 10), plus the
    export's 2 s + 1% of 100 s: 10 x 3 + 3 = 33 s. At 3 s: 100 - 33 - 3 = 64 s left, progress
    3 / 67 of the training time. A real validation of 4 s (not scaled) makes the reserve 15 s;
    at 90 s none is left: progress 1, and training stops with a final validation due."""
    clock, trainer = _Clock(), _trainer()
    budget = TrainingBudget(max_time="00:00:01:40", test_after_training=True, clock=clock)
    budget.start = 0.0
    clock.now = 1.0
    budget.on_validation_start(trainer, None)  # the sanity check
    clock.now = 3.0
    trainer.sanity_checking = False
    budget.on_train_start(trainer, None)
    budget.on_train_batch_start(trainer)
    assert budget.validation_seconds == pytest.approx(10.0)
    assert budget.reserve() == pytest.approx(33.0)
    assert budget.elapsed() == pytest.approx(3.0)
    assert budget.time_left() == pytest.approx(64.0)
    assert budget.progress(0) == pytest.approx(3 / 67)
    assert budget.progress(500) == pytest.approx(0.5)  # the step budget, when it is ahead
    budget.on_train_batch_end(trainer)
    assert not trainer.should_stop

    clock.now = 50.0
    budget.on_validation_start(trainer, None)
    clock.now = 54.0
    budget.on_train_batch_start(trainer)
    assert budget.validation_seconds == pytest.approx(4.0)
    assert budget.reserve() == pytest.approx(4.0 * 3 + 3.0)
    assert budget.time_left() == pytest.approx(100 - 15 - 54)
    clock.now = 90.0
    budget.on_train_batch_start(trainer)
    assert budget.time_left() == 0.0 and budget.progress(600) == 1.0
    trainer.global_step = 600
    budget.on_train_batch_end(trainer)
    assert trainer.should_stop and trainer.check_val_every_n_epoch == 1
    # the clock carries over a resume: the new run goes on from what was used
    resumed = TrainingBudget(max_time="00:00:01:40", clock=clock)
    resumed.load_state_dict(budget.state_dict())
    assert resumed.elapsed_before == pytest.approx(90.0) and resumed.validation_seconds == pytest.approx(4.0)


def test_without_a_time_budget_the_clock_reserves_nothing() -> None:
    budget = TrainingBudget(max_time=None, clock=_Clock())
    budget.on_train_start(_trainer(sanity_checking=False), None)
    assert budget.reserve() == 0.0 and budget.time_left() is None
    assert budget.progress(250) == pytest.approx(0.25)


@pytest.mark.slow
def test_budget_schedule_without_max_time_anneals_over_the_steps(tmp_path: Path, data_cache: Path) -> None:
    """``scheduler=budget`` with no ``trainer.max_time``, end to end: progress is the step budget
    of 2 epochs x 2 steps, so the linear rate is 3e-3 (1 - s / 4) at step s, and the run ends
    after its epochs, finished."""
    cfg = compose_train(
        [*BUDGETED, "trainer.max_epochs=2", "data.generator.num_train=16", "test_after_training=false",
         f"paths.data_dir={data_cache}", f"paths.output_dir={tmp_path / 'run'}"]
    )  # fmt: skip
    assert cfg.trainer.max_time is None
    metrics = train(cfg, callbacks=[RecordLearningRate(str(tmp_path / "lr"))])
    assert metrics["status"] == "finished" and metrics["final"]["step"] == 4
    rates = [line.split() for line in (tmp_path / "lr.rank0").read_text().splitlines()]
    assert [int(s) for s, _ in rates] == list(range(4))
    assert [float(lr) for _, lr in rates] == pytest.approx([LR * (1 - s / 4) for s in range(4)])
