"""One line for a command line Hydra cannot compose: the unknown key and the closest real one,
the group option that does not exist and the real ones, the override that does not parse."""

from __future__ import annotations

import difflib
import sys

from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from seg.command_help import program_name
from seg.config_tree import leaves


def _unknown_key_message(error: OmegaConfBaseException, command: str) -> str:
    """``data.rooot=x``: the key, and the closest real key or how to add a new one."""
    full_key = str(error.full_key)
    parent = error.parent_node
    show = "hydra" if full_key.startswith("hydra.") else "job"
    every_key = f"see every key with: {program_name(command, sys.argv[0])} --cfg {show}"
    message = f"{full_key} is not a key of seg.{command}'s config"
    if not isinstance(parent, DictConfig):
        return f"{message}; {every_key}"
    settings = OmegaConf.to_container(parent._get_root(), resolve=False)
    known = [key for key in leaves(settings) if not key.startswith("hydra.")]
    close = difflib.get_close_matches(full_key, known, n=1, cutoff=0.75)
    if close:
        return f"{message}: did you mean {close[0]}?"
    if "_target_" in parent:
        target = str(parent._get_node("_target_")._value()).rsplit(".", 1)[-1]
        return f"{message}; to pass a new argument to {target}, write +{full_key}=..., or {every_key}"
    return f"{message}; {every_key}"


def _missing_option_message(error: MissingConfigException) -> str:
    """``loss=hinge``: the group's real options, and the closest one."""
    missing = str(error.missing_cfg_file or "")
    group, _, option = missing.rpartition("/")
    options = [name for name in error.options or [] if not name.startswith("_")]
    if not group or not options:
        return " ".join(str(error).split())
    message = f"{group}={option} is not an option of {group}: choose one of {', '.join(options)}"
    close = difflib.get_close_matches(option, options, n=1)
    return f"{message}; did you mean {group}={close[0]}?" if close else message


def config_error_message(error: Exception, command: str) -> str:
    """The one line that says what is wrong with a command line Hydra could not compose."""
    cause = error.__cause__
    if isinstance(error, MissingConfigException):
        return _missing_option_message(error)
    if isinstance(error, OverrideParseException):
        reason, *details = [line.strip() for line in str(error).splitlines() if line.strip()]
        more = f" ({' '.join(details)})" if details else ""
        return f"cannot read the override {error.override!r}: {reason}{more}"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        return _unknown_key_message(cause, command)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if cause is not None:
        lines += [line.strip() for line in str(cause).splitlines()[:1] if line.strip()]
    return " ".join(lines)
