"""int8 against fp32 and bf16 on trained runs' val split, in one process: frames/s and mIoU per
variant, for each run in turn (so that two models are compared on one machine, in one process).

    python scripts/int8_camvid.py <run dir>[,<run dir>...] <data root> [variant ...]

Every variant predicts the whole val split at full resolution through ``seg.inference.predictor``
(as ``seg.evaluate`` does, batches of the data's eval batch size) after one warm-up batch; the time
is the prediction alone (frames decoded beforehand). Variants: ``torchscript``, ``torchscript-bf16``,
``onnx`` (fp32) and ``int8:<method>:<frames>:<per-channel 0/1>:<fp32 ends 0/1>``; with none given,
the knob sweep recorded in docs/speed.md. Prints one JSON line per variant.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from seg.hardware import cpu_name
from seg.inference.evaluation import build_datamodule, run_data_config
from seg.inference.formats import checkpoint_of, export_onnx, to_torchscript
from seg.inference.predictor import OnnxModel, Predictor, load_model
from seg.inference.quantize import Int8Settings, calibration_frames, quantize_onnx
from seg.metrics import build_metrics, summarize

SWEEP = [
    "torchscript",
    "torchscript-bf16",
    "onnx",
    "int8:minmax:16:1:0",
    "int8:minmax:16:0:0",
    "int8:minmax:16:1:1",
    "int8:minmax:4:1:0",
    "int8:minmax:64:1:0",
    "int8:entropy:8:1:0",
    "int8:percentile:8:1:0",
]


def main(runs: str, data_root: str, variants: list[str]) -> None:
    for run in runs.split(","):
        measure(run, data_root, variants)


def measure(run: str, data_root: str, variants: list[str]) -> None:
    """One JSON line about ``run``'s frames, then one per variant."""
    checkpoint, run_dir = checkpoint_of(Path(run))
    net, info, _ = load_model(checkpoint)
    data = build_datamodule(run_data_config(run_dir, data_root), run_dir)
    data.prepare_data()
    batches = list(data.eval_dataloader("val"))
    frames = sum(len(images) for images, _ in batches)
    tmp = Path(tempfile.mkdtemp())
    fp32 = export_onnx(net, tmp / "fp32.onnx")
    print(json.dumps({"run": run, "cpu": cpu_name(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "frames": frames,
                      "size": list(batches[0][0].shape[-2:])}), flush=True)  # fmt: skip
    for variant in variants or SWEEP:
        precision = "bf16" if variant.endswith("-bf16") else "32"
        extra: dict[str, object] = {}
        if variant.startswith("torchscript"):
            model = to_torchscript(net)[0]
        elif variant == "onnx":
            model = OnnxModel(fp32)
        else:
            _, method, count, per_channel, ends = variant.split(":")
            settings = Int8Settings(int(count), method, per_channel == "1", ends == "1")
            start = time.perf_counter()
            quantize_onnx(fp32, tmp / "int8.onnx", calibration_frames(data, int(count)), settings)
            extra["calibration_s"] = round(time.perf_counter() - start, 1)
            model = OnnxModel(tmp / "int8.onnx")
        predictor = Predictor(model, info.num_classes, "cpu", precision, tile_size=None)
        predictor.labels(batches[0][0])  # warm-up
        metrics = build_metrics(info.num_classes, data.ignore_index)
        seconds = 0.0
        for images, masks in batches:
            start = time.perf_counter()
            labels = predictor.labels(images)
            seconds += time.perf_counter() - start
            metrics.update(labels, masks)
        summary = summarize(metrics.compute(), info.class_names, "val", data.ignore_index)
        row = {"variant": variant, "frames_per_s": round(frames / seconds, 2),
               "miou": round(100 * summary["val/iou"], 2), **extra}  # fmt: skip
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
