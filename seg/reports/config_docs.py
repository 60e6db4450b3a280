"""``docs/configuration.md``, generated from the composed configs and the comments in ``conf/``.

Every key of every command's config is listed with its default (interpolations as written) and
the comment beside it in its YAML file, so the reference cannot drift from the configs.
Regenerate with ``python -m seg.reports.config_docs`` (``make docs``); a test fails when the
committed page differs from what this writes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from seg.config import CONF_DIR
from seg.config_tree import leaves

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "configuration.md"

#: The commands, each composed from ``conf/<command>.yaml``.
COMMANDS = ("train", "search", "evaluate", "predict", "export", "bench", "check_data")
#: Commands whose config extends another command's (``defaults: [train, ...]``): their section
#: lists only the groups and keys they add or change.
EXTENDS = {"search": "train"}

#: A YAML mapping key, its indentation and the rest of the line.
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(?P<rest>.*)$")
_LONGEST_VALUE = 60


def _trailing_comment(rest: str) -> tuple[int, str]:
    """Where the ``# comment`` at the end of a YAML value starts in ``rest`` (outside quotes), and
    its text; (-1, "") if there is none."""
    quote = None
    for i, char in enumerate(rest):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or rest[i - 1] == " "):
            return i, rest[i + 1 :].strip()
    return -1, ""


def yaml_comments(text: str, prefix: str = "") -> dict[str, str]:
    """``dotted.key -> comment`` for the keys of one YAML file: the comment at the end of the
    key's line (with the comment-only lines under it whose ``#`` is in the same column: the
    comment wrapped), else the comment lines right above it."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings the line is inside
    above: list[str] = []
    wrapped: tuple[str, int] | None = None  # (key, column of its trailing #) the next line may go on
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if wrapped and line.index("#") == wrapped[1]:
                comments[wrapped[0]] += " " + stripped.lstrip("#").strip()
            elif not stripped.startswith("# @package"):
                wrapped = None
                above.append(stripped.lstrip("#").strip())
            continue
        wrapped = None
        match = _KEY_LINE.match(line)
        if not match:
            above = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = prefix + ".".join([*(k for _, k in stack), match["key"]])
        column, trailing = _trailing_comment(match["rest"])
        comment = trailing or " ".join(above)
        if comment:
            comments[key] = comment
        if trailing:
            wrapped = (key, len(line) - len(match["rest"]) + column)
        stack.append((indent, match["key"]))
        above = []
    return comments


def _package(path: Path) -> str:
    """The key prefix a config file's keys land under in the composed config."""
    if path.parent == CONF_DIR or path.read_text().lstrip().startswith("# @package _global_"):
        return ""
    return ".".join(path.parent.relative_to(CONF_DIR).parts) + "."


_BASE_ENTRY = re.compile(r"^  - (?P<name>[\w.-]+)\s*(#.*)?$")


def _with_bases(path: Path) -> list[Path]:
    """A group file after the files of its own group it extends (``defaults: [- default]``)."""
    bases = []
    if path.is_file():
        for line in path.read_text().splitlines():
            match = _BASE_ENTRY.match(line)
            if match and match["name"] != "_self_":
                bases += _with_bases(path.parent / f"{match['name']}.yaml")
    return [*bases, path]


def comments_for(command: str, choices: dict[str, Any]) -> dict[str, str]:
    """Comments of the files a command's default composition reads."""
    files = _with_bases(CONF_DIR / f"{command}.yaml")  # the primary config's bases: _command
    for group, choice in choices.items():
        folder = CONF_DIR / group
        if choice is None or group.startswith("hydra") or not folder.is_dir():
            continue
        files += _with_bases(folder / f"{choice}.yaml")
    comments: dict[str, str] = {}
    for path in files:  # a file extending another one comes after it, and its comment wins
        if path.is_file():
            comments.update(yaml_comments(path.read_text(), _package(path)))
    return comments


def _shown(value: Any) -> str:
    if isinstance(value, list) and len(json.dumps(value)) > _LONGEST_VALUE:
        return f"a list of {len(value)}"
    literal = value is None or isinstance(value, list | dict | bool)
    text = json.dumps(value) if literal else str(value)
    return f"`{text}`".replace("|", "\\|")


def group_options(choices: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """``group -> (chosen option or "none", the group's public options)`` for the groups a
    command composes (Hydra's own groups but its launcher left out, files named ``_*`` too)."""
    groups = {}
    for group, choice in sorted(choices.items()):
        folder = CONF_DIR / group
        if (group.startswith("hydra") and group != "hydra/launcher") or not folder.is_dir():
            continue
        options = sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))
        groups[group] = (choice or "none", options)
    return groups


def _groups(choices: dict[str, Any]) -> list[str]:
    return [
        f"| `{group}=` | `{choice}` | {', '.join(options)} |"
        for group, (choice, options) in group_options(choices).items()
    ]


def _composed(command: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(every key -> default, group -> choice)`` of a command's default composition."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=command, return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    del cfg.hydra
    return leaves(OmegaConf.to_container(cfg, resolve=False)), choices  # type: ignore[return-value]


def command_section(command: str) -> str:
    """The Markdown section for one command: its config groups, then every key (for a command
    that extends another, those it adds or changes)."""
    settings, choices = _composed(command)
    comments = comments_for(command, choices)
    lines = [f"## `python -m seg.{command}` (`conf/{command}.yaml`)", ""]
    base = EXTENDS.get(command)
    if base:
        base_settings, base_choices = _composed(base)
        settings = {k: v for k, v in settings.items() if base_settings.get(k, _ABSENT) != v}
        choices = {g: c for g, c in choices.items() if g not in base_choices}
        lines += [f"Every group and key of `python -m seg.{base}` too; these are added or changed:", ""]
    groups = _groups(choices)
    if groups:
        lines += ["| group | default | options |", "| --- | --- | --- |", *groups, ""]
    lines += ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, value in settings.items():
        meaning = comments.get(key, "").replace("|", "\\|")
        lines.append(f"| `{key}` | {_shown(value)} | {meaning} |")
    return "\n".join(lines)


_ABSENT = object()


def render() -> str:
    """The whole page."""
    intro = (
        "# Configuration reference\n\n"
        "Generated by `python -m seg.reports.config_docs` (`make docs`) from the configs in `conf/`;\n"
        "do not edit by hand: change the YAML (values and their comments) and regenerate. Each command\n"
        "composes `conf/<command>.yaml` with its groups; override any key on the command line\n"
        "(`key=value`), pick a group option with `group=option`, add `-m` to sweep comma-separated\n"
        "values. `${...}` defaults are interpolations, resolved when the run starts.\n"
    )
    return "\n\n".join([intro.rstrip(), *(command_section(c) for c in COMMANDS)]) + "\n"


def main() -> None:
    PAGE.write_text(render())
    print(f"wrote {PAGE.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
