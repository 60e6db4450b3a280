"""Two nodes on one machine: multi-node training as a cluster starts it, with gloo on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from support import cli_environ, compose_train

from seg.lightning_module import SegmentationModule

#: Two epochs of four steps of 8 images (4 per node), 16 validation images. SGD, because Adam
#: divides every step by the gradient's own size: a gradient that is zero up to rounding gets a
#: full step of either sign, so two correct computations that round differently drift apart.
RUN = [
    "data.generator.num_train=32",
    "data.generator.num_val=16",
    "data.generator.num_test=8",
    "data.image_size=64",
    "data.num_workers=0",
    "model.net.base_channels=8",
    "model.optimizer._target_=torch.optim.SGD",
    "model.optimizer.lr=0.1",
    "trainer.precision=32-true",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=2",
]
#: Each node: one CPU process, gloo, 4 images per step (8 for the two).
NODE = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2",
        "data.batch_size=4"]  # fmt: skip

#: What other launchers set: any of these would make Lightning pick another cluster environment
#: (torchrun, SLURM, LSF, MPI) or another rank. The nodes get only what the cluster below sets.
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "WORLD_SIZE",
                      "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")  # fmt: skip
LAUNCHER_PREFIXES = ("SLURM_", "LSB_", "JSM_", "OMPI_", "PMI_")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(**variables: str) -> dict[str, str]:
    """This environment without any launcher's variables, plus ``variables``."""
    launcher = [k for k in os.environ if k in LAUNCHER_VARIABLES or k.startswith(LAUNCHER_PREFIXES)]
    env = {k: v for k, v in cli_environ().items() if k not in launcher}
    return {**env, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **variables}


def _node_env(node_rank: int, port: int) -> dict[str, str]:
    """The environment of one node, as a general-purpose cluster sets it for Lightning.

    Lightning's default ``LightningEnvironment`` reads ``NODE_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT``; the world size comes from ``trainer.num_nodes * trainer.devices`` (its docs
    ask for ``WORLD_SIZE`` too, which it does not read). No ``LOCAL_RANK``: with it Lightning
    would expect another launcher to have started every process of the node.
    """
    return _env(
        OMP_NUM_THREADS="1",  # two "nodes" share this machine's cores; each would take them all
        NODE_RANK=str(node_rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
    )


@contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started in the block, each in its own session; all killed on the way out."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            with suppress(ProcessLookupError):  # it may end between the two calls
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _run_two_nodes(
    shared: Path, data_dir: Path, timeout: float = 300
) -> tuple[list[int | None], list[str], list[int]]:
    """Start ``python -m seg.train`` once per node, the same command, from the same directory.

    Node 1 starts in a later second than the one node 0's run directory is named after, as on
    a real cluster: whatever node 1 made of the time would name a second run directory. When a
    node fails, the other is stopped (it would wait for its peer until the deadline).
    Returns the exit statuses (None: still running then), console outputs and process ids.
    """
    args = [sys.executable, "-m", "seg.train", *NODE, *RUN, f"paths.data_dir={data_dir}"]
    port = _free_port()
    consoles = [shared.parent / f"node{rank}.out" for rank in (0, 1)]
    deadline = time.monotonic() + timeout
    with _processes() as nodes:
        for rank, console in enumerate(consoles):
            with console.open("wb") as out:
                nodes.append(subprocess.Popen(args, cwd=shared, env=_node_env(rank, port), stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
            if rank == 0:
                while not any((shared / "outputs" / "train" / "runs").glob("*")):
                    assert nodes[0].poll() is None and time.monotonic() < deadline, console.read_text()
                    time.sleep(0.05)
                time.sleep(1.05 - time.time() % 1)
        codes = [node.poll() for node in nodes]
        while None in codes and not any(codes) and time.monotonic() < deadline:
            time.sleep(0.1)
            codes = [node.poll() for node in nodes]
        pids = [node.pid for node in nodes]
    return codes, [console.read_text() for console in consoles], pids


def _data_parallel_reference(cfg: DictConfig) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """Two processes' data-parallel training, computed in this one process.

    Every step takes the batch of 8 one process trains on and splits it the way seg's sampler
    deals it to two ranks (rank r gets positions r, r+2, ...). Each half is normalised by its
    own batch statistics (batch norm is per process; SyncBatchNorm needs a GPU), the two
    halves' gradients are averaged, and the batch-norm running statistics are rank 0's (DDP
    broadcasts rank 0's buffers before every forward pass). Returns each epoch's validation
    metrics, from one process, and the final weights.
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # as seg.training.pipeline.train does
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module: SegmentationModule = instantiate(
        cfg.model, loss=cfg.loss, scheduler=cfg.get("scheduler"), class_names=datamodule.class_names,
        palette=datamodule.palette, ignore_index=datamodule.ignore_index, _recursive_=False,
    )  # fmt: skip
    optimizer = module.configure_optimizers()
    loader = datamodule.train_dataloader()
    validator = pl.Trainer(
        accelerator="cpu", devices=1, precision="32-true", logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    epochs = []
    for epoch in range(cfg.trainer.max_epochs):
        loader.sampler.set_epoch(epoch)
        module.train()
        for images, masks in loader:
            rank0_buffers = {name: buffer.clone() for name, buffer in module.named_buffers()}
            optimizer.zero_grad()
            for rank in (1, 0):  # both start from rank 0's buffers; rank 0's updates are kept
                for name, buffer in module.named_buffers():
                    buffer.copy_(rank0_buffers[name])
                (module.loss_fn(module(images[rank::2]), masks[rank::2]) / 2).backward()
            optimizer.step()
        epochs.append(validator.validate(module, datamodule=datamodule, verbose=False)[0])
    return epochs, module.state_dict()


@pytest.mark.slow
def test_two_nodes_train_as_one_process_and_only_node_0_writes(tmp_path: Path, data_cache: Path) -> None:
    """Two ``python -m seg.train`` processes, one per "node", started as a cluster starts them.

    Both run to the end; their run equals data-parallel training computed in one process on the
    same 8 images per step; the run directory is node 0's, and nothing else is written anywhere.
    """
    shared = tmp_path / "shared"  # the shared filesystem both nodes start from
    shared.mkdir()
    cfg = compose_train([*RUN, "trainer=cpu", "data.batch_size=8", "data.eval_batch_size=4",
                         f"paths.data_dir={data_cache}", "paths.output_dir=unused"])  # fmt: skip
    instantiate(cfg.data).prepare_data()  # generated once, before the nodes start

    codes, consoles, pids = _run_two_nodes(shared, data_cache)
    if codes[0] != 0 and "EADDRINUSE" in consoles[0]:  # the free port was taken in between: once more
        shared = tmp_path / "shared-again"
        shared.mkdir()
        codes, consoles, pids = _run_two_nodes(shared, data_cache)
    assert codes == [0, 0], "\n\n".join(console[-3000:] for console in consoles)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in consoles[0]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in consoles[1]

    # One run directory, node 0's; every file anywhere below the shared directory is in it.
    written = [p for p in shared.rglob("*") if p.is_file()]
    shown = sorted(str(p.relative_to(shared)) for p in written)
    runs = list((shared / "outputs" / "train" / "runs").iterdir())
    assert len(runs) == 1, shown
    run_dir = runs[0]
    assert written and all(run_dir in p.parents for p in written), shown
    assert [p.name for p in written].count("metrics.json") == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["epochs"]) == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == sorted(
        [Path(metrics["paths"]["best_checkpoint"]).name, "last.ckpt"]
    )
    writers = {p.name.split(".")[-2] for p in (run_dir / "tensorboard").glob("events.out.tfevents.*")}
    assert writers == {str(pids[0])}  # TensorBoard events from node 0's process only

    # The same training as one process on the same data: weights, and every epoch's metrics.
    epochs, weights = _data_parallel_reference(cfg)
    trained = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert trained["state_dict"].keys() == weights.keys()
    for name, value in weights.items():
        # Measured: at most 3e-6 apart. Both halves given rank 0's images: 2e-3; one batch norm
        # over all 8 images: 2e-2.
        got = trained["state_dict"][name]
        torch.testing.assert_close(got, value, rtol=0, atol=5e-5, msg=lambda text, n=name: f"{n}: {text}")
    for epoch, expected in enumerate(epochs):
        for key in ("val/loss", "val/dice", "val/iou", "val/pixel_accuracy"):
            # A pixel whose two best logits tie to rounding may flip (1.5e-5 of pixel accuracy).
            assert metrics["epochs"][epoch][key] == pytest.approx(expected[key], abs=1e-4), (epoch, key)


@pytest.mark.slow
def test_a_stale_rank_variable_stops_a_one_process_run(tmp_path: Path, data_cache: Path) -> None:
    """``NODE_RANK=1`` left in the environment of a one-process run: one error line, no files.

    (Taken for a node other than 0, the run would write into the working directory.)
    """
    result = subprocess.run(
        [sys.executable, "-m", "seg.train", "trainer=cpu", *RUN, f"paths.data_dir={data_cache}"],
        cwd=tmp_path, env=_env(NODE_RANK="1"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: NODE_RANK=1 says this process is one of")
    assert list(tmp_path.iterdir()) == []
