"""Training images/s of several seg.train configs in one process, as seg.bench's seg-default
variant times them (the data module, module and trainer seg.train builds; medians of steps).

    python scripts/recipe_speed.py --bench "image_size=256 batch_size=8" \
        experiment=camvid_cpu experiment=camvid_cpu_scratch

Each argument is one config: seg.train overrides separated by spaces. The bench's settings apply
(``--bench``: seg.bench overrides; its image_size and batch_size set the sizes, and
base_channels=null keeps each network's own width). Prints a line naming the machine, then one
JSON line per config, ``--rounds`` times, alternating the configs, so that a change of the
machine's load shows as a difference between rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import torch
from hydra import compose, initialize_config_dir

from seg.benchmark import variants as v
from seg.config import CONF_DIR
from seg.hardware import cpu_has_native_bf16, cpu_name
from seg.hydra_setup import set_up


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs="+", help="one argument per config: seg.train overrides")
    parser.add_argument("--bench", default="", help="seg.bench overrides, separated by spaces")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    outputs = f"paths.output_dir={tempfile.mkdtemp(prefix='recipe-speed-')}"  # no Hydra run dir here
    set_up()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        bench = compose("bench", ["base_channels=null", outputs, *args.bench.split()])
    device = v.device_of(bench)
    machine = {"cpu": cpu_name(), "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads()}
    print(json.dumps({**machine, "torch": torch.__version__}), flush=True)
    for round_ in range(args.rounds):
        for index, config in enumerate(args.configs):
            name = f"recipe-{index}"
            cfg = v.train_config(bench, name, *config.split(), *v.one_timed_epoch(
                v.timed_batches(bench.warmup, bench.steps)))  # fmt: skip
            run = v.lightning_run(cfg, device, bench.warmup, bench.steps)
            rate = int(cfg.data.batch_size) / statistics.median(run.times)
            row = {
                "round": round_,
                "config": config,
                "images_per_s": round(rate, 2),
                "precision": run.precision,
            }
            row |= {
                "parameters": run.parameters,
                "size": int(cfg.data.image_size),
                "batch": int(cfg.data.batch_size),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
