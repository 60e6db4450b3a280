"""Speed of what ``seg.train`` builds, against one plain PyTorch loop and the machine's peak.

Every variant composes the real training config (``conf/train.yaml`` with the bench's sizes and
``train_overrides``) and times the data module, module and trainer ``seg.train`` builds from it,
in one process, after warm-up steps, as medians: the machines this project runs on differ and
are shared, so only ratios measured side by side mean anything.

Variants (``conf/bench.yaml``: ``variants``):

- ``reference``: the configured network, loss and optimizer in a hand-written loop (fp32, NCHW,
  a DataLoader over tensors in memory, no Lightning): the yardstick.
- ``lightning-same``: ``seg.train``'s objects with the reference's settings (fp32, NCHW, no cuDNN
  autotuning): the framework's overhead.
- ``seg-default``: ``seg.train``'s objects as configured (bf16-mixed where native, channels-last).
- ``seg-compiled``: ``seg-default`` with ``model.compile=true`` (``torch.compile`` on the network),
  its first step (the compilation) amortised over an epoch.
- ``data``: the training dataloader alone, on the configured data and on CamVid when present.
- ``inference``: the eager network against the TorchScript model a run writes.
- ``memory``: peak memory of ``lightning-same`` and ``seg-default`` training steps.
- ``profile``: where a ``seg-default`` training step spends its time, by operator.
- ``time-to-quality`` (``quality.py``; not in the default list): ``seg.train`` for a fixed
  wall-clock budget, ``seg-default`` then the plain fp32 path, and the best val Dice each reached.

``measure`` (``measure.py``) gathers the numbers; ``report.py`` writes them; ``run_bench`` does both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from seg.benchmark.measure import measure
from seg.benchmark.report import write_report


def run_bench(bench: DictConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure ``bench`` (a composed ``conf/bench.yaml``), write ``bench.json`` and ``bench.md``
    into ``bench.paths.output_dir``, show the tables; return the results."""
    results = measure(bench, progress)
    output = Path(bench.paths.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    progress(write_report(results, output))
    return results


__all__ = ["measure", "run_bench", "write_report"]
