"""callbacks.ema: an exponential moving average of the weights, validated, kept, exported and resumed."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from support import (
    RESUMABLE,
    assert_continues_like,
    cli_ok,
    metrics_of,
    start_cli,
    wait_for_checkpoint,
)

from seg.errors import ConfigError
from seg.training.ema import ema
from seg.training.pipeline import train


def floats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The floating-point entries of a state dict (weights, batch-norm statistics, mean/std)."""
    return {k: v for k, v in state.items() if v.is_floating_point()}


def test_ema_is_a_hand_computed_average_used_for_validation_checkpoints_and_export(
    make_cfg: Callable[..., Any], tmp_path: Path
) -> None:
    decay = 0.5
    record = tmp_path / "weights.pt"
    cfg = make_cfg(
        f"callbacks.ema.decay={decay}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "+callbacks.record._target_=support.probes.RecordWeights",
        f"+callbacks.record.path={record}",
    )
    metrics = train(cfg)
    recorded = torch.load(record, weights_only=True)
    w1, w2, w3 = (floats(state) for state in recorded["steps"])
    # ema_1 = w_1 (the first update copies), ema_t = d * ema_(t-1) + (1 - d) * w_t
    expected = {k: decay**2 * w1[k] + decay * (1 - decay) * w2[k] + (1 - decay) * w3[k] for k in w3}
    assert any("running_mean" in k for k in expected)  # batch-norm statistics are averaged too
    moved = [k for k in expected if not torch.equal(w1[k], w3[k])]
    assert any(k.endswith("running_var") for k in moved) and any(k.endswith("weight") for k in moved)

    # Validation ran with the averaged weights, and the trained ones came back afterwards.
    assert recorded["validated"]  # the state at each validation batch of the one epoch
    for validated in recorded["validated"]:
        for key, value in expected.items():
            torch.testing.assert_close(validated[key], value, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(floats(recorded["after"]), w3, atol=0, rtol=0)

    # last.ckpt, written when training ends: the average, and the trained weights to resume from.
    checkpoint = torch.load(metrics["paths"]["last_checkpoint"], map_location="cpu", weights_only=True)
    for key, value in expected.items():
        torch.testing.assert_close(checkpoint["state_dict"][key], value, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(checkpoint["current_model_state"][key], w3[key], atol=0, rtol=0)
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 3

    # The best checkpoint (the only epoch) and model.pt hold the average; test scored it.
    best = torch.load(metrics["paths"]["best_checkpoint"], map_location="cpu", weights_only=True)
    torch.testing.assert_close(floats(best["state_dict"]), floats(checkpoint["state_dict"]))
    exported = floats(torch.jit.load(metrics["paths"]["torchscript"]).state_dict())
    for key, value in exported.items():
        torch.testing.assert_close(value, expected[f"net.{key}"], atol=1e-6, rtol=1e-6)
    assert metrics["test"]


def test_ema_is_off_unless_a_decay_is_given() -> None:
    assert ema(None) is None
    assert ema(0.99) is not None
    for bad in (1.0, 0, -0.5, "fast"):
        with pytest.raises(ConfigError, match=r"^callbacks\.ema\.decay=.* is not valid: expected null"):
            ema(bad)  # type: ignore[arg-type]


#: The resumable run with an EMA whose window (10 steps) is short against its 64 steps.
EMA_RUN = [*RESUMABLE, "callbacks.ema.decay=0.9"]


@pytest.fixture(scope="module")
def uninterrupted_ema(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> Path:
    """The run dir of an ``EMA_RUN`` that nothing stopped."""
    logs = tmp_path_factory.mktemp("uninterrupted_ema")
    cli_ok(["seg.train", *EMA_RUN, f"paths.log_dir={logs}", f"paths.data_dir={data_cache}"], cwd=logs)
    return next((logs / "train" / "runs").iterdir())


@pytest.mark.slow
def test_a_stopped_and_resumed_run_continues_the_average(
    tmp_path: Path, data_cache: Path, uninterrupted_ema: Path
) -> None:
    args = ["seg.train", *EMA_RUN, f"paths.log_dir={tmp_path}", f"paths.data_dir={data_cache}"]
    process = start_cli(args, tmp_path)
    run_dir = wait_for_checkpoint(tmp_path / "train" / "runs", process)
    time.sleep(0.2)  # into the second epoch: the stop saves mid-epoch
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    stopped = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert 0 < int(stopped["averaging_state"]["n_averaged"]) < 64

    cli_ok(["seg.train", f"resume={run_dir}"], cwd=tmp_path)
    assert_continues_like(run_dir, metrics_of(uninterrupted_ema))
    resumed, reference = (
        torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for d in (run_dir, uninterrupted_ema)
    )
    assert int(resumed["averaging_state"]["n_averaged"]) == 64
    for part in ("state_dict", "current_model_state"):
        for key, value in floats(reference[part]).items():
            torch.testing.assert_close(resumed[part][key], value, atol=1e-6, rtol=0)
