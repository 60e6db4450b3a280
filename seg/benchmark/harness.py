"""Timing and memory primitives of the benchmark: clocks that wait for the device, a step timer
for Lightning, the machine's matmul peak, counted FLOPs, peak memory. No config knowledge here."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from seg.hardware import cpu_has_native_bf16, cpu_name, release_memory


@dataclass
class Row:
    """One measured variant: one line of the report."""

    name: str
    images_per_s: float
    precision: str = "32-true"  # Lightning's name for the precision it ran in
    ratio: float | None = None  # to the reference images/s (or the row the note names)
    gflops: float | None = None  # achieved GFLOP/s
    peak_fraction: float | None = None  # of this run's matmul peak for the precision used
    memory_mb: float | None = None
    note: str = ""


def sync(device: torch.device) -> None:
    """Wait until ``device`` has finished its queued work, so a clock reads what it cost."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def median_rate(times: Sequence[float], batch: int) -> float:
    """Images per second of steps of ``batch`` images that took ``times`` seconds (median)."""
    return batch / statistics.median(times)


def matmul_peak(size: int, dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    """GFLOP/s of a ``size`` x ``size`` matrix product in ``dtype``: this machine's practical peak.

    On CUDA, fp32 products use TF32 exactly when cuDNN's fp32 convolutions do
    (``torch.backends.cudnn.allow_tf32``, on by default), so an fp32 training step is compared
    with the peak of the arithmetic it really runs (TF32's is several times plain fp32's).
    """
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    matmul = torch.backends.cuda.matmul
    tf32_before = matmul.allow_tf32
    matmul.allow_tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    try:
        torch.mm(a, b)
        sync(device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            times.append(time.perf_counter() - start)
    finally:
        matmul.allow_tf32 = tf32_before
    return 2 * size**3 / statistics.median(times) / 1e9


def train_step_flops(
    net: torch.nn.Module, loss_fn: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor
) -> float:
    """FLOPs of one training step (forward, loss, backward), counted by torch's flop counter."""
    with FlopCounterMode(display=False) as counter:
        loss_fn(net(images.float() / 255), masks).backward()
    net.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


class StepTimer(pl.Callback):
    """Wall time from the start of training to each training-batch end (all a step costs, data
    included); the trained network's parameter count, the trainer's precision and the memory in
    use when training started; optionally a profile of step ``profile_step``."""

    def __init__(self, device: torch.device, profile_step: int | None = None) -> None:
        self.device = device
        self.profile_step = profile_step
        self.stamps: list[float] = []
        self.parameters = 0
        self.precision = ""
        self.baseline_mb = 0.0
        self.profile: list[dict[str, Any]] = []
        self._profiler: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.parameters = sum(p.numel() for p in pl_module.net.parameters())
        self.precision = str(trainer.precision)
        release_memory()  # what was freed before training must not count as in use
        self.baseline_mb = rss_mb() if self.device.type == "cpu" else 0.0
        reset_peak_memory(self.device)
        sync(self.device)
        self.stamps.append(time.perf_counter())

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.profile_step:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(ProfilerActivity.CUDA)
            self._profiler = profile(activities=activities)
            self._profiler.__enter__()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        sync(self.device)
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            self.profile = ranked_operators(self._profiler, self.device)
            self._profiler = None
        self.stamps.append(time.perf_counter())

    def step_times(self) -> list[float]:
        """Seconds of each training step, the first included (it also starts the workers)."""
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]


def ranked_operators(prof: Any, device: torch.device, top: int = 15) -> list[dict[str, Any]]:
    """The operators a profiled step spent its time in, largest first (percent of the step)."""
    events = prof.key_averages()
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attribute) for e in events) or 1.0
    ranked = sorted(events, key=lambda e: getattr(e, attribute), reverse=True)[:top]
    return [
        {"op": e.key, "percent": 100 * getattr(e, attribute) / total, "ms": getattr(e, attribute) / 1000,
         "calls": e.count}
        for e in ranked
    ]  # fmt: skip


def data_rate(loader: DataLoader, batches: int) -> float:
    """Images per second the loader delivers (after its first batch, which starts the workers)."""
    iterator = iter(loader)
    next(iterator)
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            count += len(next(iterator)[0])
        except StopIteration:
            iterator = iter(loader)
    return count / (time.perf_counter() - start)


def reset_peak_memory(device: torch.device) -> None:
    """Start counting peak memory from now (the kernel's peak-RSS counter on CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")


def _proc_status_mb(field: str) -> float | None:
    """A memory line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB; None where there is none."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else ():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since ``reset_peak_memory``: max allocated on GPU, the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """The process's resident memory now, in MB (NaN where the system does not say)."""
    rss = _proc_status_mb("VmRSS")
    return float("nan") if rss is None else rss
