"""Writing a trained network in deployable formats: TorchScript, ONNX, int8 ONNX, ``torch.export``.

Every format is in eval mode, with dynamic batch size and dynamic height and width (any
multiple of the network's ``size_divisor``, 16 for the U-Net and 32 for most smp encoders;
TorchScript takes any size), and is written atomically. All are fp32 but ``onnx_int8``, whose
convolutions run in int8 (``seg.inference.quantize``). ONNX files record the size divisor in their
metadata (``SIZE_DIVISOR_KEY``), so a runner can pad other sizes itself.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seg.artifacts import atomic_path, write_json
from seg.errors import SegError, first_line, install_hint
from seg.inference.evaluation import build_datamodule, run_data_config
from seg.inference.predictor import SIZE_DIVISOR_KEY, load_model
from seg.inference.quantize import Calibration, Int8Settings, calibration_frames, quantize_onnx
from seg.reports.model_card import write_model_card
from seg.rundir import CLASSES_FILE, EXPORTS_FILE, MODEL_FILE, RunDir

log = logging.getLogger(__name__)


def deployable(net: nn.Module) -> nn.Module:
    """An fp32, eval-mode, contiguous CPU copy of ``net``."""
    return copy.deepcopy(net).float().eval().to(memory_format=torch.contiguous_format).cpu()


def _example(net: nn.Module, rows: int = 2, cols: int = 3) -> torch.Tensor:
    """A batch of two random images of ``rows x cols`` times ``net``'s size divisor."""
    divisor = int(getattr(net, "size_divisor", 16))
    return torch.rand(2, int(getattr(net, "in_channels", 3)), rows * divisor, cols * divisor)


def _example_and_shapes(net: nn.Module) -> tuple[torch.Tensor, dict[str, dict[int, object]]]:
    divisor = int(getattr(net, "size_divisor", 16))
    batch = torch.export.Dim("batch", min=1, max=1024)
    rows = torch.export.Dim("rows", min=1, max=8192 // divisor)
    cols = torch.export.Dim("cols", min=1, max=8192 // divisor)
    return _example(net), {"x": {0: batch, 2: divisor * rows, 3: divisor * cols}}


def to_torchscript(net: nn.Module) -> tuple[torch.jit.ScriptModule, str]:
    """A frozen TorchScript copy of ``net`` and how it was made: ``script`` or ``trace``.

    Scripting keeps every branch, so any input size works. A network that does not script may
    name children in ``traced_children`` (``seg.models.smp.SmpNet``: the smp model): those are
    traced at a fixed example size, a multiple of ``size_divisor``, and the network around them
    is scripted, so its padding and cropping still take any size. Freezing inlines the weights
    and folds batch norm into the convolutions, which makes the TorchScript model faster than
    the eager one for inference (see the benchmark).
    """
    copy_ = deployable(net)
    try:
        scripted, method = torch.jit.script(copy_), "script"
    except Exception as error:
        children = getattr(copy_, "traced_children", ())
        if not children:
            raise
        log.info("%s does not script (%s); tracing %s", type(net).__name__, first_line(error), children)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            for name in children:
                traced = torch.jit.trace(getattr(copy_, name), _example(copy_), check_trace=False)
                setattr(copy_, name, traced)
        scripted, method = torch.jit.script(copy_), "trace"
    return torch.jit.freeze(scripted, preserved_attrs=["num_classes", "in_channels"]), method


def write_torchscript(net: nn.Module, path: str | os.PathLike[str]) -> tuple[Path, str]:
    """Save ``net`` as TorchScript that ``torch.jit.load`` reads without this package; returns
    the file and how it was made (``script`` or ``trace``, see ``to_torchscript``)."""
    module, method = to_torchscript(net)
    with atomic_path(path) as tmp:
        module.save(str(tmp))
    return Path(path), method


def export_torchscript(net: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save ``net`` as TorchScript that ``torch.jit.load`` reads without this package."""
    return write_torchscript(net, path)[0]


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
        raise SegError(f"ONNX export needs the export extra: {install_hint('export')}") from None
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
        _record_size_divisor(tmp, net)
    return Path(path)


def _record_size_divisor(path: Path, net: nn.Module) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {SIZE_DIVISOR_KEY: str(int(getattr(net, "size_divisor", 16)))})
    onnx.save(model, str(path))


def export_onnx_int8(net: nn.Module, path: str | os.PathLike[str], calibration: Calibration) -> Path:
    """Save an ONNX model whose convolutions are int8 (QDQ), calibrated on ``calibration.images``;
    inputs and outputs are as in ``export_onnx`` and fp32."""
    with tempfile.TemporaryDirectory() as tmp, atomic_path(path) as target:
        fp32 = export_onnx(net, Path(tmp) / "fp32.onnx")
        quantize_onnx(fp32, target, calibration.images, calibration.settings)
        _record_size_divisor(target, net)
    return Path(path)


@dataclass(frozen=True)
class ExportFormat:
    """A deployable format: the file it is written to in an export folder, and its writer.
    A ``calibrated`` format's writer also takes a ``Calibration`` (training images)."""

    file_name: str
    write: Callable[..., Path]
    calibrated: bool = False


#: Every format ``seg.export`` writes, by the name ``format=`` takes. The TorchScript file is the
#: same file a training run writes (``RunDir.model_file``).
FORMATS: dict[str, ExportFormat] = {
    "torchscript": ExportFormat(MODEL_FILE, export_torchscript),
    "onnx": ExportFormat("model.onnx", export_onnx),
    "onnx_int8": ExportFormat("model_int8.onnx", export_onnx_int8, calibrated=True),
    "exported_program": ExportFormat(f"{Path(MODEL_FILE).stem}.pt2", export_program),
}


def export_format(name: str) -> ExportFormat:
    """The format called ``name``; a ``SegError`` naming the valid ones otherwise."""
    if name not in FORMATS:
        raise SegError(f"format={name!r} is not valid: expected one of {', '.join(FORMATS)}")
    return FORMATS[name]


def export(
    net: nn.Module, path: str | os.PathLike[str], fmt: str, calibration: Calibration | None = None
) -> Path:
    """Write ``net`` to ``path`` in format ``fmt`` (a key of ``FORMATS``); a calibrated format needs
    ``calibration``."""
    chosen = export_format(fmt)
    if not chosen.calibrated:
        return chosen.write(net, path)
    if calibration is None:
        raise SegError(f"format={fmt} needs calibration images: export a training run or its .ckpt")
    return chosen.write(net, path, calibration)


def checkpoint_of(path: Path) -> tuple[Path, RunDir]:
    """The checkpoint to export and its run: a run directory's best checkpoint, or a ``.ckpt``
    file (whose run is the folder above its checkpoint folder)."""
    if path.is_dir():
        run_dir = RunDir.of(path)
        return run_dir.best_checkpoint(), run_dir
    if path.suffix != ".ckpt":
        raise SegError(f"run={path} must be a training run directory or a .ckpt checkpoint")
    return path, RunDir.of_checkpoint(path)


def export_run(
    run: str | os.PathLike[str],
    fmt: str,
    output: str | None = None,
    int8: Int8Settings | None = None,
    data_root: str | None = None,
) -> tuple[Path, Path]:
    """Export ``run``'s best weights (a training run, or a ``.ckpt``) as ``fmt`` with its classes
    file beside it, into ``output`` or the run's export folder. Returns the model file and the classes file.

    A calibrated format (``onnx_int8``) is calibrated on ``int8.calibration_images`` training frames
    of the run's saved data config, read from ``data_root`` instead of the saved root when given.
    """
    chosen = export_format(fmt)
    checkpoint, run_dir = checkpoint_of(Path(run))
    net, info, _ = load_model(checkpoint)
    calibration = None
    if chosen.calibrated:
        if int8 is None:
            raise SegError(f"format={fmt} needs the int8 settings (conf/export.yaml: int8)")
        datamodule = build_datamodule(run_data_config(run_dir, data_root), run_dir)
        calibration = Calibration(calibration_frames(datamodule, int8.calibration_images), int8)
    folder = Path(output) if output else run_dir.export_dir
    model_file = export(net, folder / chosen.file_name, fmt, calibration)
    classes_file = info.write(folder / CLASSES_FILE)
    record_export(folder / EXPORTS_FILE, fmt, model_file, agreement_with_fp32(net, model_file))
    if folder == run_dir.export_dir and run_dir.model_card.is_file():
        write_model_card(run_dir)  # the card lists the files written here
    return model_file, classes_file


def export_from_config(cfg: Any) -> tuple[Path, Path]:
    """What ``seg.export`` runs: ``export_run`` with the command's settings; prints what it wrote."""
    model, classes = export_run(
        cfg.run, cfg.format, cfg.get("output"), Int8Settings(**cfg.int8), cfg.data.root
    )
    print(f"Wrote {model} and {classes}")
    return model, classes


def agreement_with_fp32(net: nn.Module, path: Path) -> dict[str, Any]:
    """How the exported ``path`` agrees with the fp32 eager ``net`` on a seeded random batch:
    the largest logit difference and the share of pixels given the same class."""
    divisor = int(getattr(net, "size_divisor", 16))
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(
        2, int(getattr(net, "in_channels", 3)), 4 * divisor, 6 * divisor, generator=generator
    )
    exported, _, _ = load_model(path)
    with torch.no_grad():
        reference = deployable(net)(example)
        logits = torch.as_tensor(exported(example)).float()
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "max_abs_diff": float((logits - reference).abs().max()),
        "label_agreement": float((logits.argmax(1) == reference.argmax(1)).float().mean()),
        "checked_on": f"a seeded random batch of shape {tuple(example.shape)} in [0, 1]",
    }


def record_export(manifest: Path, fmt: str, path: Path, check: dict[str, Any]) -> None:
    """Add (or replace) ``fmt``'s entry in the export folder's manifest."""
    entries = json.loads(manifest.read_text()) if manifest.is_file() else {}
    entries[fmt] = check
    write_json(manifest, entries)
