"""Search seg.train's settings with Optuna: every trial is a training run, the unpromising stopped early.

``seg-search [search.n_trials=N] [seg.train overrides ...]`` (or ``python -m seg.search``); the
same command line run again resumes the study.
"""

from __future__ import annotations

from omegaconf import DictConfig

from seg.command import command


@command("search")
def main(cfg: DictConfig) -> float | None:
    """Run or resume the study; return the best trial's value."""
    from seg.training.sweeps import run_search

    return run_search(cfg)


if __name__ == "__main__":
    main()
