"""Runs the variants ``bench.variants`` names and gathers their numbers into one results dict."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seg.benchmark import quality
from seg.benchmark import variants as v
from seg.benchmark.harness import Row, machine, matmul_peak, median_rate, train_step_flops
from seg.errors import first_line

#: The torch dtype of each Lightning precision, for the matmul peak it is compared with.
DTYPES = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class _Bench:
    """One benchmark run: its config, device, peaks, and the rows measured so far."""

    def __init__(self, bench: DictConfig, progress: Callable[[str], None]) -> None:
        self.bench, self.progress = bench, progress
        self.device = v.device_of(bench)
        self.wanted = set(bench.variants)
        self.rows: list[Row] = []
        self.peaks: dict[str, float] = {}
        self.per_image_gflop = math.nan
        self.parameters: int | None = None
        self.profile: list[dict[str, Any]] = []
        self.quality: list[dict[str, Any]] = []
        self.runs: dict[str, v.TrainingRun] = {}

    def training_config(self, name: str, profile: bool = False) -> DictConfig:
        b = self.bench
        shape = v.one_timed_epoch(v.timed_batches(b.warmup, b.steps, profile))
        return v.train_config(b, name, *v.TRAINING_VARIANTS[name], *shape)

    def peak(self, precision: str) -> float:
        if precision not in self.peaks:
            self.progress(f"Matmul peak ({self.bench.matmul_size}^2, {precision})...")
            dtype = DTYPES.get(precision, torch.float32)
            self.peaks[precision] = matmul_peak(self.bench.matmul_size, dtype, self.device)
        return self.peaks[precision]

    def training_row(self, name: str, cfg: DictConfig, times: list[float], precision: str, note: str) -> Row:
        rate = median_rate(times, int(cfg.data.batch_size))
        gflops = rate * self.per_image_gflop
        return Row(
            name, rate, precision, gflops=gflops, peak_fraction=gflops / self.peak(precision), note=note
        )

    def count_flops(self, cfg: DictConfig) -> None:
        """GFLOP per image of one training step of the configured network and loss."""
        images, masks = v.reference_batches(cfg, 1)
        flops = train_step_flops(instantiate(cfg.model.net), instantiate(cfg.loss), images, masks)
        self.per_image_gflop = flops / len(images) / 1e9

    def reference(self) -> None:
        b = self.bench
        cfg = v.train_config(b, "reference")
        self.progress("reference: the configured network, loss and optimizer in a plain loop, fp32, NCHW...")
        images, masks = v.reference_batches(cfg, 4)
        times = v.reference_loop(cfg, images, masks, self.device, b.warmup, b.steps)
        self.rows.append(self.training_row("reference", cfg, times, "32-true", "plain loop, fp32, NCHW"))

    def lightning(self, name: str) -> None:
        profile = name == "seg-default" and "profile" in self.wanted
        cfg = self.training_config(name, profile)
        precision, layout = cfg.trainer.precision, "channels_last" if cfg.model.channels_last else "NCHW"
        compiled = bool(cfg.model.get("compile"))
        self.progress(f"{name}: seg.train's module, data and trainer, {precision}, {layout}...")
        try:
            run = v.lightning_run(cfg, self.device, self.bench.warmup, self.bench.steps, profile)
        except Exception as error:  # compilers fail in many ways: report it, do not stop
            if not compiled:
                raise
            note = f"failed: {first_line(error)[:120]}"
            self.rows.append(Row(name, math.nan, precision, note=note))
            return
        self.runs[name] = run
        note = f"Lightning, {precision}, {layout}"
        if compiled:
            note = f"model.compile=true; {self.amortised(run, int(cfg.data.batch_size))}"
        self.rows.append(self.training_row(name, cfg, run.times, run.precision, note))
        self.parameters = run.parameters
        self.profile = self.profile or run.profile

    def amortised(self, run: v.TrainingRun, batch: int) -> str:
        """The compiled run's first step, and its rate over one epoch with that step included,
        beside seg-default's when it was measured."""

        def epoch_rate(r: v.TrainingRun) -> float:
            return r.epoch_steps * batch / (r.first_step + (r.epoch_steps - 1) * statistics.median(r.times))

        default = self.runs.get("seg-default")
        first = f"first step {run.first_step:.1f} s"
        epoch = f"over an epoch of {run.epoch_steps} steps {epoch_rate(run):.1f} img/s"
        if default is not None:
            first += f" (seg-default {default.first_step:.1f} s)"
            epoch += f" (seg-default {epoch_rate(default):.1f})"
        return f"{first}; {epoch}"

    def data(self) -> None:
        b = self.bench
        cases = {"data": v.train_config(b, "data")}
        camvid = ["data=camvid"] + ([f"data.root={b.camvid_root}"] if b.camvid_root else [])
        camvid_cfg = v.train_config(b, "data camvid", *camvid, own=True)
        if cases["data"].data.root != camvid_cfg.data.root and Path(camvid_cfg.data.root, "train").is_dir():
            cases["data camvid"] = camvid_cfg
        consumed = next((r.images_per_s for r in self.rows if r.name == "seg-default"), None)
        for name, cfg in cases.items():
            workers, size = cfg.data.num_workers, cfg.data.image_size
            self.progress(f"{name}: the training dataloader alone, {workers} workers...")
            rate = v.data_loader_rate(cfg, b.data_batches)
            row = Row(
                name, rate, "-", note=f"{size}x{size} crops, {workers} workers, configured augmentations"
            )
            if consumed:
                row.ratio = rate / consumed
                row.note += f"; {row.ratio:.1f}x what seg-default consumes"
            self.rows.append(row)

    def inference(self) -> None:
        cfg = v.train_config(self.bench, "inference")
        folder = Path(self.bench.paths.output_dir)
        for batch in self.bench.inference_batches:
            self.progress(f"inference: eager vs TorchScript, batch {batch}...")
            rates = v.inference_rates(cfg, batch, self.device, folder)
            for name, rate in rates.items():
                ratio = rate / rates["eager"]
                self.rows.append(
                    Row(f"inference {name} b{batch}", rate, "32-true", ratio=ratio, note="ratio to eager")
                )

    def memory(self) -> None:
        b = self.bench
        shape = v.one_timed_epoch(v.timed_batches(0, b.memory_steps))
        size, batch = b.memory_image_size, b.memory_batch_size
        for name in ("lightning-same", "seg-default"):
            self.progress(f"memory {name}: peak of training steps at batch {batch}, {size}x{size}...")
            cfg = v.train_config(b, name, *v.TRAINING_VARIANTS[name], *shape, size=size, batch=batch)
            run = v.lightning_run(cfg, self.device, 0, b.memory_steps)
            note = f"{run.precision}, batch {batch}, {size}x{size}"
            if self.device.type == "cpu":
                note += "; process RSS above its size when training started"
            row = Row(f"memory {name}", math.nan, run.precision, memory_mb=run.memory_mb, note=note)
            self.rows.append(row)

    def time_to_quality(self) -> None:
        for name in quality.PATHS:
            self.progress(f"time-to-quality {name}: seg.train for {self.bench.quality_budget_s} s...")
            self.quality.append(quality.time_to_quality(self.bench, name))

    def run(self) -> dict[str, Any]:
        if "time-to-quality" in self.wanted:  # a bad budget fails now, not after the other variants
            quality.budget_overrides(self.bench.quality_budget_s)
        default = v.train_config(self.bench, "seg-default")
        self.count_flops(default)
        self.peak("32-true")
        if "reference" in self.wanted:
            self.reference()
        for name in v.TRAINING_VARIANTS:
            if name in self.wanted or (name == "seg-default" and "profile" in self.wanted):
                self.lightning(name)
        reference = next((r for r in self.rows if r.name == "reference"), None)
        for row in self.rows:
            if reference is not None:
                row.ratio = row.images_per_s / reference.images_per_s
        for name in ("data", "inference", "memory", "time-to-quality"):
            if name in self.wanted:
                getattr(self, name.replace("-", "_"))()
        if "seg-default" not in self.wanted:  # measured only for its profile
            self.rows = [r for r in self.rows if r.name != "seg-default"]
        return {
            "machine": machine(),
            "config": OmegaConf.to_container(self.bench, resolve=True),
            "train_config": OmegaConf.to_container(default, resolve=True),
            "parameters": self.parameters
            or sum(p.numel() for p in instantiate(default.model.net).parameters()),
            "train_step_gflop_per_image": self.per_image_gflop,
            "matmul_peak_gflops": self.peaks,
            "rows": [vars(r) for r in self.rows],
            "profile": self.profile,
            "time_to_quality": self.quality,
        }


def measure(bench: DictConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every variant in ``bench.variants`` (see ``conf/bench.yaml``); return the results."""
    return _Bench(bench, progress).run()
