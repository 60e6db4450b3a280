"""Static int8 quantisation of an ONNX model with onnxruntime, calibrated on training images.

The fp32 ONNX model (``seg.inference.formats.export_onnx``, batch norm already folded into the
convolutions) goes through onnxruntime's pre-processing, then every operator onnxruntime can
quantise gets int8 weights and uint8 activations in the QDQ format: ``QuantizeLinear`` /
``DequantizeLinear`` pairs around fp32 operators, which onnxruntime fuses into int8 kernels and
which any ONNX runtime can execute. Quantising all of them (convolutions, max pooling, concat),
not only the convolutions, keeps the tensors int8 between layers: on the CamVid U-Net that took
int8 from 1.16x to 1.71x fp32 (docs/speed.md). Transposed convolutions stay fp32 (onnxruntime has
no int8 kernel for them). Activation ranges come from running the model on a few training
frames (calibration): whole frames through the data's evaluation transforms, as at inference time.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg.data.datamodule import SegmentationDataModule
from seg.data.reading import read_sample
from seg.errors import ConfigError, SegError, install_hint
from seg.inference.predictor import SIZE_DIVISOR_KEY, to_input
from seg.models.inputs import pad_to_multiple

log = logging.getLogger(__name__)

#: The calibration methods ``int8.method`` takes, by onnxruntime's ``CalibrationMethod`` names.
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}

#: Calibrator options that differ from onnxruntime's defaults. Entropy calibration searches for
#: the clipping threshold with the least KL divergence among thresholds of 128 quantised bins
#: and more; onnxruntime's default histogram has only 128 bins, so the one threshold it can try
#: is the whole range, which is minmax's. 2048 bins (TensorRT's choice, and onnxruntime's for
#: percentile) let it clip outliers.
CALIBRATOR_OPTIONS: dict[str, dict[str, Any]] = {"entropy": {"num_bins": 2048, "num_quantized_bins": 128}}


@dataclass(frozen=True)
class Int8Settings:
    """How to quantise (``conf/export.yaml``'s ``int8`` node holds the defaults).

    Args:
        calibration_images: training frames whose activations set the int8 ranges.
        method: ``minmax`` (the observed range), ``entropy`` or ``percentile`` (histograms
            that clip outliers; they hold every activation of every frame in memory).
        per_channel: one weight scale per output channel instead of one per tensor.
        fp32_ends: keep the first and the last convolution in fp32.
    """

    calibration_images: int
    method: str
    per_channel: bool
    fp32_ends: bool

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"int8.method={self.method!r} is not valid: expected one of {', '.join(METHODS)}"
            )
        if self.calibration_images < 1:
            raise ConfigError(
                f"int8.calibration_images={self.calibration_images} is not valid: expected >= 1"
            )


def onnxruntime_quantization() -> Any:
    """``onnxruntime.quantization``; a ``SegError`` naming the extra to install without it."""
    try:
        import onnxruntime.quantization as quantization
    except ImportError:
        raise SegError(
            f"int8 export needs onnxruntime, in the export extra: {install_hint('export')}"
        ) from None
    return quantization


def spread(total: int, count: int) -> list[int]:
    """``min(count, total)`` indices spread evenly over ``range(total)`` (the first included), so
    calibration sees every part of a dataset made of video sequences, not only the first one."""
    count = min(count, total)
    return [int(i * total / count) for i in range(count)]


def _reader(images: Sequence[torch.Tensor], size_divisor: int) -> Any:
    quantization = onnxruntime_quantization()

    class Reader(quantization.CalibrationDataReader):
        """Feeds the calibration images one at a time, as ``(1, C, H, W)`` float arrays padded to
        a multiple of ``size_divisor`` (as ``OnnxModel`` pads them at inference)."""

        def __init__(self) -> None:
            self.items: Iterator[torch.Tensor] = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.items, None)
            if image is None:
                return None
            image = pad_to_multiple(image.detach().float().cpu().reshape(1, *image.shape[-3:]), size_divisor)
            return {"image": image.numpy()}

    return Reader()


def _conv_names(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [node.name for node in model.graph.node if node.op_type in ("Conv", "ConvTranspose")]


def _size_divisor(path: str | Path) -> int:
    import onnx

    metadata = {
        prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props
    }
    return int(metadata.get(SIZE_DIVISOR_KEY, 1))


def _calibrate(model: Path, ranges: Path, reader: Any, method: Any, options: dict[str, Any]) -> None:
    """Run ``model`` on the images of ``reader`` and write the activation ranges ``method`` chooses to
    ``ranges`` (onnxruntime's calibration cache, which ``quantize_static`` then reads): the one
    way to hand the calibrator options ``quantize_static`` does not pass on."""
    quantization = onnxruntime_quantization()
    calibrator = quantization.create_calibrator(
        model,
        augmented_model_path=str(ranges.with_name("augmented.onnx")),
        calibrate_method=method,
        providers=["CPUExecutionProvider"],
        extra_options=options,
    )
    with contextlib.redirect_stdout(None):  # the histogram calibrators print their settings
        calibrator.collect_data(reader)
        quantization.save_tensors_data(calibrator.compute_data(), ranges)


def quantize_onnx(
    source: str | Path, target: str | Path, images: Sequence[torch.Tensor], settings: Int8Settings
) -> Path:
    """Write ``target``: the fp32 ONNX model ``source`` with int8 convolutions (QDQ), calibrated on
    ``images`` (float ``[0, 1]`` tensors ``(C, H, W)`` or ``(1, C, H, W)``)."""
    if not images:
        raise SegError("int8 quantisation needs at least one calibration image")
    quantization = onnxruntime_quantization()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        with contextlib.redirect_stdout(None):
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        convs = _conv_names(prepared)
        excluded = [convs[0], convs[-1]] if settings.fp32_ends and convs else []
        method = getattr(quantization.CalibrationMethod, METHODS[settings.method])
        ranges = Path(tmp) / "ranges.json"
        _calibrate(
            prepared,
            ranges,
            _reader(images, _size_divisor(source)),
            method,
            CALIBRATOR_OPTIONS.get(settings.method, {}),
        )
        quantization.quantize_static(
            str(prepared),
            str(target),
            None,
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=settings.per_channel,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=method,
            calibration_cache_path=ranges,
        )
    log.info("quantised %s to int8 (%s) on %d image(s)", source, settings, len(images))
    return Path(target)


@dataclass(frozen=True)
class Calibration:
    """The images an int8 export is calibrated on, and how it quantises."""

    images: Sequence[torch.Tensor]
    settings: Int8Settings


def calibration_frames(data: SegmentationDataModule, count: int) -> list[torch.Tensor]:
    """``count`` training frames of ``data`` spread over the split (see ``spread``), whole, through
    the evaluation transforms, as float ``(1, C, H, W)`` tensors in ``[0, 1]``: what inference sees."""
    data.prepare_data()
    train = data.samples()[0]["train"]
    if not train:
        raise SegError(f"the data in {data.root} has no training images to calibrate int8 on")
    frames = []
    for index in spread(len(train), count):
        image, _ = read_sample(train[index], data.in_channels)
        tensor, _ = data.eval_pipeline(image, np.zeros(image.shape[:2], dtype=np.uint8))
        frames.append(to_input(tensor[None]))
    return frames
