"""Every logger holds the run: TensorBoard + CSV + MLflow (local store and a real server), W&B offline."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import cli_ok, synthetic_class_names
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seg.errors import SegError
from seg.metrics import metric_key

CLASS_NAMES = synthetic_class_names()
PER_CLASS = [f"val/dice/{metric_key(name)}" for name in CLASS_NAMES]


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing leaves 127.0.0.1: no usage reports from the tracking libraries, no W&B account."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", os.devnull)  # no `wandb login` key either
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.mark.slow
def test_many_loggers_hold_every_class(make_cfg: Callable[..., Any], tmp_path: Path) -> None:
    """logger=many: TensorBoard, metrics.csv and an MLflow run, each with val/dice/<class>,
    the pictures, the per-class table, and the run's name and tags."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from seg.training.pipeline import train

    logs = tmp_path / "logs"  # the local MLflow store lives beside the run directories
    cfg = make_cfg(
        "logger=many",
        "trainer.max_epochs=2",
        "name=many-loggers",
        "tags=[baseline,tiny]",
        f"paths.log_dir={logs}",
    )
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert set(PER_CLASS) <= set(events.Tags()["scalars"])
    assert {"val/predictions", "val/confusion_matrix", "curves"} <= set(events.Tags()["images"])
    assert "per_class/text_summary" in events.Tags()["tensors"]
    from tensorboard.plugins.hparams import plugin_data_pb2

    session = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info
    assert session.hparams["name"].string_value == "many-loggers"
    assert session.hparams["tags"].string_value == "baseline, tiny"

    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert set(PER_CLASS) <= set(rows[0])
    assert [float(r["val/dice"]) for r in rows if r["val/dice"]] == pytest.approx(
        [e["val/dice"] for e in metrics["epochs"]]
    )
    with (run_dir / "csv" / "per_class.csv").open(newline="") as file:
        assert [row["class"] for row in csv.DictReader(file)] == list(CLASS_NAMES)

    where = metrics["loggers"]["mlflow"]
    assert where["tracking_uri"] == f"sqlite:///{logs}/mlflow/mlflow.db"
    client = MlflowClient(where["tracking_uri"])
    run = client.get_run(where["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "many-loggers" and run.data.tags["tags"] == "baseline, tiny"
    assert set(PER_CLASS) <= set(run.data.metrics)
    history = client.get_metric_history(run.info.run_id, "val/dice")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        [e["val/dice"] for e in metrics["epochs"]]
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.pt", "metrics.json", "classes.json", "images", "tables"} <= artifacts
    images = {a.path for a in client.list_artifacts(run.info.run_id, "images")}
    assert "images/val_confusion_matrix.png" in images
    assert any(p.startswith("images/val~predictions+step+1") for p in images)  # one grid per epoch


# ------------------------------------------------------------------------------- a real MLflow server
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 and a free port, SQLite store, local artifacts; stopped after."""
    pytest.importorskip("mlflow")
    port = _free_port()
    log_file = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # first start creates the database: slow on a busy machine
        while True:
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up in 180 s: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log_file.close()


@pytest.mark.slow
def test_training_run_reaches_a_real_mlflow_server(mlflow_server: str, make_cfg: Callable[..., Any]) -> None:
    from seg.training.pipeline import train

    cfg = make_cfg("logger=mlflow", f"logger.mlflow.tracking_uri={mlflow_server}", "trainer.max_epochs=2")
    metrics = train(cfg)

    api = f"{mlflow_server}/api/2.0/mlflow"
    experiment = _get(f"{api}/experiments/get-by-name?experiment_name=seg-train")["experiment"]
    (run,) = _post(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    run_id = run["info"]["run_id"]
    assert run_id == metrics["loggers"]["mlflow"]["run_id"]
    assert run["info"]["status"] == "FINISHED"

    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert float(params["model.optimizer.lr"]) == pytest.approx(3e-3)
    assert params["data.batch_size"] == "8" and params["name"] == Path(cfg.paths.output_dir).name
    latest = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert set(PER_CLASS) <= set(latest)
    assert latest["hp/best_val_dice"] == pytest.approx(metrics["best"]["val/dice"])
    query = urllib.parse.urlencode({"run_id": run_id, "metric_key": "val/dice"})
    history = sorted(_get(f"{api}/metrics/get-history?{query}")["metrics"], key=lambda m: m["step"])
    assert len(history) == 2
    assert history[-1]["value"] == pytest.approx(metrics["final"]["val/dice"])

    def listed(path: str = "") -> dict[str, dict[str, Any]]:
        query = urllib.parse.urlencode({"run_id": run_id, "path": path})
        return {f["path"]: f for f in _get(f"{api}/artifacts/list?{query}").get("files", [])}

    root = listed()
    assert int(root["model.pt"]["file_size"]) == (Path(cfg.paths.output_dir) / "model.pt").stat().st_size
    assert "images/val_confusion_matrix.png" in listed("images")


@pytest.mark.slow
def test_unreachable_mlflow_server_is_one_line(make_cfg: Callable[..., Any]) -> None:
    pytest.importorskip("mlflow")
    from seg.errors import user_message
    from seg.training.pipeline import train

    uri = f"http://127.0.0.1:{_free_port()}"
    cfg = make_cfg("logger=mlflow", f"logger.mlflow.tracking_uri={uri}", "trainer.max_epochs=1")
    start = time.monotonic()
    with pytest.raises(SegError) as caught:
        train(cfg)
    assert time.monotonic() - start < 60
    message = user_message(caught.value)
    assert message.startswith(f"logger.mlflow.tracking_uri={uri}: no MLflow server answers there")
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


# --------------------------------------------------------------------------------------- W&B offline
def _wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B transaction log (``run-<id>.wandb``): 32 KiB blocks of chunks, each
    a 7-byte header (CRC32, length, type: full / first / middle / last) and a protobuf piece."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        if left < 7:  # the block's tail is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            break
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


@pytest.mark.slow
def test_wandb_runs_offline_without_an_api_key(make_cfg: Callable[..., Any]) -> None:
    pytest.importorskip("wandb")
    from seg.training.pipeline import train

    cfg = make_cfg("logger=wandb", "trainer.max_epochs=2", "tags=[offline]")
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)

    where = metrics["loggers"]["wandb"]
    assert where["offline"] is True
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    assert Path(where["dir"]) == folder
    (log_file,) = folder.glob("run-*.wandb")
    history = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for record in _wandb_records(log_file)
        if record.WhichOneof("record_type") == "history"
    ]
    val_rows = [row for row in history if "val/dice" in row]
    assert [row["val/dice"] for row in val_rows] == pytest.approx([e["val/dice"] for e in metrics["epochs"]])
    assert set(PER_CLASS) <= set(val_rows[-1])
    assert any("val/predictions" in k for row in history for k in row)  # the prediction grid
    assert (folder / "files" / "model.pt").exists()


# -------------------------------------------------------------------------------------- resuming
@pytest.mark.slow
def test_a_resumed_run_continues_its_csv_and_mlflow_records(tmp_path: Path, data_cache: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from support import TINY

    common = [f"paths.log_dir={tmp_path}", f"paths.data_dir={data_cache}", "print_config=false"]
    tiny = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    cli_ok(["seg.train", *tiny, "trainer.max_epochs=1", "logger=[csv,mlflow]", *common], cwd=tmp_path)
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    run_id = json.loads((run_dir / "metrics.json").read_text())["loggers"]["mlflow"]["run_id"]

    cli_ok(["seg.train", f"resume={run_dir}", "trainer.max_epochs=2", *common], cwd=tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed"] and metrics["loggers"]["mlflow"]["run_id"] == run_id  # the same MLflow run
    history = MlflowClient(metrics["loggers"]["mlflow"]["tracking_uri"]).get_metric_history(
        run_id, "val/dice"
    )
    assert sorted(m.value for m in history) == pytest.approx(sorted(e["val/dice"] for e in metrics["epochs"]))
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        epochs = [int(r["epoch"]) for r in csv.DictReader(file) if r["val/dice"]]
    assert epochs == [0, 1]  # the first run's row kept, the resumed run's appended, none twice


# --------------------------------------------------------------------------------- CSV on resume
def test_csv_logger_keeps_the_rows_before_a_resumed_step(tmp_path: Path) -> None:
    from seg.loggers.builders import CSVLogger

    first = CSVLogger(str(tmp_path), purge_step=None)
    for step in range(0, 30, 10):
        first.log_metrics({"train/loss_step": 1.0 / (step + 1)}, step)
    first.finalize("success")

    resumed = CSVLogger(str(tmp_path), purge_step=20)  # the checkpoint was at step 20
    resumed.log_metrics({"train/loss_step": 0.5, "val/dice": 0.7}, 20)
    resumed.finalize("success")
    with (tmp_path / "csv" / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(int(r["step"]), r["val/dice"]) for r in rows] == [(0, ""), (10, ""), (20, "0.7")]


def test_the_hparams_scores_are_labelled_by_the_monitored_metric() -> None:
    from seg.loggers import hparams_scores

    best = {"val/dice": 0.7, "val/iou": 0.55, "val/loss": 0.3}
    assert hparams_scores("val/iou", best) == {"hp/best_val_iou": 0.55, "hp/val_dice_at_best": 0.7}
    assert hparams_scores("val/dice", best) == {"hp/best_val_dice": 0.7, "hp/val_iou_at_best": 0.55}
    assert hparams_scores("val/loss", best) == {
        "hp/best_val_loss": 0.3, "hp/val_dice_at_best": 0.7, "hp/val_iou_at_best": 0.55,
    }  # fmt: skip
