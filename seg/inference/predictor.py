"""Loading a trained model from any saved form, and running it on images of any size.

A model is a ``.ckpt`` checkpoint, a TorchScript file, a ``torch.export`` ``.pt2``, an ``.onnx``
file, or a run directory (its best model, see ``seg.rundir.RunDir.model``). Class names and
colours come from the ``ClassInfo`` file beside the model (or in the run directory), so the
training config is not needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seg.classes import ClassInfo
from seg.errors import SegError, first_line, install_hint
from seg.hardware import best_precision, resolve_device
from seg.inference.tta import PLAIN, TTA
from seg.models.inputs import pad_to_multiple
from seg.rundir import CLASSES_FILE, RunDir, classes_beside

Model = Callable[[torch.Tensor], torch.Tensor]

#: The ONNX metadata key under which ``seg.export`` records the network's size divisor.
SIZE_DIVISOR_KEY = "seg.size_divisor"


class OnnxModel:
    """An ONNX file run by onnxruntime, called like a module on CPU tensors.

    An exported graph takes only multiples of the network's size divisor (recorded in its
    metadata), so other sizes are padded here as the network pads them itself
    (``seg.models.inputs.pad_to_multiple``) and the logits are cropped back.
    """

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise SegError(f"{path} is an ONNX model; running it needs: {install_hint('export')}") from None
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.size_divisor = int(metadata.get(SIZE_DIVISOR_KEY, 1))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        padded = pad_to_multiple(images.detach().cpu().float(), self.size_divisor)
        (logits,) = self.session.run(None, {"image": padded.numpy()})
        return torch.from_numpy(logits)[..., :height, :width]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Model, ClassInfo, Path]:
    """The model in ``path`` (file or run directory), what its classes are, and the file used.

    A TorchScript model is loaded straight onto ``device``: a run's TorchScript model is frozen, so its
    weights and constants (the input normalisation) are not buffers that ``.to()`` would move.
    """
    path = Path(path)
    if path.is_dir():
        path = RunDir.of(path).model()
    if not path.is_file():
        raise SegError(f"run={path} does not exist: pass a training run directory or a model file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".ckpt":
            from seg.lightning_module import SegmentationModule

            module = SegmentationModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
            net: Any = module.net.eval().to(memory_format=torch.contiguous_format)
            info_file = classes_beside(path)
            info = (
                ClassInfo.read(info_file)
                if info_file
                else ClassInfo(module.class_names, module.palette, module.ignore_index, net.in_channels)
            )
            return net, info, path
        if suffix == ".onnx":
            model: Any = OnnxModel(path)
        elif suffix == ".pt2":
            model = torch.export.load(str(path)).module()
        else:
            model = torch.jit.load(str(path), map_location=device).eval()
    except SegError:
        raise
    except Exception as e:
        reason = first_line(e)
        raise SegError(
            f"cannot load model {path}: expected a .ckpt, TorchScript .pt, .pt2 or .onnx file "
            f"written by seg ({reason})"
        ) from None
    info_file = classes_beside(path)
    if info_file is not None:
        return model, ClassInfo.read(info_file), path
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise SegError(f"no {CLASSES_FILE} next to {path}; copy the run's {CLASSES_FILE} beside the model")
    return model, ClassInfo.generated(int(num_classes), int(getattr(model, "in_channels", 3))), path


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` images to the float ``[0, 1]`` input models take."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``32`` or ``bf16`` for a requested ``precision`` (``auto``, ``32`` or ``bf16``) on ``device``.

    ``auto`` is bf16 exactly where training picks ``bf16-mixed`` (``seg.hardware.best_precision``):
    CPUs with native bf16 and GPUs that support it; elsewhere (CPUs that would emulate bf16, many
    times slower) it is 32.
    """
    if precision == "auto":
        accelerator = "gpu" if device.type == "cuda" else device.type
        return "bf16" if best_precision(accelerator) == "bf16-mixed" else "32"
    if precision not in ("32", "bf16"):
        raise SegError(f"precision={precision!r} is not valid: expected auto, 32 or bf16")
    return precision


class Predictor:
    """Runs a model on batches of images, on GPU when present, with bf16 where it is fast.

    Torch models (``.ckpt``, TorchScript, ``.pt2``) take their input channels-last: with bf16
    autocast that is about 3x faster on a CPU with AMX than the default layout (see
    ``docs/speed.md``). ONNX models always run in fp32.

    Images larger than ``tile_size`` in either dimension are predicted tile by tile with
    ``tile_overlap``, and the overlapping probabilities are blended with a smooth window so that
    tile borders leave no seams. Test-time augmentation (``tta``) wraps each model call, so it
    works with every model format, and on tiled images it runs per tile: every tile's
    probabilities are the mean over its views before the tiles are blended, which keeps the
    blend seamless and the memory of a view bounded by the tile size.

    Args:
        model: a loaded model (see ``load_model``).
        num_classes: its number of output channels.
        device: ``auto`` (GPU when present), ``cpu`` or ``cuda``.
        precision: ``auto`` (bf16 where native, as in training), ``32`` or ``bf16``.
        tile_size: images larger than this are tiled (``null``: never).
        tile_overlap: fraction of a tile shared with its neighbour.
        tta: the views whose probabilities are averaged (default: none, the model alone).
    """

    def __init__(
        self,
        model: Model,
        num_classes: int,
        device: str = "auto",
        precision: str = "auto",
        tile_size: int | None = 1024,
        tile_overlap: float = 0.25,
        tta: TTA | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.torch_model = not isinstance(model, OnnxModel)
        if isinstance(model, nn.Module):
            model = model.to(self.device)
            if not isinstance(model, torch.jit.ScriptModule):
                model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.num_classes = num_classes
        precision = resolve_precision(precision, self.device)
        self.precision = precision if self.torch_model else "32"
        if tile_size is not None and tile_size < 16:
            raise SegError(f"tile_size={tile_size} is not valid: expected at least 16, or null")
        if not 0 <= tile_overlap < 1:
            raise SegError(f"tile_overlap={tile_overlap} is not valid: expected 0 <= overlap < 1")
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.tta = tta or PLAIN

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """fp32 class probabilities ``(B, K, H, W)`` on the CPU for uint8 (or ``[0, 1]`` float)
        images ``(B, C, H, W)``: the softmax of the model's logits, averaged over the TTA views."""
        height, width = images.shape[-2:]
        if self.tile_size is not None and max(height, width) > self.tile_size:
            return self._tiled(images)
        return self._run(images)

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        return self.tta(self.logits, to_input(images).to(self.device)).cpu()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for float images ``x`` in ``[0, 1]``, in the dtype it computed them
        (bf16 under autocast for torch models, fp32 otherwise): one model call, no augmentation."""
        if self.torch_model:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model(x)

    def _tiled(self, images: torch.Tensor) -> torch.Tensor:
        assert self.tile_size is not None
        batch, _, height, width = images.shape
        tile_h, tile_w = min(self.tile_size, height), min(self.tile_size, width)
        starts_y = _starts(height, tile_h, self.tile_overlap)
        starts_x = _starts(width, tile_w, self.tile_overlap)
        window = _window(tile_h, tile_w)
        total = torch.zeros(batch, self.num_classes, height, width)
        weight = torch.zeros(1, 1, height, width)
        for y in starts_y:
            for x in starts_x:
                tile = images[..., y : y + tile_h, x : x + tile_w]
                total[..., y : y + tile_h, x : x + tile_w] += self._run(tile) * window
                weight[..., y : y + tile_h, x : x + tile_w] += window
        return total / weight

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """Class indices ``(B, H, W)`` (the first of equal maxima, as ``argmax``)."""
        # max(1).indices, not argmax(1): on a (B, K, H, W) tensor in the default layout argmax over
        # K is about 9x slower on CPU (3 s of a 17 s CamVid val evaluation), for the same result.
        return self.probabilities(images).max(1).indices


def _starts(size: int, tile: int, overlap: float) -> list[int]:
    if size <= tile:
        return [0]
    stride = max(1, int(tile * (1 - overlap)))
    count = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(count)})


def _window(height: int, width: int) -> torch.Tensor:
    """A smooth weight that is highest in a tile's centre and small (never zero) at its borders."""
    wy = torch.from_numpy(np.hanning(height + 2)[1:-1]).float()
    wx = torch.from_numpy(np.hanning(width + 2)[1:-1]).float()
    return (wy[:, None] * wx[None, :]).clamp_min(1e-3)
