"""``--help`` for every command: its own config groups and its most used keys, with their defaults
as composed (the overrides on the same command line applied), required keys marked.

Hydra's own help lists every group under ``conf/`` and the private files; this page lists what
the command composes. Every key is one ``--cfg job`` away, Hydra's flags one ``--hydra-help``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from seg.config import CONF_DIR
from seg.config_tree import leaves, scalar
from seg.reports.config_docs import comments_for, group_options

#: Keys of the command's groups shown besides the command's own keys (those of
#: ``conf/<command>.yaml``) and every required one; where a key is absent from the composed
#: config (another option of its group), it is left out.
COMMON_KEYS: dict[str, tuple[str, ...]] = {
    "train": (
        "data.root",
        "data.batch_size",
        "data.image_size",
        "data.num_workers",
        "model.optimizer.lr",
        "model.net.base_channels",
        "model.net.encoder_name",
        "model.net.encoder_weights",
        "loss.class_weights",
        "trainer.max_epochs",
        "trainer.max_time",
        "trainer.accelerator",
        "trainer.precision",
        "trainer.devices",
    ),
    "search": (
        "search.study_name",
        "search.storage",
        "search.n_trials",
        "search.sampler.n_startup_trials",
        "search.pruner.n_warmup_steps",
        "data.root",
        "trainer.max_epochs",
    ),
    "evaluate": ("data.root",),
    "check_data": ("data.root", "data.num_classes", "data.class_names", "data.ignore_index"),
}

_WIDEST_VALUE = 30
_LONGEST_COMMENT = 72
_HELP_FLAGS = ("--help", "-h")


def wants_help(argv: Sequence[str]) -> bool:
    """True when the command line asks for this page (``--help`` or ``-h``)."""
    return any(arg in _HELP_FLAGS for arg in argv)


def program_name(command: str, argv0: str) -> str:
    """How the user started the command: ``seg-train`` or ``python -m seg.train``."""
    script = Path(argv0).name
    return script if script.startswith("seg-") else f"python -m seg.{command}"


def _shown(value: Any) -> str:
    text = scalar(value) if not isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= _WIDEST_VALUE else text[: _WIDEST_VALUE - 3] + "..."


def _short(comment: str) -> str:
    return comment if len(comment) <= _LONGEST_COMMENT else comment[: _LONGEST_COMMENT - 3] + "..."


def help_text(command: str, summary: str, overrides: Sequence[str], program: str) -> str:
    """The page: what the command does, its groups and options, its keys with defaults."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=command, overrides=list(overrides), return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    del cfg.hydra
    settings = leaves(OmegaConf.to_container(cfg, resolve=False))
    comments = comments_for(command, choices)
    own = OmegaConf.load(CONF_DIR / f"{command}.yaml")
    keys = [key for key, value in settings.items() if value == "???"]
    keys += [key for key in settings if key.split(".")[0] in own and key not in keys]
    keys += [key for key in COMMON_KEYS.get(command, ()) if key in settings and key not in keys]

    lines = [f"{program}: {summary}", "", f"Usage: {program} [group=option ...] [key=value ...]", ""]
    groups = group_options(choices)
    if groups:
        lines.append("Config groups (group=option; the default first):")
        width = max(len(group) for group in groups)
        for group, (choice, options) in groups.items():
            others = [option for option in options if option != choice]
            lines.append(f"  {group:<{width}}  {', '.join([choice, *others])}")
        lines.append("")
    lines.append("Keys (key=value; defaults as composed, * required):")
    width = max(len(key) for key in keys) + 2
    for key in keys:
        value = settings[key]
        mark = "*" if value == "???" else " "
        shown = "(required)" if value == "???" else _shown(value)
        comment = _short(comments.get(key, ""))
        lines.append(f" {mark}{key:<{width}} {shown:<{_WIDEST_VALUE}}  {comment}".rstrip())
    lines += [
        "",
        f"Every key: {program} --cfg job    Hydra's options: {program} --hydra-help",
        "Reference of every key and option: docs/configuration.md",
    ]
    return "\n".join(lines)


def print_help(command: str, summary: str, argv: Sequence[str]) -> None:
    """Print the page for ``argv`` (the command line, program name first)."""
    overrides = [arg for arg in argv[1:] if not arg.startswith("-")]
    print(help_text(command, summary, overrides, program_name(command, argv[0])), file=sys.stdout)
