"""torchvision importable beside a torch build it was not compiled for.

PyPI's torchvision wheels for Linux are linked against the CUDA build of torch. Beside a CPU
build of the same release (a local ``+cpu`` wheel, as ``make install`` finds on the project's
machines), their compiled operators (``nms``, ``roi_align``, ...) cannot load. torchvision copes
with that, except that its import then fails on registering a fake kernel for an operator that
does not exist ("operator torchvision::nms does not exist"), and torchmetrics imports
torchvision whenever it is installed: every command would stop there.

The encoders of smp and timm use torchvision's Python models only, never these operators. So
when the compiled operators do not load, this declares the two schemas torchvision's import
registers kernels for, and the import succeeds; calling one of those operators still fails.
``seg/__init__.py`` calls ``check_before_import``, which runs that check when something first
imports torchvision (not before: ``import seg`` stays free of torch). With matching builds, or
without torchvision, it does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

#: The operators torchvision's import registers fake kernels for without checking they exist.
SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

_declared: list[Any] = []  # the torch.library.Library holding the schemas lives as long as this


def declare_missing_operators() -> bool:
    """Declare ``SCHEMAS`` when torchvision is installed but its compiled operators do not load
    with this torch; returns whether it did."""
    if _declared or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    extensions = sorted(Path(spec.origin).parent.glob("_C.*"))
    if not extensions:
        return False
    import torch

    try:
        torch.ops.load_library(str(extensions[0]))  # what torchvision's import does first
        return False
    except OSError as error:
        log.debug("torchvision's compiled operators do not load with torch %s: %s", torch.__version__, error)
    library = torch.library.Library("torchvision", "DEF")
    for schema in SCHEMAS:
        library.define(schema)
    _declared.append(library)
    return True


class _CheckBeforeImport(importlib.abc.MetaPathFinder):
    """Runs ``declare_missing_operators`` once, just before the first ``import torchvision``;
    finds nothing itself, so the import then goes on as usual."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> None:
        if name == "torchvision":
            sys.meta_path.remove(self)
            declare_missing_operators()
        return None


def check_before_import() -> None:
    """Arrange for ``declare_missing_operators`` to run before torchvision is first imported."""
    if "torchvision" in sys.modules or any(isinstance(f, _CheckBeforeImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _CheckBeforeImport())
