"""Training and inference speed on this machine, against a plain loop and the machine's peak.

``seg-bench [key=value ...]``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from seg.command import command


@command("bench")
def main(cfg: DictConfig) -> None:
    from seg.benchmark import run_bench

    run_bench(cfg)


if __name__ == "__main__":
    main()
