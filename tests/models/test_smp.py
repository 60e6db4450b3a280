"""model=smp: segmentation_models_pytorch networks behind seg's input convention, their errors,
checkpoints and exports. Nothing here downloads: pretrained weights come from a fake hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from support import TINY, compose_train, run_cli
from support.models import assert_export_matches_eager, assert_torchscript_alone_matches, save_checkpoint

from seg.errors import SegError
from seg.inference.formats import to_torchscript
from seg.lightning_module import SegmentationModule
from seg.models.inputs import DEFAULT_MEAN, DEFAULT_STD
from seg.models.smp import IMAGENET_MEAN, IMAGENET_STD, SmpNet

smp = pytest.importorskip("segmentation_models_pytorch", reason='needs pip install -e ".[models]"')

#: The bar's model (Unet with a resnet18 encoder) on the tiny data: 64x64 images, no downloads.
SMP_TINY = [
    *(o for o in TINY if not o.startswith("model.net.")),
    "model=smp",
    "model.net.encoder_name=resnet18",
    "model.net.encoder_weights=null",
]


def _net(arch: str = "Unet", encoder: str = "resnet18", **kwargs: Any) -> SmpNet:
    torch.manual_seed(0)
    return SmpNet(arch, encoder, None, in_channels=3, num_classes=5, **kwargs).eval()


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, torch.Tensor]:
    """smp's hub download replaced by local files: resnet18 "imagenet" weights that are a random
    encoder's (returned, to compare with)."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    weights = {k: v.contiguous() for k, v in smp.encoders.get_encoder("resnet18").state_dict().items()}
    save_file(weights, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(
        json.dumps({"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
    )

    def download(repo_id: str, filename: str, **_: Any) -> str:
        return str(tmp_path / filename)

    monkeypatch.setattr(smp.encoders, "hf_hub_download", download)
    return weights


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real hub client in offline mode with an empty cache: every download fails at once."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))


@pytest.mark.parametrize(("arch", "stride"), [("Unet", 32), ("FPN", 32), ("DeepLabV3Plus", 16)])
def test_any_size_is_reflect_padded_to_the_encoder_stride_and_cropped_back(arch: str, stride: int) -> None:
    net = _net(arch)
    assert net.size_divisor == stride
    x = torch.rand(2, 3, 50, 70)
    # Reference: numpy's reflect padding to the next multiple, smp's own model, then the crop.
    rows, cols = -(-50 // stride) * stride, -(-70 // stride) * stride
    padded = np.pad(x.numpy(), [(0, 0), (0, 0), (0, rows - 50), (0, cols - 70)], mode="reflect")
    normalised = (torch.from_numpy(padded) - DEFAULT_MEAN) / DEFAULT_STD
    with torch.no_grad():
        expected = net.model(normalised)[:, :, :50, :70]
        got = net(x)
    assert got.shape == (2, 5, 50, 70)
    torch.testing.assert_close(got, expected)
    with torch.no_grad():  # smp alone refuses this size; tiny inputs are replicate-padded
        assert net(torch.rand(1, 3, 17, 33)).shape == (1, 5, 17, 33)


def test_pretrained_weights_are_loaded_and_imagenet_statistics_used(
    fake_hub: dict[str, torch.Tensor],
) -> None:
    net = SmpNet("Unet", "resnet18", "imagenet", in_channels=3, num_classes=4)
    torch.testing.assert_close(net.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(net.std.flatten(), torch.tensor(IMAGENET_STD))
    encoder = net.model.encoder.state_dict()
    for key, value in fake_hub.items():
        torch.testing.assert_close(encoder[key], value)
    # Statistics from the data config win; random initialisation keeps the default ones.
    given = SmpNet("Unet", "resnet18", "imagenet", 3, 4, mean=[0.1, 0.2, 0.3], std=[1.0, 2.0, 3.0])
    torch.testing.assert_close(given.mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(_net().mean.flatten(), torch.full((3,), DEFAULT_MEAN))


def test_a_checkpoint_reloads_without_downloading(
    fake_hub: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = save_checkpoint("resnet18", "imagenet", tmp_path / "model.ckpt")
    assert module.hparams.net["encoder_weights"] == "imagenet"  # the live config is untouched

    def no_download(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("loading a checkpoint downloaded weights")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", no_download)
    loaded = SegmentationModule.load_from_checkpoint(tmp_path / "model.ckpt", map_location="cpu").eval()
    torch.testing.assert_close(loaded.net.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module(x))


def test_failed_download_is_one_line_naming_encoder_weights(offline_hub: None) -> None:
    with pytest.raises(SegError) as error:
        SmpNet("Unet", "resnet18", "imagenet", in_channels=3, num_classes=2)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("model.net.encoder_weights=imagenet: the pretrained weights of resnet18")
    assert "model.net.encoder_weights=null" in message


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (("Unet", "resnet1234", None), "model.net.encoder_name='resnet1234' is not an smp encoder"),
        (("Unet", "tu-nonexistent_net", None), "model.net.encoder_name='tu-nonexistent_net': timm has no"),
        (("Unet", "resnet18", "instagram"), "model.net.encoder_weights='instagram': encoder resnet18 has"),
        (("UNetz", "resnet18", None), "model.net.arch='UNetz' is not an smp architecture: expected one of"),
    ],
)
def test_unknown_names_are_one_line_naming_the_key(args: tuple[str, str, str | None], start: str) -> None:
    with pytest.raises(SegError) as error:
        SmpNet(*args, in_channels=3, num_classes=2)
    assert str(error.value).startswith(start) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "fmt", ["torchscript", "exported_program", pytest.param("onnx", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("arch", ["Unet", "FPN"])
def test_export_matches_eager(arch: str, fmt: str, tmp_path: Path) -> None:
    assert_export_matches_eager(_net(arch), fmt, tmp_path, [(1, 3, 64, 96), (2, 3, 96, 64)])


@pytest.mark.parametrize(("arch", "method"), [("Unet", "script"), ("UnetPlusPlus", "trace")])
def test_torchscript_takes_any_size_scripted_or_traced(arch: str, method: str) -> None:
    net = _net(arch)
    scripted, used = to_torchscript(net)
    assert used == method
    for shape in [(1, 3, 64, 64), (2, 3, 50, 70), (1, 3, 96, 130)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            assert (scripted(x) - net(x)).abs().max().item() < 1e-4


@pytest.mark.slow
def test_offline_pretrained_run_ends_with_one_line(tmp_path: Path, data_cache: Path) -> None:
    result = run_cli(
        ["seg.train", *SMP_TINY, "model.net.encoder_weights=imagenet", f"paths.data_dir={data_cache}"],
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model.net.encoder_weights=imagenet: the pretrained weights of resnet18")
    assert last.endswith("or train from scratch with model.net.encoder_weights=null")


@pytest.mark.slow
def test_smp_training_exports_a_model_that_loads_alone(data_cache: Path, tmp_path: Path) -> None:
    from seg.training.pipeline import train

    out = tmp_path / "run"
    cfg = compose_train(
        [*SMP_TINY, "trainer.max_epochs=2", f"paths.data_dir={data_cache}", f"paths.output_dir={out}"]
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    metrics = train(cfg)
    assert metrics["status"] == "finished" and metrics["torchscript_method"] == "script"
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    module = SegmentationModule.load_from_checkpoint(metrics["paths"]["best_checkpoint"], map_location="cpu")
    assert isinstance(module.net, SmpNet) and type(module.net.model).__name__ == "Unet"
    inputs = [torch.rand(2, 3, 64, 64), torch.rand(1, 3, 50, 70)]
    assert_torchscript_alone_matches(Path(metrics["paths"]["torchscript"]), module.net, inputs, tmp_path)
