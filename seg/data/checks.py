"""Dataset checks for ``seg.check_data``: read every file, report what was found as tables a
person reads (the values the masks store and the classes they decode to, the class histogram),
and say whether training can start."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seg.data.layouts import Problem
from seg.data.masks import MaskFormat
from seg.data.reading import read_sample
from seg.data.stats import class_histogram
from seg.errors import DataError

if TYPE_CHECKING:
    from seg.data.datamodule import SegmentationDataModule

#: At most this many stored mask values are listed per split (the most frequent).
SHOWN_VALUES = 12


@dataclass(frozen=True)
class StoredValue:
    """A value (or colour) the masks of a split store, its pixels and what it decodes to."""

    value: str
    pixels: int
    decoded: str


@dataclass
class SplitReport:
    """What ``check_splits`` found in one split: sizes, stored mask values, class histogram and
    problems."""

    split: str
    samples: int = 0
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    stored: list[StoredValue] = field(default_factory=list)
    other_values: tuple[int, int] = (0, 0)  # values not listed in ``stored``: how many, pixels
    pixels: np.ndarray | None = None
    images: np.ndarray | None = None
    ignored: int = 0
    problems: list[Problem] = field(default_factory=list)


def count_stored(raw: np.ndarray, values: Counter[int | float], colours: Counter[int]) -> None:
    """Add the pixels of each value of a raw mask to ``values`` (single-channel) or ``colours``
    (colour masks, as ``0xRRGGBB``)."""
    if raw.ndim == 3:
        rgb = raw.reshape(-1, 3).astype(np.int64)
        found, counts = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2], return_counts=True)
        colours.update(dict(zip(found.tolist(), counts.tolist(), strict=True)))
    else:
        found, counts = np.unique(raw.astype(np.int64) if raw.dtype == bool else raw, return_counts=True)
        keys = [int(v) if float(v).is_integer() else float(v) for v in found.tolist()]
        values.update(dict(zip(keys, counts.tolist(), strict=True)))


def _decoded(
    mask_format: MaskFormat, raw: np.ndarray, class_names: Sequence[str], ignore_index: int | None
) -> str:
    """What ``mask_format`` makes of a one-pixel mask ``raw``: a class name, ``ignored`` or ``refused``."""
    try:
        cls = int(mask_format(raw, Path("<value>"))[0, 0])
    except DataError:
        return "refused"
    return "ignored" if cls == ignore_index else class_names[cls]


def stored_values(
    values: Counter[int | float],
    colours: Counter[int],
    mask_format: MaskFormat,
    class_names: Sequence[str],
    ignore_index: int | None,
) -> tuple[list[StoredValue], tuple[int, int]]:
    """The most frequent stored values and colours (in value order when all fit), each with the
    class it decodes to; and how many others there are, with their pixels."""
    found = [(str(v), n, np.array([[v]])) for v, n in sorted(values.items())]
    for packed, n in sorted(colours.items()):
        rgb = (packed >> 16, (packed >> 8) & 255, packed & 255)
        found.append((str(rgb), n, np.array([[rgb]], dtype=np.uint8)))
    if len(found) > SHOWN_VALUES:
        found.sort(key=lambda item: -item[1])
    shown, rest = found[:SHOWN_VALUES], found[SHOWN_VALUES:]
    listed = [StoredValue(v, n, _decoded(mask_format, raw, class_names, ignore_index)) for v, n, raw in shown]
    return listed, (len(rest), sum(n for _, n, _ in rest))


def check_splits(data: SegmentationDataModule) -> list[SplitReport]:
    """Read every file of every split of ``data`` and report sizes, class histograms and all
    problems, instead of stopping at the first as training does."""
    found, problems = data.samples()
    reports = {split: SplitReport(split, problems=list(problems.get(split, []))) for split in found}
    try:
        data.mask_format.prepare(found.get("train", []), data.read_raw_mask, data.cache_dir)
    except DataError as e:
        reports["train"].problems.append(Problem("mask_format", data.root, str(e)))
        return list(reports.values())
    for split, samples in found.items():
        report = reports[split]
        report.samples = len(samples)
        report.pixels = np.zeros(data.num_classes, dtype=np.int64)
        report.images = np.zeros(data.num_classes, dtype=np.int64)
        values: Counter[int | float] = Counter()
        colours: Counter[int] = Counter()
        for sample in samples:
            try:
                image, raw = read_sample(sample, data.in_channels)
                count_stored(raw, values, colours)  # before decoding: refused values are shown too
                mask = data.mask_format(raw, sample.mask or sample.image)
            except DataError as e:
                report.problems.append(Problem("unreadable or invalid", sample.mask or sample.image, str(e)))
                continue
            report.sizes[(image.shape[1], image.shape[0])] += 1
            pixels, images, ignored = class_histogram([mask], data.num_classes, data.ignore_index)
            report.pixels += pixels
            report.images += images
            report.ignored += ignored
        report.stored, report.other_values = stored_values(
            values, colours, data.mask_format, data.class_names, data.ignore_index
        )
    return list(reports.values())


def format_report(report: SplitReport, class_names: Sequence[str], ignore_index: int | None) -> str:
    """One split as text: counts, image sizes, the class pixel histogram and every problem."""
    lines = [f"== {report.split}: {report.samples} samples"]
    if report.sizes:
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in report.sizes.most_common(5))
        more = f", and {len(report.sizes) - 5} other sizes" if len(report.sizes) > 5 else ""
        lines.append(f"   image sizes: {sizes}{more}")
    if report.stored:
        stored_total = sum(v.pixels for v in report.stored) + report.other_values[1]
        width = max([len(v.value) for v in report.stored] + [len("mask value")])
        lines.append(f"   {'mask value':<{width}} {'pixels':>12} {'share':>7}  -> class")
        for v in report.stored:
            share = 100 * v.pixels / stored_total if stored_total else 0.0
            lines.append(f"   {v.value:<{width}} {v.pixels:>12} {share:>6.2f}%  -> {v.decoded}")
        others, pixels = report.other_values
        if others:
            share = 100 * pixels / stored_total if stored_total else 0.0
            lines.append(f"   {f'({others} more)':<{width}} {pixels:>12} {share:>6.2f}%")
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
