from __future__ import annotations

from typing import Any

import pytest
import torch
from support import compose_train

from seg import hardware
from seg.benchmark.variants import TRAINERS
from seg.errors import ConfigError
from seg.hardware import best_precision, resolve_device
from seg.training.checks import validate_train_config


def test_default_config_is_valid(make_cfg: Any) -> None:
    validate_train_config(make_cfg())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=folder"], "data.root is required: add data.root=<value> to the command line"),
        (["data=folder", "data.root=x"], "data.num_classes is required"),
        (["data.batch_size=0"], "data.batch_size=0 is not valid: expected an integer >= 1"),
        (["model.optimizer.lr=-0.1"], "model.optimizer.lr=-0.1 is not valid: expected a positive number"),
        (["model.optimizer.lr=fast"], "model.optimizer.lr='fast' is not valid"),
        (["data.num_workers=-1"], "data.num_workers=-1 is not valid"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not valid"),
        (["trainer.max_time=1h"], "trainer.max_time='1h' is not valid: expected null or a duration"),
        (["data.class_names=[a,b]"], "data.class_names has 2 names but data.num_classes is 13"),
        (["model.net.num_classes=4"], "model.net.num_classes=4 disagrees with data.num_classes=13"),
        (["model.net.upsample=nearest"], "model.net.upsample='nearest' is not valid: expected transpose or"),
        (["model.net.dropout=1"], "model.net.dropout=1 is not valid: expected a number in [0, 1"),
        (["model.net.base_channels=0"], "model.net.base_channels=0 is not valid: expected an integer >= 1"),
        (["model.compile=yes"], "model.compile='yes' is not valid: expected true or false"),
        (
            ["model.optimizer._target_=torch.optim.RMSprop"],
            "model.optimizer.fused: torch.optim.RMSprop has no fused step; remove it with ~model",
        ),
        (
            ["trainer=gpu", "trainer.precision=16-mixed", "trainer.gradient_clip_val=1.0"],
            "trainer.gradient_clip_val cannot clip a fused optimizer's gradients",
        ),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], message: str) -> None:
    cfg = compose_train([*overrides, "paths.output_dir=unused"])
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        validate_train_config(cfg)


def test_an_optimizer_without_a_fused_step_runs_once_fused_is_removed() -> None:
    cfg = compose_train(
        ["model.optimizer._target_=torch.optim.RMSprop", "~model.optimizer.fused", "paths.output_dir=unused"]
    )
    validate_train_config(cfg)


@pytest.mark.parametrize(
    ("flags", "cpu"),
    [("fpu sse2 avx2 avx512f", "32-true"), ("fpu avx512f avx512_bf16", "bf16-mixed"),
     ("fpu amx_tile amx_bf16", "bf16-mixed"), ("fpu avx512_bf16_x", "32-true")],
)  # fmt: skip
@pytest.mark.parametrize(("bf16_card", "gpu"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_precision_follows_the_hardware(
    flags: str, cpu: str, bf16_card: bool, gpu: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bf16 on a CPU only with AVX512-BF16 or AMX-BF16 in its flags (a flag that merely starts
    the same is not one), else fp32; on a CUDA card bf16 where it has it, else fp16."""
    monkeypatch.setattr(hardware, "cpuinfo", lambda: {"model name": "a CPU", "flags": flags})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_card)
    hardware.cpu_has_native_bf16.cache_clear()
    try:
        assert best_precision("cpu") == cpu
        assert best_precision("gpu") == best_precision("auto") == gpu
    finally:
        hardware.cpu_has_native_bf16.cache_clear()
    with pytest.raises(ValueError, match="unknown accelerator"):
        best_precision("tpu")


def test_auto_picks_cuda_then_apple_mps_then_the_cpu(monkeypatch: pytest.MonkeyPatch, make_cfg: Any) -> None:
    """As Lightning's accelerator=auto does; MPS itself is not run here (no Apple machine)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    assert best_precision("auto") == best_precision("mps") == "32-true"
    assert make_cfg("trainer=mps").trainer.accelerator == "mps"
    assert make_cfg("trainer=mps").trainer.precision == "32-true"
    assert TRAINERS[resolve_device("mps").type] == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert best_precision("auto") == best_precision("cpu")


def test_cpu_trainer_resolves_to_the_detected_precision(make_cfg: Any) -> None:
    assert make_cfg("trainer=cpu").trainer.precision == best_precision("cpu")
