"""Dataset reports for ``seg.check_data``: tables a person reads, and whether training can start."""

from __future__ import annotations

from collections.abc import Sequence

from seg.data.datamodule import SplitReport


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
