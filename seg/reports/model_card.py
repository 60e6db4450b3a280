"""The model card of a run (``RunDir.model_card``): what the model is, where its weights came from,
which data it saw, how it was trained, how good it is on which split, how to use it, and the
limitations the run itself shows.

The card is a view of the run's files, rewritten whole (atomically) whenever they change: at the
end of every training run (also one stopped by a signal or a budget), by ``seg.evaluate`` of the
run (its split's results), and by ``seg.export`` (the files it wrote and how well they agree with
the fp32 model). No number in it is typed twice: each is read from the run's metrics,
classes, run info and saved configs, each evaluation's metrics and the export record (the files
``seg.rundir`` names); what none of them holds is written as unknown.

The front matter is the Hugging Face Hub's model-card metadata (``huggingface_hub.ModelCardData``
with one ``EvalResult`` per split and metric: the ``model-index``), written locally; nothing
contacts the Hub.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData
from omegaconf import OmegaConf

from seg.artifacts import atomic_path
from seg.classes import ClassInfo
from seg.metrics import DEFAULT_MONITOR
from seg.rundir import CLASSES_FILE, MODEL_FILE, EvalDir, RunDir

#: How the results of a split are named in the card and its ``model-index``.
_METRICS = (("dice", "mean Dice"), ("iou", "mean IoU"))
_UNKNOWN = "not recorded"
_NO_LIMITATIONS = "None shown by the run's own files."


def _short_name(target: Any) -> str:
    """``torch.optim.AdamW`` -> ``AdamW``."""
    return str(target).rsplit(".", 1)[-1]


def _commit(git: dict[str, Any] | None) -> str:
    if not git:
        return ""
    return f"; git commit `{git['commit']}`" + (" (with local changes)" if git.get("dirty") else "")


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _number(value: Any) -> float | None:
    """A finite float, or None (absent classes are NaN in the metrics)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _percent(value: Any) -> str:
    number = _number(value)
    return f"{100 * number:.1f}" if number is not None else "-"


class _Run:
    """The run's files, read once."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.metrics = run.read_metrics() or {}
        self.info = ClassInfo.read(run.classes) if run.classes.is_file() else None
        self.cfg = OmegaConf.load(run.resolved_config) if run.resolved_config.is_file() else None
        # As typed: an override may hold an interpolation (``height:${data.image_size}``).
        saved = (
            OmegaConf.to_container(OmegaConf.load(run.overrides), resolve=False)
            if run.overrides.is_file()
            else []
        )
        self.overrides = [str(o) for o in saved]
        hydra = OmegaConf.load(run.hydra_settings) if run.hydra_settings.is_file() else None
        self.choices = dict(hydra.hydra.runtime.choices) if hydra is not None else {}
        self.run_info = _read_json(run.run_info) or {}
        self.exports = _read_json(run.exports) or {}
        self.evaluations = {
            folder.name: report
            for folder in sorted(run.eval_root.glob("*"))
            if (report := _read_json(EvalDir(folder).metrics)) is not None
        }

    def select(self, key: str) -> Any:
        return OmegaConf.select(self.cfg, key, default=None) if self.cfg is not None else None

    @property
    def class_names(self) -> list[str]:
        return self.info.class_names if self.info else []

    def results(self) -> dict[str, dict[str, Any]]:
        """Per scored split: where the numbers come from, the means, and per-class Dice and IoU.
        ``seg.evaluate``'s report of a split replaces what training recorded for it."""
        found: dict[str, dict[str, Any]] = {}
        recorded = {"val": self.metrics.get("best"), "test": self.metrics.get("test")}
        for split, values in recorded.items():
            if not values:
                continue
            source = (
                f"the best epoch ({values.get('epoch')}) of training"
                if split == "val"
                else "the end of training (best weights)"
            )
            found[split] = {
                "source": source,
                "mean": {m: _number(values.get(f"{split}/{m}")) for m, _ in _METRICS},
                "classes": [
                    {
                        "class": name,
                        **{m: _number(values.get(f"{split}/{m}/{name}")) for m, _ in _METRICS},
                        "pixel_share": None,
                    }
                    for name in self.class_names
                ],
            }
        for split, report in self.evaluations.items():
            found[split] = {
                "source": f"`seg.evaluate` ({report.get('images')} images, "
                f"precision {report.get('precision')})",
                "mean": {m: _number(report["mean"].get(m)) for m, _ in _METRICS},
                "classes": [
                    {
                        "class": row["class"],
                        **{m: _number(row.get(m)) for m, _ in _METRICS},
                        "pixel_share": row.get("pixel_share"),
                    }
                    for row in report["per_class"]
                ],
            }
        return found


def _front_matter(run: _Run, results: dict[str, dict[str, Any]]) -> str:
    pretrained = run.metrics.get("pretrained") or {}
    licence = (pretrained.get("licence") or "unknown").lower()
    dataset = run.choices.get("data") or "unknown"
    model_name = run.run.path.name
    evaluations = [
        EvalResult(
            task_type="image-segmentation",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=metric,
            metric_name=name,
            metric_value=result["mean"][metric],
        )
        for split, result in results.items()
        for metric, name in _METRICS
        if result["mean"][metric] is not None
    ]
    data = ModelCardData(
        library_name="seg",
        license=licence,
        tags=["semantic-segmentation", "pytorch-lightning", "seg", str(run.choices.get("model") or "")],
        datasets=[dataset],
        model_name=model_name,
        pipeline_tag="image-segmentation",
        eval_results=evaluations or None,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def _model_section(run: _Run) -> list[str]:
    network = run.metrics.get("network") or {}
    net = run.select("model.net") or {}
    target = str(net.get("_target_", _UNKNOWN)).rsplit(".", 1)[-1]
    architecture = target
    if "arch" in net:
        encoder = net.get("encoder_name")
        architecture = f"{net['arch']} (segmentation_models_pytorch) on the `{encoder}` encoder"
    elif "base_channels" in net:
        architecture = f"U-Net, base width {net['base_channels']} ({target})"
    parameters = network.get("parameters")
    lines = [
        "## Model",
        "",
        f"- **Architecture:** {architecture}",
        f"- **Parameters:** {parameters:,}" if parameters else f"- **Parameters:** {_UNKNOWN}",
        f"- **Input:** float32 `(B, {run.info.in_channels if run.info else '?'}, H, W)` scaled to [0, 1], "
        f"any H and W; `{MODEL_FILE}` normalises it itself with mean "
        f"{network.get('mean', _UNKNOWN)} and std {network.get('std', _UNKNOWN)}",
        "- **Output:** logits `(B, classes, H, W)`; `argmax(1)` gives class indices",
        "",
    ]
    if run.info:
        lines += ["| index | class | colour |", "| ---: | --- | --- |"]
        for index, (name, colour) in enumerate(zip(run.info.class_names, run.info.palette, strict=False)):
            hexa = "#" + "".join(f"{int(c):02x}" for c in colour)
            lines.append(f"| {index} | {name} | `{hexa}` {tuple(colour)} |")
        if run.info.ignore_index is not None:
            lines.append(f"\nMask value {run.info.ignore_index} is ignored (no loss, no score).")
        lines.append("")
    return lines


def _weights_section(run: _Run) -> list[str]:
    pretrained = run.metrics.get("pretrained")
    lines = ["## Starting weights", ""]
    if not pretrained:
        return [*lines, "Random initialisation: every weight was learned from the data below.", ""]
    rows = [
        ("source", pretrained.get("source")),
        ("kind", pretrained.get("kind")),
        ("what", pretrained.get("description")),
        ("package", f"{pretrained.get('package')} {pretrained.get('version') or ''}".strip()
         if pretrained.get("package") else None),
        ("licence", pretrained.get("licence") or "unknown: check the weights' own terms"),
        ("file", pretrained.get("path")),
        ("sha256", f"`{pretrained['sha256']}`" if pretrained.get("sha256") else None),
        ("normalisation they expect", f"mean {pretrained.get('mean')}, std {pretrained.get('std')}"),
    ]  # fmt: skip
    lines += [f"- **{key}:** {value}" for key, value in rows if value]
    return [*lines, ""]


def _data_section(run: _Run) -> list[str]:
    validation = run.metrics.get("validation") or {}
    sizes = validation.get("sizes") or {}
    layout = run.select("data.layout._target_")
    lines = [
        "## Data",
        "",
        f"- **Dataset:** `data={run.choices.get('data', _UNKNOWN)}`, root `{run.select('data.root')}`"
        + (f", layout `{layout}`" if layout else ""),
        f"- **Frames:** {', '.join(f'{split} {count}' for split, count in sizes.items()) or _UNKNOWN}",
        f"- **Validation:** {validation.get('description', _UNKNOWN)}",
    ]
    shares = run.metrics.get("train_pixels")
    if shares:
        total = sum(shares["pixels"]) + shares["ignored"]
        lines += ["", "Class pixel shares of the training split:", "", "| class | share |", "| --- | ---: |"]
        for name, count in zip(run.class_names, shares["pixels"], strict=False):
            lines.append(f"| {name} | {100 * count / max(total, 1):.2f}% |")
        if shares["ignored"]:
            lines.append(f"| (ignored) | {100 * shares['ignored'] / max(total, 1):.2f}% |")
    return [*lines, ""]


def _training_section(run: _Run) -> list[str]:
    epochs = run.metrics.get("epochs") or []
    last = epochs[-1] if epochs else {}
    packages = run.run_info.get("packages") or {}
    git = run.run_info.get("git")
    machine = run.run_info.get("gpu") or run.run_info.get("cpu") or run.run_info.get("machine", _UNKNOWN)
    seconds = run.metrics.get("train_seconds")
    experiment = run.choices.get("experiment")
    lines = [
        "## Training",
        "",
        f"- **Experiment:** {f'`experiment={experiment}`' if experiment else 'none (the defaults)'}",
        f"- **Overrides:** {' '.join(f'`{o}`' for o in run.overrides) or 'none'}",
        f"- **Epochs and steps:** {len(epochs)} epochs, {last.get('step', _UNKNOWN)} steps"
        + (f" (max_epochs {run.select('trainer.max_epochs')})" if run.select("trainer.max_epochs") else ""),
        f"- **Wall time of training:** {f'{seconds:.0f} s' if seconds is not None else _UNKNOWN}",
        f"- **Status:** {run.metrics.get('status', _UNKNOWN)}; stopped because: "
        f"{run.metrics.get('stop_reason', _UNKNOWN)}",
        f"- **Machine:** {machine}; precision `{run.select('trainer.precision')}`",
        f"- **Loss and optimiser:** `{_short_name(run.select('loss._target_'))}`, "
        f"`{_short_name(run.select('model.optimizer._target_'))}` lr {run.select('model.optimizer.lr')}",
        f"- **Versions:** seg {packages.get('seg', _UNKNOWN)}, torch {packages.get('torch', _UNKNOWN)}, "
        f"Lightning {packages.get('pytorch-lightning', _UNKNOWN)}" + _commit(git),
        "",
    ]
    return lines


def _results_section(run: _Run, results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Results", ""]
    if not results:
        lines += ["No split was scored.", ""]
    best = run.metrics.get("best") or {}
    if best:
        monitor = run.metrics.get("monitor", DEFAULT_MONITOR)
        lines += [f"Best epoch: {best.get('epoch')} ({monitor} {_percent(best.get(monitor))}).", ""]
    for split, result in results.items():
        mean = result["mean"]
        lines += [
            f"### {split}: Dice {_percent(mean['dice'])}, IoU {_percent(mean['iou'])}",
            "",
            f"From {result['source']}.",
            "",
            "| class | Dice | IoU |",
            "| --- | ---: | ---: |",
        ]
        lines += [
            f"| {row['class']} | {_percent(row['dice'])} | {_percent(row['iou'])} |"
            for row in result["classes"]
        ]
        lines += [f"| **mean** | **{_percent(mean['dice'])}** | **{_percent(mean['iou'])}** |", ""]
    pictures = [
        ("Training curves", run.run.curves),
        ("Validation confusion matrix (latest epoch)", run.run.val_confusion_matrix),
        ("Validation predictions (latest epoch)", run.run.val_predictions),
    ]
    for split in run.evaluations:
        report = EvalDir(run.run.eval_dir(split))
        pictures += [(f"{split}: confusion matrix", report.confusion_matrix)]
        samples = sorted(report.samples.glob("*.png"))
        if samples:
            pictures.append((f"{split}: image, truth, prediction, errors", samples[0]))
    for title, path in pictures:
        if path.is_file():
            lines += [f"![{title}]({path.relative_to(run.run.path).as_posix()})", ""]
    return lines


def _usage_section(run: _Run) -> list[str]:
    channels = run.info.in_channels if run.info else 3
    return [
        "## How to use it",
        "",
        "With `torch` alone, from this folder:",
        "",
        "```python",
        snippet(channels),
        "```",
        "",
        "With `seg`: `seg-predict run=<this folder> input=<image or folder> output=<folder>`.",
        "",
    ]


def snippet(in_channels: int) -> str:
    """Python that loads the run's TorchScript model with ``torch.jit.load`` and predicts; it runs
    as written from the run directory (the tests run it)."""
    return "\n".join(
        [
            "import json",
            "import torch",
            "",
            f'model = torch.jit.load("{MODEL_FILE}")  # fp32, eval mode',
            f'classes = json.load(open("{CLASSES_FILE}"))["class_names"]',
            f"image = torch.rand(1, {in_channels}, 240, 320)  # float32 in [0, 1]; any height and width",
            "with torch.no_grad():",
            "    labels = model(image).argmax(1)  # (1, 240, 320) class indices",
            'print("prediction", tuple(labels.shape), "classes", classes)',
        ]
    )


def _exports_section(run: _Run) -> list[str]:
    if not run.exports:
        return []
    lines = [
        "## Exported files",
        "",
        "| format | file | agreement with the fp32 model | largest logit difference |",
        "| --- | --- | ---: | ---: |",
    ]
    folder = run.run.export_dir.relative_to(run.run.path).as_posix()
    for name, entry in run.exports.items():
        lines.append(
            f"| {name} | `{folder}/{entry['file']}` | {100 * entry['label_agreement']:.3f}% of pixels | "
            f"{entry['max_abs_diff']:.2e} |"
        )
    return [*lines, "", f"Measured on {next(iter(run.exports.values()))['checked_on']}.", ""]


def limitations(run: _Run, results: dict[str, dict[str, Any]]) -> list[str]:
    """What the run's own files show about where its numbers may mislead."""
    found = []
    for split, result in results.items():
        absent = [
            row["class"]
            for row in result["classes"]
            if row["pixel_share"] == 0 or (row["dice"] is None and row["iou"] is None)
        ]
        if absent:
            found.append(f"Classes absent from the {split} split (no score there): {', '.join(absent)}.")
    shares = run.metrics.get("train_pixels")
    if shares:
        never = [name for name, count in zip(run.class_names, shares["pixels"], strict=False) if count == 0]
        if never:
            found.append(f"Classes that never occur in the training split: {', '.join(never)}.")
        total = sum(shares["pixels"]) + shares["ignored"]
        if shares["ignored"] and run.info and run.info.ignore_index is not None:
            share = 100 * shares["ignored"] / max(total, 1)
            found.append(
                f"Mask value {run.info.ignore_index} is ignored: {share:.1f}% of the training pixels "
                "carry no label and are not scored."
            )
    validation = run.metrics.get("validation") or {}
    if validation.get("split") == "fraction":
        found.append(
            "Validation frames are a random share of the training data's own frames (and sequences): "
            "validation scores may overstate how the model does on unseen scenes."
        )
    reason = str(run.metrics.get("stop_reason") or "")
    if "budget" in reason or "max_time" in reason:
        found.append(f"The schedule was cut short by its time budget: {reason}.")
    if run.metrics.get("status") not in (None, "finished"):
        status = run.metrics.get("status")
        found.append(f"Training did not finish ({status}): the scores are of the best weights so far.")
    return found


def render(run_dir: RunDir) -> str:
    """The card's text for the run in ``run_dir``."""
    run = _Run(run_dir)
    results = run.results()
    found = limitations(run, results)
    title = f"# {run_dir.path.name}: a `seg` segmentation model"
    sections: Sequence[list[str]] = (
        [title, ""],
        _model_section(run),
        _weights_section(run),
        _data_section(run),
        _training_section(run),
        _results_section(run, results),
        _exports_section(run),
        _usage_section(run),
        ["## Limitations", "", *(f"- {line}" for line in found or [_NO_LIMITATIONS]), ""],
    )
    return _front_matter(run, results) + "\n".join(line for section in sections for line in section)


def write_model_card(run_dir: RunDir) -> Path:
    """Write (or rewrite) the run's model card from its files; return its path."""
    with atomic_path(run_dir.model_card) as tmp:
        tmp.write_text(render(run_dir))
    return run_dir.model_card
