"""Training and inference speed on this machine, against a plain loop and the machine's peak.

``seg-bench [key=value ...]``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from seg.benchmark import run_bench
from seg.command import command
from seg.errors import exit_on_user_error
from seg.hardware import tune_allocator


@command("bench")
def main(cfg: DictConfig) -> None:
    tune_allocator()
    exit_on_user_error(lambda: run_bench(cfg))


if __name__ == "__main__":
    main()
