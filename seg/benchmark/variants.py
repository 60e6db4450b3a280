"""The benchmark's experiments: what ``seg.train`` builds from the composed training config, timed,
beside the one hand-written reference loop.

Every variant starts from ``conf/train.yaml`` composed with the bench's ``train_overrides`` and
sizes (``train_config``), so a config change shows in every number.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from seg.benchmark.harness import StepTimer, data_rate, median_rate, peak_memory_mb, sync
from seg.config import CONF_DIR
from seg.data.datamodule import SegmentationDataModule
from seg.errors import ConfigError, building
from seg.hardware import resolve_device
from seg.hydra_setup import set_up
from seg.training.checks import validate_train_config
from seg.training.pipeline import build_module, build_trainer

#: The ``trainer`` config for each device the bench runs on.
TRAINERS = {"cpu": "cpu", "cuda": "gpu", "mps": "mps"}

#: What each Lightning variant changes in the composed config. ``lightning-same`` takes the
#: reference loop's settings (fp32, NCHW, no cuDNN autotuning): the difference is the framework.
TRAINING_VARIANTS: dict[str, list[str]] = {
    "lightning-same": ["trainer.precision=32-true", "model.channels_last=false", "trainer.benchmark=false"],
    "seg-default": [],
    "seg-compiled": ["model.compile=true"],
}


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides``, as ``python -m seg.train`` would."""
    set_up()
    if GlobalHydra.instance().is_initialized():  # inside seg.bench's own Hydra app
        return compose(config_name="train", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def device_of(bench: DictConfig) -> torch.device:
    """The device ``bench.device`` names (``auto``: the GPU when there is one)."""
    return resolve_device(str(bench.device))


def train_config(
    bench: DictConfig,
    name: str,
    *extra: str,
    size: int | None = None,
    batch: int | None = None,
    own: bool = False,
    sized: bool = True,
) -> DictConfig:
    """The training config variant ``name`` measures: ``conf/train.yaml`` with the bench's device,
    workers, sizes and ``train_overrides`` (with ``own``: without the last two; without ``sized``:
    the training config's own sizes), then ``extra``; its outputs go to ``<bench output>/<name>``."""
    width = [] if bench.base_channels is None else [f"model.net.base_channels={bench.base_channels}"]
    sizes = [
        *width,
        f"data.image_size={size or bench.image_size}",
        f"data.batch_size={batch or bench.batch_size}",
    ]
    workers = [] if bench.num_workers is None else [f"data.num_workers={bench.num_workers}"]
    paths = [
        f"paths.data_dir={bench.paths.data_dir}",
        f"paths.log_dir={bench.paths.log_dir}",
        f"paths.output_dir={Path(bench.paths.output_dir) / name.replace(' ', '-')}",
    ]
    chosen = [] if own else [*(sizes if sized else []), *bench.train_overrides]
    device = device_of(bench)
    with building():
        cfg = compose_train(
            [f"trainer={TRAINERS[device.type]}", *chosen,
             *workers, *paths, "resume=null", "print_config=false", *extra]
        )  # fmt: skip
    validate_train_config(cfg)
    OmegaConf.resolve(cfg)
    return cfg


def one_timed_epoch(batches: int) -> list[str]:
    """Overrides that make a training run ``batches`` steps and nothing else: no validation, and no
    checkpoint files (they would only be written after the timed steps)."""
    return [
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={batches}",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "callbacks.model_checkpoint.save_top_k=0",
        "callbacks.model_checkpoint.save_last=false",
        "callbacks.step_checkpoint.save_last=false",
    ]


def build_data(cfg: DictConfig) -> SegmentationDataModule:
    """The data module ``seg.train`` trains on, prepared and set up for fitting."""
    with building("data"):
        datamodule: SegmentationDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


@dataclass
class TrainingRun:
    """What one timed Lightning run measured."""

    times: list[float]  # the measured steps, warm-up left out
    first_step: float  # the first step alone (worker start, compilation)
    epoch_steps: int  # training steps in one epoch of the composed config
    parameters: int  # of the network that trained
    precision: str  # the trainer's
    memory_mb: float  # peak during training, above the memory in use when training started (CPU)
    profile: list[dict[str, Any]] = field(default_factory=list)


def timed_batches(warmup: int, steps: int, profile: bool = False) -> int:
    """Training batches a run needs: the first (it starts the workers), warm-up, measured, profiled."""
    return 1 + warmup + steps + int(profile)


def lightning_run(
    cfg: DictConfig,
    device: torch.device,
    warmup: int,
    steps: int,
    profile: bool = False,
) -> TrainingRun:
    """Build the data module, module and trainer ``seg.train`` builds from ``cfg`` (shaped by
    ``one_timed_epoch(timed_batches(...))``) and train; the step after the measured ones is profiled."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_data(cfg)
    module = build_module(cfg, datamodule)
    timer = StepTimer(device, profile_step=1 + warmup + steps if profile else None)
    trainer = build_trainer(cfg, [timer])
    trainer.fit(module, datamodule=datamodule)
    memory = peak_memory_mb(device) - timer.baseline_mb
    times = timer.step_times()
    measured = times[1 + warmup : 1 + warmup + steps]
    if len(measured) < steps:
        raise ConfigError(
            f"the training data gave {len(times)} batches; the bench needs {timed_batches(warmup, steps)}: "
            "lower steps, warmup or batch_size"
        )
    epoch_steps = len(datamodule.train_dataloader())
    return TrainingRun(
        measured, times[0], epoch_steps, timer.parameters, timer.precision, memory, timer.profile
    )


def reference_batches(cfg: DictConfig, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` batches of the configured training data (augmented as in training), in memory."""
    loader = build_data(cfg).train_dataloader()
    pairs = list(islice(loader, count))
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def reference_loop(
    cfg: DictConfig, images: torch.Tensor, masks: torch.Tensor, device: torch.device, warmup: int, steps: int
) -> list[float]:
    """The yardstick: the configured network, loss and optimizer in a plain loop (fp32, NCHW, no
    Lightning, a DataLoader over tensors in memory). Returns the measured step times."""
    torch.manual_seed(cfg.seed)
    net = instantiate(cfg.model.net).to(device)
    optimizer = instantiate(cfg.model.optimizer)(net.parameters())
    loss_fn = instantiate(cfg.loss).to(device)
    batch = int(cfg.data.batch_size)
    batches = cycle(DataLoader(TensorDataset(images, masks), batch_size=batch, shuffle=True, drop_last=True))
    times = []
    for _ in range(warmup + steps):
        start = _now(device)
        x, y = next(batches)
        x, y = x.to(device).float() / 255, y.to(device)
        loss = loss_fn(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(_now(device) - start)
    return times[warmup:]


def _now(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def data_loader_rate(cfg: DictConfig, batches: int) -> float:
    """Images per second the training dataloader of ``cfg`` delivers alone."""
    return data_rate(build_data(cfg).train_dataloader(), batches)


def inference_rates(
    cfg: DictConfig, batch: int, device: torch.device, folder: Path, repeats: int = 7
) -> dict[str, float]:
    """Images/s of the configured network, eager and as the TorchScript model a run writes (fp32,
    eval mode)."""
    from seg.inference.formats import deployable, export_torchscript

    net = instantiate(cfg.model.net)
    eager = deployable(net).to(device)
    scripted = torch.jit.load(
        str(export_torchscript(net, folder / "bench-torchscript.pt")), map_location=device
    )
    size = int(cfg.data.image_size)
    x = torch.rand(batch, int(cfg.data.in_channels), size, size, device=device)
    rates = {}
    with torch.no_grad():
        for name, model in (("eager", eager), ("torchscript", scripted)):
            for _ in range(3):  # TorchScript optimises the graph during its first runs
                model(x)
            times = []
            for _ in range(repeats):
                start = _now(device)
                model(x)
                times.append(_now(device) - start)
            rates[name] = median_rate(times, batch)
    return rates
