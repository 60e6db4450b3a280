"""``model.compile=true``: a tiny training through ``torch.compile`` saves and exports the plain network."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from support.models import assert_torchscript_alone_matches

from seg.lightning_module import SegmentationModule

needs_compiler = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile (inductor) needs a C++ compiler on CPU",
)


@pytest.mark.slow
@needs_compiler
def test_compiled_training_saves_and_exports_the_plain_network(
    make_cfg: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from seg.training.pipeline import train

    cfg = make_cfg(
        "model.compile=true", "trainer.max_epochs=2", "logger=none", "test_after_training=false",
        output_dir=tmp_path / "run",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="seg.lightning_module"):
        metrics = train(cfg)
    assert any("torch.compile: the first training step took" in r.getMessage() for r in caplog.records)
    assert metrics["status"] == "finished"
    losses = [e["train/loss_epoch"] for e in metrics["epochs"]]
    assert losses[-1] < losses[0]  # it trains through the compiled network

    paths = metrics["paths"]
    for checkpoint in (paths["best_checkpoint"], paths["last_checkpoint"]):
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        assert not [key for key in state if "_orig_mod" in key]
        assert "net.head.weight" in state
    best = SegmentationModule.load_from_checkpoint(paths["best_checkpoint"], map_location="cpu")
    assert best.compile_net  # the option is kept, and acts only while fitting
    inputs = [torch.rand(4, 3, 64, 64), torch.rand(2, 3, 50, 70)]
    assert_torchscript_alone_matches(Path(paths["torchscript"]), best.net, inputs, tmp_path)
