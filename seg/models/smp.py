"""Any segmentation_models_pytorch (smp) architecture and encoder as a seg network.

``SmpNet`` wraps ``smp.<arch>(encoder_name, encoder_weights, in_channels, classes)`` in the input
convention of every seg network (``seg.models.inputs``): it takes images in ``[0, 1]``, normalises
them itself, and pads any height and width up to a multiple of the encoder's output stride (32
for most encoders; smp itself refuses other sizes), cropping the logits back. Without explicit
``mean``/``std`` it normalises as its pretrained weights expect.

Pretrained weights come from a local file or an installed package (``seg.models.weights``: no
network), or from the Hugging Face hub on first use, cached in ``~/.cache/huggingface``; a failed
download or an unknown name is a one-line ``SegError`` naming the key to change. smp is an optional
dependency: ``pip install "seg[models]"``."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from seg.errors import SegError, first_line, install_hint
from seg.models.inputs import normalisation, pad_to_multiple
from seg.models.weights import IMAGENET_MEAN, IMAGENET_STD, load_encoder, resolve_weights

#: Top-level packages whose exceptions mean the weights could not be fetched.
_DOWNLOAD_PACKAGES = ("huggingface_hub", "httpx", "httpcore", "requests", "urllib3", "urllib")


def _smp() -> Any:
    try:
        import segmentation_models_pytorch
    except ImportError as error:
        raise SegError(
            f"model=smp needs the models extra: {install_hint('models')} ({first_line(error)})"
        ) from None
    return segmentation_models_pytorch


def _is_download_error(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) comes from fetching a file: no network, a hub error."""
    while error is not None:
        if isinstance(error, OSError) or type(error).__module__.split(".")[0] in _DOWNLOAD_PACKAGES:
            return True
        error = error.__cause__ or error.__context__
    return False


def _architecture(smp: Any, arch: str) -> type[nn.Module]:
    """The smp model class called ``arch``, or a ``SegError`` listing the valid names."""
    base = smp.base.SegmentationModel
    names = sorted(
        name
        for name in dir(smp)
        if isinstance(getattr(smp, name), type) and issubclass(getattr(smp, name), base)
    )
    if arch not in names:
        raise SegError(
            f"model.net.arch={arch!r} is not an smp architecture: expected one of {', '.join(names)}"
        )
    return getattr(smp, arch)


def _hub_names(smp: Any, encoder_name: str) -> list[str]:
    """The pretrained weights smp downloads for ``encoder_name``, or a ``SegError`` for an encoder
    name neither smp nor timm knows."""
    if encoder_name.startswith("tu-"):
        import timm

        if not timm.is_model(encoder_name[3:]):
            raise SegError(
                f"model.net.encoder_name={encoder_name!r}: timm has no model {encoder_name[3:]!r} "
                "(timm.list_models() lists them)"
            )
        return ["imagenet"] if timm.is_model_pretrained(encoder_name[3:]) else []
    encoders = smp.encoders.encoders
    if encoder_name not in encoders:
        raise SegError(
            f"model.net.encoder_name={encoder_name!r} is not an smp encoder: use a name from "
            "smp.encoders.get_encoder_names() (e.g. resnet18, resnet34, efficientnet-b0) or tu-<timm model>"
        )
    return list(encoders[encoder_name]["pretrained_settings"])


def _classifier_reference(encoder_name: str) -> dict[str, torch.Tensor] | None:
    """For a timm encoder, the state dict of the whole classifier it is cut from (random values):
    what a classifier's weights file is matched against by order."""
    if not encoder_name.startswith("tu-"):
        return None
    import timm

    return timm.create_model(encoder_name[3:], pretrained=False).state_dict()


class SmpNet(nn.Module):
    """An smp network: images ``(B, in_channels, H, W)`` in ``[0, 1]`` to logits ``(B, num_classes, H, W)``.

    Args:
        arch: smp architecture class name (``Unet``, ``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus``,
            ``Segformer``, ...).
        encoder_name: smp encoder (``resnet34``, ``efficientnet-b0``, ``mit_b0``, ...) or
            ``tu-<timm model>``.
        encoder_weights: pretrained weights: a name smp downloads (``imagenet``), a weights file,
            an installed weights package (``seg.models.weights``), or ``None`` for random
            initialisation.
        in_channels: image channels.
        num_classes: output classes.
        mean: per-channel normalisation mean; ``None``: the one the pretrained weights expect
            (``PretrainedWeights.mean``), ``seg.models.inputs.DEFAULT_MEAN`` from scratch.
        std: per-channel standard deviation, chosen like ``mean``.
        options: further keyword arguments of the smp class (``decoder_channels``, ...).
    """

    #: Children that ``seg.inference.formats`` traces (and wraps in this scripted module) when the
    #: smp model does not script, so that padding and cropping stay code for any input size.
    traced_children = ("model",)

    def __init__(
        self,
        arch: str,
        encoder_name: str,
        encoder_weights: str | None,
        in_channels: int,
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        smp = _smp()
        model_class = _architecture(smp, arch)
        hub_names = _hub_names(smp, encoder_name)
        self.weights = resolve_weights(
            encoder_weights, encoder_name, hub_names, (IMAGENET_MEAN, IMAGENET_STD)
        )
        local = self.weights is not None and self.weights.kind != "hub"
        weights_mean = weights_std = None
        if self.weights is not None:  # a first convolution adapted to in_channels averages the colours
            same = in_channels == len(self.weights.mean)
            weights_mean = self.weights.mean if same else [statistics.fmean(self.weights.mean)] * in_channels
            weights_std = self.weights.std if same else [statistics.fmean(self.weights.std)] * in_channels
        mean_tensor, std_tensor = normalisation(in_channels, mean, std, weights_mean, weights_std)
        try:
            self.model = model_class(
                encoder_name=encoder_name,
                encoder_weights=None if local else encoder_weights,
                in_channels=3 if local else in_channels,
                classes=num_classes,
                **options,
            )
        except Exception as error:
            if encoder_weights is not None and _is_download_error(error):
                raise SegError(
                    f"model.net.encoder_weights={encoder_weights}: the pretrained weights of "
                    f"{encoder_name} could not be downloaded ({first_line(error)}); connect to the "
                    "internet once (they are cached in ~/.cache/huggingface), use a local weights "
                    "file or package, or train from scratch with model.net.encoder_weights=null"
                ) from None
            raise SegError(
                f"model.net.arch={arch} with model.net.encoder_name={encoder_name} cannot be built: "
                f"{first_line(error)}"
            ) from None
        if local:
            assert self.weights is not None
            load_encoder(self.model.encoder, self.weights, _classifier_reference(encoder_name))
            if in_channels != 3:
                smp.encoders._utils.patch_first_conv(self.model.encoder, in_channels, pretrained=True)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.size_divisor = int(self.model.encoder.output_stride)
        self.register_buffer("mean", mean_tensor)
        self.register_buffer("std", std_tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        x = (pad_to_multiple(x, self.size_divisor) - self.mean) / self.std
        return self.model(x)[:, :, :height, :width]

    @torch.jit.unused
    def encoder_parameters(self) -> list[nn.Parameter]:
        """The encoder's parameters: the part pretrained weights start (``model.encoder_lr_scale``)."""
        return list(self.model.encoder.parameters())

    @torch.jit.unused
    def checkpoint_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The config that rebuilds this network from a checkpoint (``SegmentationModule`` saves it):
        the checkpoint holds every weight, so loading it must not download pretrained ones again,
        and the normalisation chosen for them is written out."""
        mean, std = self.mean.flatten().tolist(), self.std.flatten().tolist()
        return {**config, "encoder_weights": None, "mean": mean, "std": std}
