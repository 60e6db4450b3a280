"""Dataset checks for ``seg.check_data``: read every file, report what was found as tables a
person reads, and say whether training can start."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from seg.data.layouts import Problem
from seg.data.reading import read_sample
from seg.data.stats import class_histogram
from seg.errors import DataError

if TYPE_CHECKING:
    from seg.data.datamodule import SegmentationDataModule


@dataclass
class SplitReport:
    """What ``check_splits`` found in one split: sizes, class histogram and problems."""

    split: str
    samples: int = 0
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    pixels: np.ndarray | None = None
    images: np.ndarray | None = None
    ignored: int = 0
    problems: list[Problem] = field(default_factory=list)


def check_splits(data: SegmentationDataModule) -> list[SplitReport]:
    """Read every file of every split of ``data`` and report sizes, class histograms and all
    problems, instead of stopping at the first as training does."""
    found, problems = data.samples()
    reports = {split: SplitReport(split, problems=list(problems.get(split, []))) for split in found}
    try:
        data.decoder.prepare(found.get("train", []), data.read_raw_mask, data.cache_dir)
    except DataError as e:
        reports["train"].problems.append(Problem("decoder", data.root, str(e)))
        return list(reports.values())
    for split, samples in found.items():
        report = reports[split]
        report.samples = len(samples)
        report.pixels = np.zeros(data.num_classes, dtype=np.int64)
        report.images = np.zeros(data.num_classes, dtype=np.int64)
        for sample in samples:
            try:
                image, raw = read_sample(sample, data.in_channels)
                mask = data.decoder(raw, sample.mask or sample.image)
            except DataError as e:
                report.problems.append(Problem("unreadable or invalid", sample.mask or sample.image, str(e)))
                continue
            report.sizes[(image.shape[1], image.shape[0])] += 1
            pixels, images, ignored = class_histogram([mask], data.num_classes, data.ignore_index)
            report.pixels += pixels
            report.images += images
            report.ignored += ignored
    return list(reports.values())


def format_report(report: SplitReport, class_names: Sequence[str], ignore_index: int | None) -> str:
    """One split as text: counts, image sizes, the class pixel histogram and every problem."""
    lines = [f"== {report.split}: {report.samples} samples"]
    if report.sizes:
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in report.sizes.most_common(5))
        more = f", and {len(report.sizes) - 5} other sizes" if len(report.sizes) > 5 else ""
        lines.append(f"   image sizes: {sizes}{more}")
    if report.pixels is not None and report.images is not None:
        total = int(report.pixels.sum()) + report.ignored
        width = max([len(n) for n in class_names] + [len(f"ignored ({ignore_index})")])
        lines.append(f"   {'class':<{width}} {'pixels':>12} {'share':>7} {'images':>7}")
        for name, pixels, images in zip(class_names, report.pixels, report.images, strict=True):
            share = 100 * pixels / total if total else 0.0
            lines.append(f"   {name:<{width}} {int(pixels):>12} {share:>6.2f}% {int(images):>7}")
        if ignore_index is not None:
            share = 100 * report.ignored / total if total else 0.0
            label = f"ignored ({ignore_index})"
            lines.append(f"   {label:<{width}} {report.ignored:>12} {share:>6.2f}%")
    for problem in report.problems:
        lines.append(f"   PROBLEM ({problem.kind}): {problem.message}")
    return "\n".join(lines)


def blocking_problems(reports: Sequence[SplitReport]) -> list[str]:
    """Reasons the data cannot be trained on as it is (empty when it can)."""
    reasons = [f"{r.split}: {p.message}" for r in reports for p in r.problems]
    by_split = {r.split: r for r in reports}
    for split in ("train", "val"):
        if split not in by_split or by_split[split].samples == 0:
            reasons.append(f"{split}: no usable samples")
    return reasons
