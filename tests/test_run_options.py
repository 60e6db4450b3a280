"""Run-wide options: run names and tags (sweeps included); unknown keys stay errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import TINY, compose_train, run_cli
from hydra.errors import ConfigCompositionException


@pytest.mark.parametrize(
    "overrides",
    [
        ["logger=mlflow", "logger.mlflow.trackin_uri=http://127.0.0.1:5000"],
        ["nmae=baseline"],
    ],
)
def test_unknown_keys_stay_errors(overrides: list[str]) -> None:
    with pytest.raises(ConfigCompositionException, match="Could not override"):
        compose_train(overrides)


def test_sweep_jobs_carry_the_name_and_the_sweep_tag(tmp_path: Path, data_cache: Path) -> None:
    result = run_cli(
        [
            "seg.train",
            "-m",
            "model.optimizer.lr=1e-2,1e-3",
            *[o for o in TINY if not o.startswith(("trainer.max_epochs", "model.optimizer.lr"))],
            "trainer.max_epochs=1",
            "logger=csv",
            "name=lr sweep",
            "tags=[tiny]",
            f"paths.log_dir={tmp_path}",
            f"paths.data_dir={data_cache}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    assert sweep.name.endswith("_lr-sweep")
    for job in ("0", "1"):
        hparams = yaml.safe_load((sweep / job / "csv" / "hparams.yaml").read_text())
        assert hparams["name"] == f"{sweep.name}/{job}"
        assert hparams["tags"] == f"tiny, sweep:{sweep.name}"
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "finished"
