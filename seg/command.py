"""The one rule of every command (``seg-<command>``, or ``python -m seg.<command>``): Hydra
composes ``conf/<command>.yaml`` with the command line, then ``seg/<command>.py`` makes one call
into the library. A mistake on the command line (an unknown key or option, bad syntax) ends the
command with one ``error:`` line that names it and the fix, as every other user error does;
``full_traceback=true`` (every command has it, ``conf/_command.yaml``) shows the traceback instead.
The process is set up here too (the allocator, when the command's ``tune_allocator`` is on), and
``--help`` prints the command's own page (``seg.command_help``)."""

from __future__ import annotations

import difflib
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import hydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from seg.command_help import print_help, program_name, wants_help
from seg.config import CONF_DIR
from seg.config_tree import leaves
from seg.errors import USER_ERROR_STATUS, exit_on_user_error, print_error
from seg.hardware import tune_allocator

T = TypeVar("T")

#: Hydra re-raises errors (instead of printing them over several lines) while this is "1".
_RAISE_ERRORS = "HYDRA_FULL_ERROR"


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


def command(
    config_name: str, extra_overrides: Callable[[Sequence[str]], list[str]] | None = None
) -> Callable[[Callable[[DictConfig], T]], Callable[[], T | None]]:
    """``hydra.main`` for ``conf/<config_name>.yaml``; config mistakes become one line, exit 2.

    ``extra_overrides(argv)``, when given, adds overrides to the command line before Hydra reads
    it. While Hydra composes the config (a sweep's jobs are all composed before the first one
    runs) it raises its errors, so they can be reported here. The task then runs with Hydra's own
    reporting as the user's environment sets it, the allocator tuned when the config's
    ``tune_allocator`` says so, and a user error (``SegError``) ends it in one line, exit 2;
    with ``full_traceback=true`` (``conf/_command.yaml``) errors keep their traceback instead.
    """

    def decorate(task: Callable[[DictConfig], T]) -> Callable[[], T | None]:
        users_setting: str | None = None

        @functools.wraps(task)
        def composed(cfg: DictConfig) -> T:
            _set_env(_RAISE_ERRORS, users_setting)
            full_traceback = bool(cfg.get("full_traceback"))
            if full_traceback:
                os.environ[_RAISE_ERRORS] = "1"  # Hydra then shows errors whole, its own frames too
            if cfg.get("tune_allocator"):
                tune_allocator()
            return exit_on_user_error(lambda: task(cfg), full_traceback)

        hydra_main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
        run = hydra_main(composed)
        summary = (sys.modules[task.__module__].__doc__ or "").strip().splitlines()[:1]

        @functools.wraps(task)
        def main() -> T | None:
            nonlocal users_setting
            users_setting = os.environ.get(_RAISE_ERRORS)
            os.environ[_RAISE_ERRORS] = "1"
            try:
                if wants_help(sys.argv[1:]):
                    print_help(config_name, "".join(summary), sys.argv)
                    return None
                if extra_overrides is not None:
                    sys.argv += extra_overrides(sys.argv[1:])
                return run()
            except (ConfigCompositionException, OverrideParseException) as error:
                if users_setting == "1":  # the user asked for Hydra's own exception
                    raise
                print_error(config_error_message(error, config_name))
                raise SystemExit(USER_ERROR_STATUS) from None
            finally:
                _set_env(_RAISE_ERRORS, users_setting)

        return main

    return decorate


def _set_env(name: str, value: str | None) -> None:
    """Set ``name`` to ``value``, or remove it for ``None``."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
