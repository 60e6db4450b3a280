"""Memory, start-up and loader speed of ``seg.train`` on a full-size dataset: the rows of the scale
table in docs/data.md. Nothing it writes is committed.

    python scripts/data_scale.py ROOT [--shards DIR] [--steps 20] [--variants auto,true,false,shards]
        [--overrides "trainer.limit_val_batches=10"]

``ROOT`` is a tree in Cityscapes' layout (``scripts/cityscapes_sized.py`` writes one). For each
variant, one after the other:

- the loader alone: the training loader (its workers, its transforms) read for ``--loader-batches``
  batches in this process, with no model, in images/s after the first batch;
- ``python -m seg.train data=cityscapes data.root=ROOT trainer.max_steps=STEPS`` with that
  ``data.cache`` (or ``data.stream=DIR`` for ``shards``), sampled every 0.5 s: the peak resident
  memory of the training process, the peak of its whole process tree counted proportionally
  (PSS: a page shared by N processes counts 1/N in each), seconds from the command to the end of
  the first training step, and the training images/s (median over the steps after the fifth).

Prints the machine, then one JSON line per variant. ``--shards DIR`` must hold
``python -m seg.shard data=cityscapes data.root=ROOT output=DIR``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from seg.hardware import cpu_name

STEP_LINE = re.compile(r"step (\d+) \| loss \S+ \| ([\d.]+) img/s")


def variant_overrides(variant: str, shards: Path | None) -> list[str]:
    if variant == "shards":
        if shards is None:
            raise SystemExit("error: the shards variant needs --shards DIR")
        return [f"data.stream={shards}"]
    return [f"data.cache={variant}"]


def loader_rate(root: Path, overrides: list[str], batches: int) -> float:
    """Images/s of the training loader alone, after its first batch."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from seg.config import CONF_DIR
    from seg.hydra_setup import set_up

    set_up()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["data=cityscapes", f"data.root={root}", *overrides])
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    next(loader)
    start, images = time.monotonic(), 0
    for _ in range(batches):
        images += len(next(loader)[0])
    return images / (time.monotonic() - start)


def tree_memory(process: psutil.Process) -> tuple[int, int]:
    """Resident bytes of ``process`` and proportional bytes of it and its children."""
    own = pss = 0
    for index, member in enumerate([process, *process.children(recursive=True)]):
        try:
            info = member.memory_full_info()
        except psutil.Error:
            continue
        own = info.rss if index == 0 else own
        pss += info.pss
    return own, pss


def training_run(root: Path, overrides: list[str], steps: int) -> dict[str, Any]:
    logs = tempfile.mkdtemp(prefix="data-scale-")
    command = [
        sys.executable, "-m", "seg.train", "data=cityscapes", f"data.root={root}", *overrides,
        f"trainer.max_steps={steps}", "callbacks.progress_log.every_s=0.01", f"paths.log_dir={logs}",
    ]  # fmt: skip
    start = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(
        target=lambda: lines.extend((time.monotonic() - start, line) for line in child.stdout)
    )
    reader.start()
    process, peak_rss, peak_pss = psutil.Process(child.pid), 0, 0
    while child.poll() is None:
        rss, pss = tree_memory(process)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.5)
    reader.join()
    steps_seen = [(at, STEP_LINE.search(line)) for at, line in lines]
    steps_seen = [(at, int(m[1]), float(m[2])) for at, m in steps_seen if m]
    errors = [line.strip() for _, line in lines if line.startswith("error:")]
    return {
        "exit": child.returncode,
        "error": errors[0] if errors else None,
        "first_step_s": round(steps_seen[0][0], 1) if steps_seen else None,
        "train_img_s": round(statistics.median(r for _, s, r in steps_seen if s > 5), 2)
        if len(steps_seen) > 5
        else None,
        "total_s": round(time.monotonic() - start, 1),
        "peak_rss_gib": round(peak_rss / 2**30, 2),
        "peak_tree_pss_gib": round(peak_pss / 2**30, 2),
        "log_dir": logs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path)
    parser.add_argument("--shards", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--loader-batches", type=int, default=8)
    parser.add_argument("--variants", default="auto,true,false,shards")
    parser.add_argument("--overrides", default="", help="more seg.train overrides, separated by spaces")
    args = parser.parse_args()
    memory = psutil.virtual_memory()
    print(
        json.dumps(
            {"cpu": cpu_name(), "cores": psutil.cpu_count(), "memory_gib": round(memory.total / 2**30, 1)}
        )
    )
    for variant in args.variants.split(","):
        overrides = [*variant_overrides(variant, args.shards), *args.overrides.split()]
        row: dict[str, Any] = {"variant": variant}
        run = training_run(args.root, overrides, args.steps)
        row.update(run)
        if run["exit"] == 0:
            row["loader_img_s"] = round(loader_rate(args.root, overrides, args.loader_batches), 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
