"""Search seg.train's settings with Optuna: every trial is a training run, the unpromising stopped early.

``seg-search [search.n_trials=N] [seg.train overrides ...]`` (or ``python -m seg.search``); the
same command line run again resumes the study.
"""

from __future__ import annotations

from omegaconf import DictConfig

from seg.command import command
from seg.errors import SegError, exit_on_user_error, install_hint


def _search(cfg: DictConfig) -> float | None:
    try:
        from seg.training.search import search
    except ModuleNotFoundError as error:
        if error.name != "optuna":
            raise
        raise SegError(f"seg.search needs Optuna, in the sweep extra: {install_hint('sweep')}") from None
    return search(cfg)


@command("search")
def main(cfg: DictConfig) -> float | None:
    """Run or resume the study; return the best trial's value."""
    return exit_on_user_error(lambda: _search(cfg), bool(cfg.get("full_traceback")))


if __name__ == "__main__":
    main()
