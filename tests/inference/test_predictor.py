"""Inference precision: ``auto`` is bf16 only on CPUs with native bf16; bf16 really runs for every
torch model form (ONNX stays fp32); bf16 predictions and evaluate's metrics stay close to fp32;
training-time validation under ``bf16-mixed`` computes in bf16."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from support import CONF_DIR, TINY

import seg.hardware
from seg.errors import SegError
from seg.hardware import resolve_device
from seg.inference.evaluation import evaluate
from seg.inference.formats import export_run
from seg.inference.predictor import Predictor, load_model, resolve_precision
from seg.training.pipeline import build_module, build_trainer

CPU = torch.device("cpu")


def _bf16_autocast_works() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 1, 1))
        return out.dtype == torch.bfloat16
    except (RuntimeError, TypeError):
        return False


needs_bf16 = pytest.mark.skipif(not _bf16_autocast_works(), reason="no bf16 autocast on CPU in this torch")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_where_native(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seg.hardware, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", CPU) == ("bf16" if native else "32")
    assert resolve_precision("32", CPU) == "32"  # asked for: exact, also where bf16 is native
    assert resolve_precision("bf16", CPU) == "bf16"
    predictor = Predictor(torch.nn.Conv2d(3, 2, 1), 2, device="cpu", precision="auto")
    assert predictor.precision == ("bf16" if native else "32")
    with pytest.raises(SegError, match="precision='16' is not valid"):
        Predictor(torch.nn.Conv2d(3, 2, 1), 2, device="cpu", precision="16")


def _eval_cfg(trained_run: dict[str, Any], *overrides: str) -> Any:
    keep = ("data.generator", "data.image_size", "data.num_workers")
    data = ["data=synthetic", *(o for o in TINY if o.startswith(keep))]
    data.append(f"paths.data_dir={trained_run['cfg'].paths.data_dir}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=[*data, *overrides])


def _model_file(trained_run: dict[str, Any], form: str, tmp_path: Path) -> Path:
    if form == "ckpt":
        return Path(trained_run["metrics"]["paths"]["best_checkpoint"])
    if form == "torchscript":
        return trained_run["dir"] / "model.pt"
    fmt = {"pt2": "exported_program", "onnx": "onnx"}[form]
    return export_run(trained_run["dir"], fmt, str(tmp_path))[0]


@needs_bf16
@pytest.mark.parametrize("form", ["ckpt", "torchscript", "pt2", "onnx"])
def test_bf16_runs_for_every_torch_form(form: str, trained_run: dict[str, Any], tmp_path: Path) -> None:
    """Under ``precision=bf16`` the network itself computes in bf16 (its logits come out bf16) for
    the checkpoint, the frozen TorchScript and the ``.pt2``; an ONNX model runs in fp32."""
    if form == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip('onnxruntime is not installed (pip install -e ".[export]")')
    model, info, _ = load_model(_model_file(trained_run, form, tmp_path))
    predictor = Predictor(model, info.num_classes, device="cpu", precision="bf16")
    with torch.inference_mode():
        logits = predictor.logits(torch.rand(2, 3, 48, 64))
    expected = torch.float32 if form == "onnx" else torch.bfloat16
    assert predictor.precision == ("32" if form == "onnx" else "bf16")
    assert logits.dtype == expected and logits.shape == (2, info.num_classes, 48, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("form", ["ckpt", "torchscript", "pt2"])
def test_every_torch_form_runs_on_the_gpu(form: str, trained_run: dict[str, Any], tmp_path: Path) -> None:
    """The frozen TorchScript model keeps its normalisation as constants, which ``.to()`` does not
    move: it must be loaded onto the GPU (a CPU-loaded one failed with "two devices")."""
    device = resolve_device("cuda")
    model, info, _ = load_model(_model_file(trained_run, form, tmp_path), device)
    predictor = Predictor(model, info.num_classes, device="cuda", precision="bf16")
    assert predictor.labels(torch.rand(2, 3, 48, 64)).shape == (2, 48, 64)


def test_a_bad_device_is_one_line() -> None:
    with pytest.raises(SegError, match=r"device='tpu' is not valid: expected auto, cpu, cuda or mps"):
        resolve_device("tpu")


def _labels(predictor: Predictor, loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    predictions, targets = zip(*((predictor.labels(images), masks) for images, masks in loader), strict=True)
    return torch.cat(predictions), torch.cat(targets)


@needs_bf16
def test_bf16_agrees_with_fp32_and_evaluate_stays_within_the_derived_bound(
    trained_run: dict[str, Any], tmp_path: Path
) -> None:
    """bf16 labels agree with fp32 on >= 99% of the val pixels of a trained model, and every
    metric ``seg.evaluate`` reports moves by no more than those disagreeing pixels allow.

    With D pixels whose label changed, pixel accuracy moves by at most D / N. A class's Dice
    ``2 TP / S`` (``S`` = predicted + true pixels of the class in fp32) moves by at most
    ``3 D_c / (S - D_c)``, where D_c counts the changed pixels labelled c in either run: TP and S
    each move by at most D_c, and ``2 (TP + D) / (S - D) - 2 TP / S = 2 D (S + TP) / (S (S - D))``
    with ``TP <= S / 2``. The same holds for the mean over classes.
    """
    model_path = trained_run["dir"] / "model.pt"
    reports = {}
    for precision in ("32", "bf16"):
        overrides = [f"run={model_path}", "split=val", f"precision={precision}"]
        cfg = _eval_cfg(trained_run, *overrides, f"output_dir={tmp_path / precision}")
        reports[precision] = evaluate(cfg, tmp_path)
    exact, fast = reports["32"], reports["bf16"]
    assert (exact["precision"], fast["precision"]) == ("32", "bf16")

    datamodule = instantiate(_eval_cfg(trained_run).data)
    datamodule.prepare_data()
    loader = datamodule.eval_dataloader("val")
    model, info, _ = load_model(model_path)
    labels32, target = _labels(Predictor(model, info.num_classes, precision="32", tile_size=None), loader)
    labels16, _ = _labels(Predictor(model, info.num_classes, precision="bf16", tile_size=None), loader)
    changed = labels32 != labels16
    assert changed.float().mean().item() <= 0.01

    pixels = target.numel()
    accuracy_shift = abs(fast["mean"]["pixel_accuracy"] - exact["mean"]["pixel_accuracy"])
    assert accuracy_shift <= changed.sum().item() / pixels + 1e-9
    confmat = torch.tensor(exact["confusion_matrix"], dtype=torch.float64)
    bounds = []
    for c, (row32, row16) in enumerate(zip(exact["per_class"], fast["per_class"], strict=True)):
        s = confmat[c].sum() + confmat[:, c].sum()
        d_c = (changed & ((labels32 == c) | (labels16 == c))).sum().item()
        bound = 3 * d_c / (s - d_c) if s > d_c else float("inf")
        bounds.append(bound)
        assert abs(row16["dice"] - row32["dice"]) <= bound + 1e-9, row32["class"]
    assert abs(fast["mean"]["dice"] - exact["mean"]["dice"]) <= sum(bounds) / len(bounds) + 1e-9
    assert exact["mean"]["dice"] > 0.1  # above chance (13 classes): the comparison is not of noise


@needs_bf16
def test_training_validation_under_bf16_mixed_computes_in_bf16(make_cfg: Any) -> None:
    """``trainer.precision=bf16-mixed`` reaches the trainer ``seg`` builds, and its validation runs
    in autocast too: the network's convolutions return bf16 during the validation steps of a fit."""
    cfg = make_cfg(
        "trainer.precision=bf16-mixed", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2", "trainer.num_sanity_val_steps=0", "logger=none",
    )  # fmt: skip
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    seen: list[torch.dtype] = []

    class Record(pl.Callback):
        def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.hook = pl_module.net.head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))

        def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.hook.remove()

    trainer = build_trainer(cfg, [Record()])  # as seg.train builds it, callbacks and all
    trainer.fit(module, datamodule=datamodule)
    assert seen and set(seen) == {torch.bfloat16}
