"""Speed of training and inference, measured against a plain PyTorch loop and the machine's peak.

Everything runs in one process on the same model, data and batch, after warm-up steps, and
reports medians: the machines this project runs on differ and are shared, so only ratios
measured side by side mean anything.

Variants:
- ``reference``: the original recipe as a hand-written loop (fp32, NCHW, Adam, Dice loss,
  a DataLoader over tensors in memory, no Lightning): the yardstick.
- ``lightning-same``: the same settings through ``SegmentationModule`` and a Lightning Trainer
  with progress bar and TensorBoard logging on: the framework's overhead.
- ``seg-default``: the project's default fast path on this hardware (bf16-mixed where native,
  channels-last; cuDNN autotuning on GPU).
- ``seg-compiled``: ``seg-default`` with ``torch.compile`` on the network.
- ``data``: the training dataloader alone (default workers and augmentations), on the synthetic
  data and on CamVid frames when present.
- ``inference``: eager vs TorchScript ``model.pt``, batch 1 and 16.
- ``memory``: peak memory of a training step (RSS on CPU, max allocated on GPU).
- ``profile``: where a ``seg-default`` training step spends its time, by operator (torch.profiler).
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import cycle, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from seg.artifacts import atomic_path, write_json
from seg.data.synthetic import TEXTURES, render_scene
from seg.hardware import best_precision, cpu_has_native_bf16, release_memory
from seg.losses import DiceLoss
from seg.models.unet import UNet
from seg.module import SegmentationModule

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One measured variant."""

    name: str
    images_per_s: float
    precision: str = "fp32"
    ratio: float | None = None  # to reference images/s
    gflops: float | None = None  # achieved GFLOP/s
    peak_fraction: float | None = None  # of this run's matmul peak for the precision used
    memory_mb: float | None = None
    note: str = ""


@dataclass
class BenchConfig:
    """What to measure (see ``conf/bench.yaml``)."""

    base_channels: int = 64
    num_classes: int = 13
    image_size: int = 128
    batch_size: int = 8
    steps: int = 10
    warmup: int = 3
    variants: Sequence[str] = (
        "reference", "lightning-same", "seg-default", "seg-compiled",
        "data", "inference", "memory", "profile",
    )  # fmt: skip
    matmul_size: int = 4096
    memory_image_size: int = 256
    memory_batch_size: int = 16
    memory_steps: int = 2
    data_batches: int = 30
    num_workers: int = 2
    camvid_root: str | None = None
    inference_batches: Sequence[int] = (1, 16)
    device: str = "auto"
    seed: int = 0
    data_dir: str = "data"
    output_dir: str = "."


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_rate(times: Sequence[float], batch: int) -> float:
    return batch / statistics.median(times)


def matmul_peak(size: int, dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    """GFLOP/s of a ``size`` x ``size`` matrix product in ``dtype``: this machine's practical peak."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def train_step_flops(net: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> float:
    """FLOPs of one training step (forward, loss, backward), counted by torch's flop counter."""
    with FlopCounterMode(display=False) as counter:
        DiceLoss()(net(images.float() / 255), masks).backward()
    net.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def synthetic_batch(count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` generated scenes as uint8 images ``(N, 3, H, W)`` and int64 masks ``(N, H, W)``."""
    textures = list(TEXTURES.values())
    pairs = [render_scene(size, np.random.default_rng([seed, i]), textures, 5, 10.0) for i in range(count)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
    return images, masks


def reference_loop(
    cfg: BenchConfig, images: torch.Tensor, masks: torch.Tensor, device: torch.device
) -> list[float]:
    """The original recipe's plain training loop; returns the measured step times."""
    torch.manual_seed(cfg.seed)
    net = UNet(3, cfg.num_classes, cfg.base_channels).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = DiceLoss()
    batches = cycle(DataLoader(TensorDataset(images, masks), batch_size=cfg.batch_size, shuffle=True))
    times = []
    for _ in range(cfg.warmup + cfg.steps):
        start = time.perf_counter()
        x, y = next(batches)
        x, y = x.to(device).float() / 255, y.to(device)
        loss = loss_fn(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times[cfg.warmup :]


class _StepTimer(pl.Callback):
    """Wall time between consecutive training-batch ends: all a step costs, data included."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        _sync(self.device)
        self.stamps.append(time.perf_counter())


def lightning_loop(
    cfg: BenchConfig,
    images: torch.Tensor,
    masks: torch.Tensor,
    device: torch.device,
    precision: str,
    channels_last: bool,
    compile_net: bool = False,
) -> tuple[list[float], float]:
    """Train through ``SegmentationModule`` and a Trainer; returns step times and the first step's time."""
    torch.manual_seed(cfg.seed)
    module = SegmentationModule(
        net={"_target_": "seg.models.unet.UNet", "in_channels": 3, "num_classes": cfg.num_classes,
             "base_channels": cfg.base_channels},
        loss={"_target_": "seg.losses.DiceLoss"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        channels_last=channels_last,
    )  # fmt: skip
    if compile_net:
        module.net = torch.compile(module.net)
    timer = _StepTimer(device)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        max_epochs=1,
        limit_train_batches=cfg.warmup + cfg.steps + 1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=pl.loggers.TensorBoardLogger(cfg.output_dir, name="tensorboard", version=precision),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=True,
        log_every_n_steps=10,
        benchmark=device.type == "cuda",
        callbacks=[timer],
    )
    repeats = -(-(cfg.warmup + cfg.steps + 1) * cfg.batch_size // len(images))
    loader = DataLoader(
        TensorDataset(images.repeat(repeats, 1, 1, 1), masks.repeat(repeats, 1, 1)),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    stamps = [start, *timer.stamps]
    times = [b - a for a, b in pairwise(stamps)]
    return times[cfg.warmup + 1 :], times[0]


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


def inference_rates(
    net: torch.nn.Module, size: int, batch: int, device: torch.device, folder: Path, repeats: int = 7
) -> dict[str, float]:
    """Images/s of the eager network and of the ``model.pt`` seg writes for it, fp32, eval mode."""
    from seg.deploy import deployable, export_torchscript

    eager = deployable(net).to(device)
    scripted = torch.jit.load(str(export_torchscript(net, folder / "bench-model.pt")), map_location=device)
    x = torch.rand(batch, 3, size, size, device=device)
    rates = {}
    with torch.no_grad():
        for name, model in (("eager", eager), ("torchscript", scripted)):
            for _ in range(3):  # TorchScript optimises the graph during its first runs
                model(x)
            times = []
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                model(x)
                _sync(device)
                times.append(time.perf_counter() - start)
            rates[name] = _median_rate(times, batch)
    return rates


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")  # resets the kernel's peak-RSS counter


def _proc_status_mb(field: str) -> float | None:
    """A memory line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB; None where there is none."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else ():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    rss = _proc_status_mb("VmRSS")
    return float("nan") if rss is None else rss


def _train_step(
    net: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, precision: str
) -> None:
    """One plain training step under ``precision`` (``32-true``, ``bf16-mixed`` or ``16-mixed``)."""
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    with torch.autocast(x.device.type, dtype=dtype, enabled=precision != "32-true"):
        out = net(x)
    loss = DiceLoss()(out, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def memory_rows(cfg: BenchConfig, device: torch.device) -> list[Row]:
    """Peak memory of training steps at ``memory_batch_size`` x ``memory_image_size``, fp32 and fast path."""
    images, masks = synthetic_batch(cfg.memory_batch_size, cfg.memory_image_size, cfg.seed)
    fast = best_precision("gpu" if device.type == "cuda" else "cpu")
    rows = []
    for precision in dict.fromkeys(["32-true", fast]):
        torch.manual_seed(cfg.seed)
        net = UNet(3, cfg.num_classes, cfg.base_channels).to(device)
        channels_last = precision != "32-true"
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        release_memory()  # what the previous measurement freed must not count as baseline
        baseline = _rss_mb() if device.type == "cpu" else 0.0
        _reset_peak_memory(device)
        x = images.to(device).float() / 255
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = masks.to(device)
        for _ in range(cfg.memory_steps):
            _train_step(net, optimizer, x, y, precision)
        _sync(device)
        peak = _peak_memory_mb(device)
        note = f"batch {cfg.memory_batch_size}, {cfg.memory_image_size}x{cfg.memory_image_size}"
        if device.type == "cpu":
            note += f"; process RSS peak {peak:.0f} MB, {peak - baseline:.0f} MB above the idle process"
        rows.append(Row(f"memory {precision}", float("nan"), precision, memory_mb=peak - baseline, note=note))
        del net, optimizer, x, y
        release_memory()
    return rows


def profile_step(cfg: BenchConfig, device: torch.device, top: int = 15) -> list[dict[str, Any]]:
    """The operators a fast-path training step spends its time in, largest first (percent of the step)."""
    from torch.profiler import ProfilerActivity, profile

    images, masks = synthetic_batch(cfg.batch_size, cfg.image_size, cfg.seed)
    fast = best_precision("gpu" if device.type == "cuda" else "cpu")
    torch.manual_seed(cfg.seed)
    net = UNet(3, cfg.num_classes, cfg.base_channels).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = (images.to(device).float() / 255).contiguous(memory_format=torch.channels_last)
    y = masks.to(device)

    def step() -> None:
        _train_step(net, optimizer, x, y, fast)
        _sync(device)

    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    events = prof.key_averages()
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attribute) for e in events) or 1.0
    ranked = sorted(events, key=lambda e: getattr(e, attribute), reverse=True)[:top]
    return [
        {"op": e.key, "percent": 100 * getattr(e, attribute) / total, "ms": getattr(e, attribute) / 1000,
         "calls": e.count}
        for e in ranked
    ]  # fmt: skip


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every variant in ``cfg.variants``; write ``bench.json`` and ``bench.md``; return them."""
    device = _device(cfg.device)
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    fast = best_precision("gpu" if device.type == "cuda" else "cpu")
    fast_dtype = (
        torch.float32 if fast == "32-true" else (torch.bfloat16 if fast == "bf16-mixed" else torch.float16)
    )
    progress(f"Matmul peak ({cfg.matmul_size}^2)...")
    peaks = {"fp32": matmul_peak(cfg.matmul_size, torch.float32, device)}
    if fast != "32-true":
        peaks[fast.split("-")[0]] = matmul_peak(cfg.matmul_size, fast_dtype, device)
    images, masks = synthetic_batch(cfg.batch_size * 4, cfg.image_size, cfg.seed)
    flops = train_step_flops(
        UNet(3, cfg.num_classes, cfg.base_channels), images[: cfg.batch_size], masks[: cfg.batch_size]
    )
    per_image_gflop = flops / cfg.batch_size / 1e9

    rows: list[Row] = []

    def training_row(name: str, times: Sequence[float], precision: str, note: str = "") -> Row:
        rate = _median_rate(times, cfg.batch_size)
        gflops = rate * per_image_gflop
        peak = peaks.get(precision, peaks["fp32"])
        return Row(name, rate, precision, gflops=gflops, peak_fraction=gflops / peak, note=note)

    variants = set(cfg.variants)
    if "reference" in variants:
        progress("reference: plain PyTorch loop, fp32, NCHW...")
        rows.append(training_row("reference", reference_loop(cfg, images, masks, device), "fp32",
                                 "plain loop, fp32, NCHW"))  # fmt: skip
    if "lightning-same" in variants:
        progress("lightning-same: SegmentationModule + Trainer, fp32, NCHW...")
        times, _ = lightning_loop(cfg, images, masks, device, "32-true", channels_last=False)
        rows.append(
            training_row("lightning-same", times, "fp32", "Lightning, progress bar + TensorBoard, fp32, NCHW")
        )
    short = fast.split("-")[0] if fast != "32-true" else "fp32"
    if "seg-default" in variants:
        progress(f"seg-default: {fast}, channels_last...")
        times, _ = lightning_loop(cfg, images, masks, device, fast, channels_last=True)
        rows.append(training_row("seg-default", times, short, f"Lightning, {fast}, channels_last"))
    if "seg-compiled" in variants:
        progress("seg-compiled: + torch.compile (the first steps compile)...")
        try:
            times, first = lightning_loop(
                cfg, images, masks, device, fast, channels_last=True, compile_net=True
            )
            rows.append(
                training_row("seg-compiled", times, short, f"+ torch.compile; first step {first:.0f} s")
            )
        except Exception as e:  # compilers fail in many ways: report it, do not stop
            rows.append(
                Row("seg-compiled", float("nan"), short, note=f"failed: {str(e).splitlines()[0][:120]}")
            )
    reference = next((r for r in rows if r.name == "reference"), None)
    for row in rows:
        if reference is not None:
            row.ratio = row.images_per_s / reference.images_per_s

    if "data" in variants:
        rows += data_rows(cfg, progress)
        consumed = next((r.images_per_s for r in rows if r.name == "seg-default"), None)
        for row in rows:
            if row.name.startswith("data") and consumed:
                row.ratio = row.images_per_s / consumed
                row.note += f"; {row.ratio:.1f}x what seg-default consumes"
    if "inference" in variants:
        net = UNet(3, cfg.num_classes, cfg.base_channels)
        for batch in cfg.inference_batches:
            progress(f"inference: eager vs TorchScript, batch {batch}...")
            rates = inference_rates(net, cfg.image_size, batch, device, output)
            for name, rate in rates.items():
                ratio = rate / rates["eager"]
                rows.append(
                    Row(f"inference {name} b{batch}", rate, "fp32", ratio=ratio, note="ratio to eager")
                )
    if "memory" in variants:
        progress("memory: peak of a training step...")
        rows += memory_rows(cfg, device)
    profiled = []
    if "profile" in variants:
        progress("profile: one seg-default training step, by operator...")
        profiled = profile_step(cfg, device)

    results = {
        "machine": machine(),
        "config": asdict(cfg),
        "train_step_gflop_per_image": per_image_gflop,
        "matmul_peak_gflops": peaks,
        "rows": [asdict(r) for r in rows],
        "profile": profiled,
    }
    write_json(output / "bench.json", results)
    table = markdown(results)
    with atomic_path(output / "bench.md") as tmp:
        tmp.write_text(table)
    progress(table)
    return results


def data_rows(cfg: BenchConfig, progress: Callable[[str], None]) -> list[Row]:
    """The training dataloader alone, as ``seg.train`` builds it, on synthetic and CamVid data."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[1] / "conf"
    inside_app = GlobalHydra.instance().is_initialized()  # seg.bench itself runs under Hydra
    cases = [("data synthetic", ["data=synthetic", f"data.image_size={cfg.image_size}"])]
    if cfg.camvid_root and Path(cfg.camvid_root, "train").is_dir():
        cases.append(("data camvid", ["data=camvid", f"data.root={cfg.camvid_root}"]))
    rows = []
    for name, overrides in cases:
        progress(f"{name}: training dataloader, {cfg.num_workers} workers...")
        overrides += [f"data.num_workers={cfg.num_workers}", f"data.batch_size={cfg.batch_size}",
                      "paths.output_dir=unused", f"paths.data_dir={cfg.data_dir}"]  # fmt: skip
        if inside_app:
            data_cfg = compose(config_name="train", overrides=overrides).data
        else:
            with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
                data_cfg = compose(config_name="train", overrides=overrides).data
        datamodule = instantiate(data_cfg)
        datamodule.prepare_data()
        datamodule.setup("fit")
        rate = data_rate(datamodule.train_dataloader(), cfg.data_batches)
        size = datamodule.image_size
        rows.append(
            Row(
                name, rate, "-", note=f"{size}x{size} crops, {cfg.num_workers} workers, default augmentations"
            )
        )
    return rows


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else pattern.format(value)


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown table with the machine and settings."""
    m, c = results["machine"], results["config"]
    peaks = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in results["matmul_peak_gflops"].items())
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ""
    size = f"{c['image_size']}x{c['image_size']}"
    lines = [
        f"Machine: {m['cpu']} ({m['cores']} cores, {m['threads']} torch threads, native bf16: "
        f"{m['native_bf16']}){gpu}; torch {m['torch']}, Lightning {m['lightning']}.",
        f"U-Net base {c['base_channels']}, {c['num_classes']} classes, {size}, batch {c['batch_size']}; "
        f"medians of {c['steps']} steps after {c['warmup']} warm-up steps. A training step costs "
        f"{results['train_step_gflop_per_image']:.1f} GFLOP per image (counted). "
        f"Matmul {c['matmul_size']}^2 peak: {peaks}.",
        "",
        "| variant | images/s | ratio | GFLOP/s | % of peak | memory (MB) | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results["rows"]:
        fraction = None if r["peak_fraction"] is None else 100 * r["peak_fraction"]
        lines.append(
            f"| {r['name']} | {_fmt(r['images_per_s'], '{:.1f}')} | {_fmt(r['ratio'], '{:.2f}x')} | "
            f"{_fmt(r['gflops'], '{:.0f}')} | {_fmt(fraction, '{:.0f}%')} | "
            f"{_fmt(r['memory_mb'], '{:.0f}')} | {r['note']} |"
        )
    if results.get("profile"):
        lines += ["", "Where a seg-default training step spends its time (self time by operator):", "",
                  "| operator | % of step | ms | calls |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
        for p in results["profile"]:
            lines.append(f"| `{p['op']}` | {p['percent']:.1f} | {p['ms']:.1f} | {p['calls']} |")
    return "\n".join(lines) + "\n"
