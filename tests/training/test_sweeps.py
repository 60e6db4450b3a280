"""``python -m seg.train -m`` as a user runs it: one run directory per swept value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support import TINY, cli_ok


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and "Warning" not in line]


@pytest.mark.slow
def test_multirun_sweep_makes_one_named_and_tagged_run_dir_per_value(
    tmp_path: Path, data_cache: Path
) -> None:
    cli_ok(
        [
            "seg.train",
            "-m",
            "model.optimizer.lr=1e-2,1e-3",
            *[o for o in TINY if not o.startswith(("trainer.max_epochs", "model.optimizer.lr"))],
            "trainer.max_epochs=1",
            "logger=[tensorboard,csv]",
            "name=lr sweep",
            "tags=[tiny]",
            f"paths.log_dir={tmp_path}",
            f"paths.data_dir={data_cache}",
        ],
        cwd=tmp_path,
    )
    sweeps = list((tmp_path / "train" / "multiruns").iterdir())
    (sweep,) = sweeps
    assert sweep.name.endswith("_lr-sweep")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    lrs = []
    for job in jobs:
        assert (job / "model.pt").is_file()
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
        assert json.loads((job / "metrics.json").read_text())["status"] == "finished"
        hparams = yaml.safe_load((job / "csv" / "hparams.yaml").read_text())  # every job named and tagged
        assert hparams["name"] == f"{sweep.name}/{job.name}"
        assert hparams["tags"] == f"tiny, sweep:{sweep.name}"
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        lrs += [float(o.split("=")[1]) for o in overrides if o.startswith("model.optimizer.lr=")]
    assert lrs == [1e-2, 1e-3]
