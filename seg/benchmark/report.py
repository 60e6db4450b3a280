"""The benchmark's results as files people read: ``bench.json`` and the ``bench.md`` tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seg.artifacts import atomic_path, write_json
from seg.reports.tables import Column, markdown_table

JSON_FILE, MARKDOWN_FILE = "bench.json", "bench.md"

_ROWS = [
    Column("name", "variant"),
    Column("images_per_s", "images/s", "{:.1f}", "right"),
    Column("ratio", "ratio", "{:.2f}x", "right"),
    Column("gflops", "GFLOP/s", "{:.0f}", "right"),
    Column("peak_fraction", "% of peak", "{:.0%}", "right"),
    Column("memory_mb", "memory (MB)", "{:.0f}", "right"),
    Column("note", "notes"),
]
_PROFILE = [
    Column("op", "operator", "`{}`"),
    Column("percent", "% of step", "{:.1f}", "right"),
    Column("ms", "ms", "{:.1f}", "right"),
    Column("calls", "calls", "{}", "right"),
]

_QUALITY = [
    Column("name", "variant"),
    Column("budget_s", "budget (s)", "{}", "right"),
    Column("images_per_s", "images/s", "{:.1f}", "right"),
    Column("epochs", "epochs", "{:.1f}", "right"),
    Column("dice", "best val Dice", "{:.3f}", "right"),
    Column("note", "notes"),
]


def network(net: dict[str, Any]) -> str:
    """The measured network in a few words: the U-Net's width, or an smp architecture and encoder."""
    if "base_channels" in net:
        return f"base_channels {net['base_channels']}"
    if "arch" in net:
        return f"{net['arch']} on {net['encoder_name']}"
    return str(net["_target_"])


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: the machine and settings, the variants table, the profile and the
    time-to-quality table."""
    m, c, train = results["machine"], results["config"], results["train_config"]
    net, data = train["model"]["net"], train["data"]
    peaks = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in results["matmul_peak_gflops"].items())
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ""
    size = f"{data['image_size']}x{data['image_size']}"
    extra = f" and {', '.join(c['train_overrides'])}" if c["train_overrides"] else ""
    lines = [
        f"Machine: {m['cpu']} ({m['cores']} cores, {m['threads']} torch threads, native bf16: "
        f"{m['native_bf16']}){gpu}; torch {m['torch']}, Lightning {m['lightning']}.",
        f"conf/train.yaml with {network(net)} ({results['parameters'] / 1e6:.1f}M "
        f"parameters), {net['num_classes']} classes, {size}, batch {data['batch_size']}{extra}; medians of "
        f"{c['steps']} steps after {c['warmup']} warm-up steps. A training step costs "
        f"{results['train_step_gflop_per_image']:.1f} GFLOP per image (counted). "
        f"Matmul {c['matmul_size']}^2 peak: {peaks}.",
    ]
    if results["rows"]:
        lines += ["", markdown_table(results["rows"], _ROWS).rstrip("\n")]
    if results.get("profile"):
        lines += [
            "",
            "Where a seg-default training step spends its time (self time by operator):",
            "",
            markdown_table(results["profile"], _PROFILE).rstrip("\n"),
        ]
    if results.get("time_to_quality"):
        first = results["time_to_quality"][0]
        lines += [
            "",
            f"Time to quality: seg.train for {first['budget_s']} s each (scheduler=budget, "
            f"trainer.max_time), conf/train.yaml at its own sizes (base_channels {first['base_channels']}, "
            f"{first['image_size']}x{first['image_size']}, batch {first['batch_size']}); the best val Dice "
            "reached; images/s over training and its validations:",
            "",
            markdown_table(results["time_to_quality"], _QUALITY).rstrip("\n"),
        ]
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], output_dir: Path) -> str:
    """Write ``bench.json`` and ``bench.md`` into ``output_dir``; return the Markdown."""
    write_json(output_dir / JSON_FILE, results)
    text = markdown(results)
    with atomic_path(output_dir / MARKDOWN_FILE) as tmp:
        tmp.write_text(text)
    return text
