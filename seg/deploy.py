"""Writing a trained network in deployable formats: TorchScript, ONNX, ``torch.export``.

Every format is fp32, in eval mode, with dynamic batch size and dynamic height and width (any
multiple of 16; TorchScript takes any size), and is written atomically.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from seg.artifacts import atomic_path
from seg.errors import SegError

Format = Literal["torchscript", "onnx", "exported_program"]

#: File name of each format inside an export folder.
FILE_NAMES: dict[str, str] = {
    "torchscript": "model.pt",
    "onnx": "model.onnx",
    "exported_program": "model.pt2",
}


def deployable(net: nn.Module) -> nn.Module:
    """An fp32, eval-mode, contiguous CPU copy of ``net``."""
    return copy.deepcopy(net).float().eval().to(memory_format=torch.contiguous_format).cpu()


def _example_and_shapes(net: nn.Module) -> tuple[torch.Tensor, dict[str, dict[int, object]]]:
    channels = int(getattr(net, "in_channels", 3))
    example = torch.rand(2, channels, 64, 96)
    batch = torch.export.Dim("batch", min=1, max=1024)
    rows = torch.export.Dim("rows", min=1, max=512)
    cols = torch.export.Dim("cols", min=1, max=512)
    return example, {"x": {0: batch, 2: 16 * rows, 3: 16 * cols}}


def export_torchscript(net: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save a scripted, frozen copy of ``net`` that ``torch.jit.load`` reads without this package.

    Freezing inlines the weights and folds batch norm into the convolutions, which makes the
    TorchScript model faster than the eager one for inference (see the benchmark).
    """
    scripted = torch.jit.freeze(
        torch.jit.script(deployable(net)), preserved_attrs=["num_classes", "in_channels"]
    )
    with atomic_path(path) as tmp:
        scripted.save(str(tmp))
    return Path(path)


def export_program(net: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save a ``torch.export`` program (``torch.export.load(path).module()`` runs it)."""
    example, shapes = _example_and_shapes(net)
    with torch.no_grad():
        program = torch.export.export(deployable(net), (example,), dynamic_shapes=shapes)
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp))
    return Path(path)


def export_onnx(net: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save an ONNX model with input ``image`` and output ``logits`` (needs the ``export`` extra)."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise SegError('ONNX export needs the export extra: pip install -e ".[export]"') from None
    example, shapes = _example_and_shapes(net)
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            deployable(net),
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,
        )
    return Path(path)


EXPORTERS = {"torchscript": export_torchscript, "onnx": export_onnx, "exported_program": export_program}


def export(net: nn.Module, path: str | os.PathLike[str], fmt: str) -> Path:
    """Write ``net`` to ``path`` in format ``fmt`` (``torchscript``, ``onnx`` or ``exported_program``)."""
    if fmt not in EXPORTERS:
        raise SegError(f"format={fmt!r} is not valid: expected one of {', '.join(EXPORTERS)}")
    return EXPORTERS[fmt](net, path)
