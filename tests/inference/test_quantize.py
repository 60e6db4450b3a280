"""seg.export format=onnx_int8: an int8 model that onnxruntime runs alone, and seg.predict / seg.evaluate."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from support import cli_ok, run_cli

from seg.errors import ConfigError, SegError
from seg.inference.evaluation import build_datamodule, run_data_config
from seg.inference.formats import FORMATS, checkpoint_of, export, export_format, export_run
from seg.inference.predictor import OnnxModel, load_model, to_input
from seg.inference.quantize import Int8Settings, onnxruntime_quantization, spread
from seg.models.unet import UNet
from seg.rundir import RunDir

onnxruntime = pytest.importorskip("onnxruntime", reason='needs the export extra: pip install -e ".[export]"')


def test_onnx_pads_sizes_the_graph_does_not_take(tmp_path: Path) -> None:
    # The exported graph takes multiples of 16 only; OnnxModel pads like the network and crops back.
    torch.manual_seed(0)
    net = UNet(in_channels=3, num_classes=4, base_channels=4).eval()
    model = OnnxModel(export(net, tmp_path / "model.onnx", "onnx"))
    assert model.size_divisor == 16
    x = torch.rand(2, 3, 40, 57)
    with torch.no_grad():
        assert (model(x) - net(x)).abs().max().item() < 1e-4


def test_calibration_frames_are_spread_over_the_split() -> None:
    assert spread(367, 4) == [0, 91, 183, 275]
    assert spread(3, 16) == [0, 1, 2]


def test_bad_settings_and_format_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SegError, match=r"format='onnx_int4' is not valid: expected one of .*onnx_int8"):
        export_format("onnx_int4")
    with pytest.raises(ConfigError, match=r"int8.method='kl' is not valid: expected one of minmax, entropy"):
        Int8Settings(16, "kl", True, False)
    with pytest.raises(ConfigError, match=r"int8.calibration_images=0"):
        Int8Settings(0, "minmax", True, False)
    net = UNet(in_channels=3, num_classes=2, base_channels=4)
    with pytest.raises(SegError, match="format=onnx_int8 needs calibration images"):
        export(net, tmp_path / "m.onnx", "onnx_int8")
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    with pytest.raises(SegError, match=r'int8 export needs onnxruntime.*pip install "seg\[export\]"'):
        onnxruntime_quantization()


@pytest.mark.slow
def test_int8_export_runs_alone_and_in_predict_and_evaluate(cli_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"  # a copy: the export goes into the run's own export/ folder
    shutil.copytree(cli_run, run)
    out = RunDir.of(run).export_dir
    settings = Int8Settings(8, "minmax", True, False)
    model_file, classes = export_run(run, "onnx_int8", None, settings)
    assert model_file == out / FORMATS["onnx_int8"].file_name and classes == out / "classes.json"

    # onnxruntime alone: int8 convolutions, and the labels of the fp32 network wherever fp32 is not
    # close to a tie. Each int8 rounding moves a logit by about a step of its layer's scale, so only
    # pixels whose two best fp32 logits are that close can flip; a tiny, briefly trained network has
    # many such pixels, so the check is on the pixels with a margin of at least 1 (in logits).
    import onnx

    kinds = {node.op_type for node in onnx.load(str(model_file)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= kinds
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    net, _, _ = load_model(checkpoint_of(cli_run)[0])
    data = build_datamodule(run_data_config(RunDir.of(cli_run)), RunDir.of(cli_run))
    images, _ = next(iter(data.eval_dataloader("val")))
    x = to_input(images)
    (int8_logits,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        fp32_logits = net.float().eval()(x)
    top2 = fp32_logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) >= 1.0
    agree = torch.from_numpy(int8_logits).argmax(1) == fp32_logits.argmax(1)
    assert clear.float().mean() > 0.3  # the check is on a real share of the pixels
    assert agree[clear].float().mean().item() >= 0.99, (agree[clear].float().mean(), agree.float().mean())

    # seg.predict on an odd size (padded by OnnxModel) and seg.evaluate on the data of the run
    # holding the file.
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(
        inputs / "a.png"
    )
    masks = tmp_path / "masks"
    cli_ok(["seg.predict", f"run={model_file}", f"input={inputs}", f"output={masks}"], cwd=tmp_path)
    with Image.open(masks / "a.png") as mask:
        assert mask.size == (70, 50)
    cli_ok(["seg.evaluate", f"run={model_file}", "split=val",
            f"output_dir={tmp_path / 'eval'}", "num_samples=0"], cwd=tmp_path)  # fmt: skip
    int8_iou = json.loads((tmp_path / "eval" / "metrics.json").read_text())["mean"]["iou"]
    cli_ok(["seg.evaluate", f"run={cli_run}", "split=val", "precision=32",
            f"output_dir={tmp_path / 'eval32'}", "num_samples=0"], cwd=tmp_path)  # fmt: skip
    fp32_iou = json.loads((tmp_path / "eval32" / "metrics.json").read_text())["mean"]["iou"]
    assert abs(int8_iou - fp32_iou) < 0.02, (int8_iou, fp32_iou)


@pytest.mark.slow
def test_export_cli_int8_and_its_errors(cli_run: Path, tmp_path: Path) -> None:
    """Calibrates on the run's training frames, read from ``data.root=DIR`` when given: a darkened
    copy of the data calibrates other ranges than the run's saved data."""
    moved = tmp_path / "moved"
    shutil.copytree(OmegaConf.load(cli_run / "config_resolved.yaml").data.root, moved)
    for image in moved.glob("*/train/images/*.png"):
        Image.fromarray(np.asarray(Image.open(image)) // 4).save(image)
    result = cli_ok(["seg.export", f"run={cli_run}", "format=onnx_int8", "int8.calibration_images=2",
                     f"output={tmp_path / 'moved_int8'}", f"data.root={moved}"], cwd=tmp_path)  # fmt: skip
    from_moved = tmp_path / "moved_int8" / "model_int8.onnx"
    assert from_moved.is_file() and (tmp_path / "moved_int8" / "classes.json").is_file()
    settings = Int8Settings(2, "minmax", True, False)
    from_saved, _ = export_run(cli_run, "onnx_int8", str(tmp_path / "saved"), settings)
    again, _ = export_run(cli_run, "onnx_int8", str(tmp_path / "saved_again"), settings)
    assert from_saved.read_bytes() == again.read_bytes()  # so the difference below is the data's
    assert from_saved.read_bytes() != from_moved.read_bytes()
    result = run_cli(["seg.export", f"run={cli_run}", "format=onnx_int8", "int8.method=kl"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: int8.method='kl' is not valid")


def _calibration_frames() -> list[torch.Tensor]:
    """Four 128x128 frames in [0.4, 0.6] (the network's normalisation, (x - 0.5) / 0.25, makes
    that [-0.4, 0.4]), but for one value of 1.0 (2.0 normalised): an outlier among 196,608 values
    (0.0005%), inside what the 99.999th percentile clips."""
    frames = [
        0.4 + 0.2 * torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(i)) for i in range(4)
    ]
    frames[0][0, 0, 0], frames[1][0, 0, 0] = 1.0, 0.4
    return frames


def _normalised_input_scale(graph: Any) -> float | None:
    """The scale the normalised image is quantised with (None when it stays fp32)."""
    from onnx import numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    found = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "div"]
    return float(constants[found[0].input[1]]) if found else None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "fp32_ends"),
    [("minmax", False), ("percentile", False), ("percentile", True),
     ("entropy", False)],
)  # fmt: skip
def test_int8_calibration_methods_and_fp32_ends(tmp_path: Path, method: str, fp32_ends: bool) -> None:
    """The method reaches onnxruntime and sets the ranges: minmax takes the observed range of the
    normalised input, [-0.4, 2.0], so its scale is 2.4/255; percentile and entropy clip the
    lone outlier: under half of that. ``fp32_ends`` leaves the first and the last
    of the U-Net's 23 convolutions in fp32, and only them; the int8 model stays close to fp32."""
    import onnx

    from seg.inference.quantize import Calibration

    torch.manual_seed(0)
    net = UNet(in_channels=3, num_classes=3, base_channels=4).eval()
    frames = _calibration_frames()
    settings = Int8Settings(calibration_images=4, method=method, per_channel=True, fp32_ends=fp32_ends)
    model = export(net, tmp_path / "model.onnx", "onnx_int8", Calibration(frames, settings))
    graph = onnx.load(str(model)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    int8 = [n.input[1] in dequantized for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert int8 == ([False] + [True] * 21 + [False] if fp32_ends else [True] * 23)
    scale = _normalised_input_scale(graph)
    if fp32_ends:
        assert scale is None  # nothing quantises the input of a first convolution kept in fp32
    elif method == "minmax":
        assert scale == pytest.approx(2.4 / 255, rel=1e-5)
    else:
        assert scale < 1.2 / 255  # under half the observed range: the outlier is clipped
    x = torch.stack(frames[2:])
    with torch.no_grad():
        exact = net(x)
        error = (OnnxModel(model)(x) - exact).abs().mean() / exact.abs().mean()
    assert error < 0.1
