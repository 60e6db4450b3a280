"""Where one bf16 training step of the U-Net spends its oneDNN time, by primitive and pass.

    python scripts/onednn_step.py [base_channels] [image_size] [batch]   (defaults: 64 128 8)

Runs a training step of the bare network at the bench's sizes (bf16 autocast, channels-last,
fused Adam; cross entropy, as the loss does no convolutions) a few times, then one more with
oneDNN's verbose log on, and sums the kernel time oneDNN reports for that step per primitive and
pass (forward, backward data, backward weights, reorders), with the GFLOP each pass does and its
rate. Prints one Markdown table.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F

from seg.hardware import cpu_name
from seg.models.unet import UNet
from seg.reports.tables import Column, markdown_table

SHAPE = re.compile(r"mb(\d+)_ic(\d+)oc(\d+)_ih(\d+)oh(\d+)kh(\d+)\w*?_iw(\d+)ow(\d+)kw(\d+)")


def flops(kind: str, shape: str) -> float:
    """Multiply-adds x 2 of one convolution or deconvolution pass (each pass does the same work)."""
    mb, ic, oc, ih, oh, kh, iw, ow, kw = map(int, SHAPE.search(shape).groups())
    pixels = ih * iw if kind == "deconvolution" else oh * ow  # a deconvolution's taps run per input pixel
    return 2.0 * mb * pixels * ic * oc * kh * kw


def verbose_lines(step: Any) -> list[str]:
    """oneDNN's verbose lines for one call of ``step``, read from the process's stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                step()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        return [line for line in log if ",exec," in line]


def main(base: int = 64, size: int = 128, batch: int = 8) -> None:
    torch.manual_seed(0)
    net = UNet(3, 13, base).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), 1e-4, fused=True)
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    masks = torch.randint(0, 13, (batch, size, size))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(images)
        optimizer.zero_grad()
        F.cross_entropy(logits.float(), masks).backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    step()
    step_ms = (time.perf_counter() - start) * 1000

    totals: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: dict(calls=0, ms=0.0, gflop=0.0))
    for line in verbose_lines(step):
        fields = line.strip().split(",")
        kind, pass_, shape, ms = fields[5], fields[7], fields[-2], float(fields[-1])
        row = totals[(kind, "reorder" if kind == "reorder" else pass_)]
        row["calls"] += 1
        row["ms"] += ms
        if kind in ("convolution", "deconvolution"):
            row["gflop"] += flops(kind, shape) / 1e9
    rows = [{"primitive": kind, "pass": pass_, **row} for (kind, pass_), row in totals.items()]
    rows.sort(key=lambda row: -row["ms"])
    total_ms = sum(row["ms"] for row in rows)
    for row in rows:
        row["share"] = 100 * row["ms"] / total_ms
        row["rate"] = row["gflop"] / row["ms"] * 1000 if row["gflop"] else None
    print(
        f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}: width {base}, "
        f"{size}x{size}, batch {batch}; a step without the log took {step_ms:.0f} ms, "
        f"oneDNN's kernels {total_ms:.0f} ms of the logged one\n"
    )
    columns = [
        Column("primitive"),
        Column("pass"),
        Column("calls", fmt="{:.0f}", align="right"),
        Column("ms", fmt="{:.1f}", align="right"),
        Column("share", "% of oneDNN time", "{:.0f}", "right"),
        Column("gflop", "GFLOP", "{:.1f}", "right"),
        Column("rate", "GFLOP/s", "{:.0f}", "right"),
    ]
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
