"""``seg.check_data``'s report: every split checked, printed, drawn and written as JSON."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from seg.artifacts import write_json
from seg.data.checks import blocking_problems, check_splits, format_report
from seg.errors import SegError, building
from seg.reports.pictures import save_class_histogram


def check_data(cfg: DictConfig, output_dir: Path | None = None) -> None:
    """Check every split, print how masks are decoded and the report, write
    ``class_histogram.png`` and ``report.json`` into ``output_dir`` (default: the command's run
    directory), and say that the data can be trained on.

    Raises ``SegError`` naming the first problem when the data cannot be trained on as it is.
    """
    output_dir = Path(HydraConfig.get().runtime.output_dir) if output_dir is None else output_dir
    with building("data"):  # a mistake in the data config (its mask format, ...) is one line
        datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    reports = check_splits(datamodule)
    names = datamodule.class_names
    print(f"Masks: {datamodule.mask_format.describe(names)}", flush=True)
    for report in reports:
        print(format_report(report, names, datamodule.ignore_index), flush=True)
    shares = {
        r.split: (r.pixels / max(int(r.pixels.sum()) + r.ignored, 1)).tolist()
        for r in reports
        if r.pixels is not None and r.samples
    }
    chart = save_class_histogram(output_dir / "class_histogram.png", names, shares, datamodule.palette)
    write_json(
        output_dir / "report.json",
        {
            r.split: {
                "samples": r.samples,
                "sizes": {f"{w}x{h}": n for (w, h), n in r.sizes.items()},
                "mask_values": [{"value": v.value, "pixels": v.pixels, "class": v.decoded} for v in r.stored],
                "other_mask_values": {"values": r.other_values[0], "pixels": r.other_values[1]},
                "pixels": dict(zip(names, r.pixels.tolist(), strict=True)) if r.pixels is not None else None,
                "ignored_pixels": r.ignored,
                "problems": [{"kind": p.kind, "path": p.path, "message": p.message} for p in r.problems],
            }
            for r in reports
        },
    )
    print(f"Class histogram: {chart}\nReport:          {output_dir / 'report.json'}", flush=True)
    reasons = blocking_problems(reports)
    if reasons:
        raise SegError(
            f"{len(reasons)} problem(s) found, the data cannot be trained on as it is; first: {reasons[0]}"
        )
    print("OK: the data can be trained on.")
