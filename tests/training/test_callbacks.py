"""seg.training.callbacks: the metric history a run's record is made of, and the graceful stop,
driven by hand with a stand-in trainer (the trainings that use them are in test_faults and
training/test_cluster)."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pytorch_lightning.utilities.exceptions import SIGTERMException

from seg.training import callbacks
from seg.training.callbacks import GracefulStop, MetricsHistory


def _trainer(epoch: int, step: int, metrics: dict[str, float], **more: Any) -> Any:
    return SimpleNamespace(
        current_epoch=epoch, global_step=step, callback_metrics=metrics, sanity_checking=False, **more
    )


def test_the_history_keeps_one_row_per_epoch_with_epoch_level_train_values_and_val_values() -> None:
    history = MetricsHistory()
    sanity = _trainer(0, 0, {"val/dice": 0.9})
    sanity.sanity_checking = True
    history.on_validation_end(sanity, None)  # type: ignore[arg-type]
    assert history.epochs == []
    logged = {
        "train/loss": 0.7,
        "train/loss_epoch": 0.7,
        "train/loss_step": 0.5,
        "train/lr": 1e-3,
        "val/dice": 0.2,
    }
    history.on_validation_end(_trainer(0, 4, logged), None)  # type: ignore[arg-type]
    history.on_train_epoch_end(_trainer(0, 4, logged), None)  # type: ignore[arg-type]
    history.on_train_epoch_end(_trainer(1, 8, {"train/loss_epoch": 0.6, "val/dice": 0.4}), None)  # type: ignore[arg-type]
    history.on_validation_end(_trainer(2, 12, {"val/dice": 0.4, "val/loss": math.nan}), None)  # type: ignore[arg-type]
    first, second, third = history.epochs
    assert first == {"epoch": 0, "step": 4, "val/dice": 0.2, "train/loss_epoch": 0.7, "train/lr": 1e-3}
    assert second == {"epoch": 1, "step": 8, "train/loss_epoch": 0.6}
    assert third["step"] == 12 and third["val/dice"] == 0.4 and math.isnan(third["val/loss"])
    assert history.best("val/dice")["epoch"] == 2  # type: ignore[index]
    assert history.best("val/dice", "min")["epoch"] == 0  # type: ignore[index]
    assert history.best("val/loss") is None  # NaN never wins
    restored = MetricsHistory()
    restored.load_state_dict(history.state_dict())
    assert restored.epochs == history.epochs and restored.epochs is not history.epochs


class _Checkpointing:
    """The parts of a trainer GracefulStop uses."""

    def __init__(self, tmp_path: Path, last_batch: bool) -> None:
        self.world_size = 1
        self.training = True
        self.default_root_dir = str(tmp_path)
        self.checkpoint_callback = SimpleNamespace(dirpath=str(tmp_path / "checkpoints"))
        self.fit_loop = SimpleNamespace(
            epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(is_last_batch=last_batch))
        )
        self.saved: list[Path] = []

    def save_checkpoint(self, path: str | Path) -> None:
        self.saved.append(Path(path))


@pytest.fixture
def stop(monkeypatch: pytest.MonkeyPatch) -> GracefulStop:
    monkeypatch.setattr(callbacks, "_stop_asked", None)  # what stop_asked() reports, put back after
    return GracefulStop()


def test_a_signal_stops_at_the_next_batch_boundary_and_saves_the_last_checkpoint(
    stop: GracefulStop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mid_epoch, last_batch = _Checkpointing(tmp_path, False), _Checkpointing(tmp_path, True)
    stop.on_train_batch_end(mid_epoch)  # nothing asked: training goes on
    stop._on_signal(signal.SIGTERM, None)
    assert "SIGTERM: stopping after this batch, saving the last checkpoint" in capsys.readouterr().out
    assert callbacks.stop_asked() == signal.SIGTERM
    stop.on_train_batch_end(last_batch)  # an epoch's last batch waits for its validation
    with pytest.raises(SIGTERMException):
        stop.on_train_batch_end(mid_epoch)
    stop.on_exception(mid_epoch, None, SIGTERMException())  # type: ignore[arg-type]
    assert mid_epoch.saved == [tmp_path / "checkpoints" / "last.ckpt"]
    assert stop.signal == "SIGTERM" and stop.exit_status == 128 + signal.SIGTERM
    assert stop.requeue() is False  # SIGTERM only stops


def test_a_second_ctrl_c_stops_at_once_and_a_crash_keeps_the_previous_checkpoint(
    stop: GracefulStop, tmp_path: Path
) -> None:
    trainer = _Checkpointing(tmp_path, False)
    stop._on_signal(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        stop._on_signal(signal.SIGINT, None)
    crashed = GracefulStop()
    crashed.on_exception(trainer, None, RuntimeError("a bug"))  # type: ignore[arg-type]
    assert trainer.saved == [] and crashed.signal is None
    crashed.on_exception(trainer, None, KeyboardInterrupt())  # type: ignore[arg-type]
    assert trainer.saved == [] and crashed.signal == "SIGINT" and crashed.exit_status == 130


@pytest.mark.skipif(not callbacks.REQUEUE_SIGNALS, reason="this OS has no SIGUSR1/SIGUSR2")
def test_a_requeue_signal_hands_the_job_to_the_handler_that_was_there_before(stop: GracefulStop) -> None:
    called: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: called.append(signum))
    try:
        stop.on_fit_start(SimpleNamespace(), None)  # type: ignore[arg-type]
        assert signal.getsignal(signal.SIGUSR2) == stop._on_signal
        stop._on_signal(signal.SIGUSR2, None)
        assert stop.requeue() is True and called == [signal.SIGUSR2]
        stop.restore_signals()
        assert signal.getsignal(signal.SIGUSR2) != stop._on_signal
    finally:
        signal.signal(signal.SIGUSR2, previous)
        stop.restore_signals()
