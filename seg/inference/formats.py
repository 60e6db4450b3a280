"""Writing a trained network in deployable formats: TorchScript, ONNX, ``torch.export``.

Every format is fp32, in eval mode, with dynamic batch size and dynamic height and width (any
multiple of 16; TorchScript takes any size), and is written atomically.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seg.artifacts import atomic_path
from seg.errors import SegError
from seg.inference.predictor import load_model
from seg.rundir import MODEL_FILE, RunDir


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


@dataclass(frozen=True)
class ExportFormat:
    """A deployable format: the file it is written to in an export folder, and its writer."""

    file_name: str
    write: Callable[[nn.Module, str | os.PathLike[str]], Path]


#: Every format ``seg.export`` writes, by the name ``format=`` takes. The TorchScript file is the
#: same file a training run writes (``RunDir.model_file``).
FORMATS: dict[str, ExportFormat] = {
    "torchscript": ExportFormat(MODEL_FILE, export_torchscript),
    "onnx": ExportFormat("model.onnx", export_onnx),
    "exported_program": ExportFormat("model.pt2", export_program),
}


def export_format(name: str) -> ExportFormat:
    """The format called ``name``; a ``SegError`` naming the valid ones otherwise."""
    if name not in FORMATS:
        raise SegError(f"format={name!r} is not valid: expected one of {', '.join(FORMATS)}")
    return FORMATS[name]


def export(net: nn.Module, path: str | os.PathLike[str], fmt: str) -> Path:
    """Write ``net`` to ``path`` in format ``fmt`` (a key of ``FORMATS``)."""
    return export_format(fmt).write(net, path)


def checkpoint_of(path: Path) -> tuple[Path, RunDir]:
    """The checkpoint to export and its run: a run directory's best checkpoint, or a ``.ckpt``
    file (whose run is the folder above its checkpoint folder)."""
    if path.is_dir():
        run_dir = RunDir.of(path)
        return run_dir.best_checkpoint(), run_dir
    if path.suffix != ".ckpt":
        raise SegError(f"model_path {path} must be a .ckpt checkpoint or a training run directory")
    return path, RunDir.of(path.parent.parent)


def export_run(model_path: str | os.PathLike[str], fmt: str, output: str | None = None) -> tuple[Path, Path]:
    """Export a run's best weights (or a ``.ckpt``) as ``fmt`` with its classes file beside it,
    into ``output`` or the run's export folder. Returns the model file and the classes file."""
    chosen = export_format(fmt)
    checkpoint, run_dir = checkpoint_of(Path(model_path))
    net, info, _ = load_model(checkpoint)
    folder = Path(output) if output else run_dir.export_dir
    return export(net, folder / chosen.file_name, fmt), info.write(folder)
