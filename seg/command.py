"""How every ``python -m seg.<command>`` starts: Hydra composes ``conf/<command>.yaml`` with the
command line, and a mistake on that command line (an unknown key or option, bad syntax) ends the
command with one ``error:`` line that names it and the fix, as every other user error does."""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable
from typing import TypeVar

import hydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from seg.config import CONF_DIR
from seg.config_tree import leaves
from seg.errors import USER_ERROR_STATUS, print_error

T = TypeVar("T")

#: Hydra re-raises errors (instead of printing them over several lines) while this is "1".
_RAISE_ERRORS = "HYDRA_FULL_ERROR"


def _unknown_key_message(error: OmegaConfBaseException, command: str) -> str:
    """``data.rooot=x``: the key, and the closest real key or how to add a new one."""
    full_key = str(error.full_key)
    parent = error.parent_node
    show = "hydra" if full_key.startswith("hydra.") else "job"
    every_key = f"see every key with: python -m seg.{command} --cfg {show}"
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


def command(config_name: str) -> Callable[[Callable[[DictConfig], T]], Callable[[], T | None]]:
    """``hydra.main`` for ``conf/<config_name>.yaml``; config mistakes become one line, exit 2.

    While Hydra composes the config (a sweep's jobs are all composed before the first one runs) it
    raises its errors, so they can be reported here; the task runs with Hydra's own reporting as
    the user's environment sets it.
    """

    def decorate(task: Callable[[DictConfig], T]) -> Callable[[], T | None]:
        users_setting: str | None = None

        @functools.wraps(task)
        def composed(cfg: DictConfig) -> T:
            _set_env(_RAISE_ERRORS, users_setting)
            return task(cfg)

        hydra_main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
        run = hydra_main(composed)

        @functools.wraps(task)
        def main() -> T | None:
            nonlocal users_setting
            users_setting = os.environ.get(_RAISE_ERRORS)
            os.environ[_RAISE_ERRORS] = "1"
            try:
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
