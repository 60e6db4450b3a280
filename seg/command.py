"""The one rule of every command (``seg-<command>``, or ``python -m seg.<command>``): Hydra
composes ``conf/<command>.yaml`` with the command line, then ``seg/<command>.py`` makes one call
into the library, imported only then: ``--help`` and a mistake on the command line answer in
about 2 s, without the 4 s that importing Lightning takes. A mistake on the command line (an
unknown key or option, bad syntax) ends the command with one ``error:`` line that names it and
the fix, as every other user error does; ``full_traceback=true`` (every command has it,
``conf/_command.yaml``) shows the traceback instead. The process is set up here too (the
allocator, when the command's ``tune_allocator`` is on), a key renamed in this release is read
under its new name with a notice (``seg.renamed``), and ``--help`` prints the command's own page
(``seg.command_help``)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import hydra
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from seg.command_help import print_help, program_name, wants_help
from seg.config import CONF_DIR
from seg.config_errors import config_error_message
from seg.errors import USER_ERROR_STATUS, ConfigError, SegError, exit_on_user_error, first_line, print_error
from seg.hardware import tune_allocator
from seg.hydra_setup import set_up
from seg.renamed import rename_overrides

T = TypeVar("T")

#: Hydra re-raises errors (instead of printing them over several lines) while this is "1".
_RAISE_ERRORS = "HYDRA_FULL_ERROR"


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
        started = False

        @functools.wraps(task)
        def composed(cfg: DictConfig) -> T:
            nonlocal started
            started = True
            _set_env(_RAISE_ERRORS, users_setting)
            full_traceback = bool(cfg.get("full_traceback"))
            if full_traceback:
                os.environ[_RAISE_ERRORS] = "1"  # Hydra then shows errors whole, its own frames too
            if cfg.get("tune_allocator"):
                tune_allocator()
            return exit_on_user_error(lambda: _with_required_keys(task, cfg), full_traceback)

        hydra_main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
        run = hydra_main(composed)
        summary = (sys.modules[task.__module__].__doc__ or "").strip().splitlines()[:1]

        @functools.wraps(task)
        def main() -> T | None:
            nonlocal users_setting, started
            _read_renamed_keys(config_name)
            users_setting, started = os.environ.get(_RAISE_ERRORS), False
            os.environ[_RAISE_ERRORS] = "1"
            set_up()
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
            except Exception as error:  # Hydra itself failed on the command line (trainer=[1])
                if started or users_setting == "1":
                    raise
                print_error(
                    f"cannot compose seg.{config_name}'s config from this command line "
                    f"({type(error).__name__}: {first_line(error)}); a group takes one option name "
                    f"(trainer=cpu), a key one value: see {program_name(config_name, sys.argv[0])} --help"
                )
                raise SystemExit(USER_ERROR_STATUS) from None
            finally:
                _set_env(_RAISE_ERRORS, users_setting)

        return main

    return decorate


def _with_required_keys(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """``task(cfg)``; a required key left at ``???`` (``run`` of seg.evaluate) is a ``ConfigError``
    naming it, not OmegaConf's traceback."""
    try:
        return task(cfg)
    except MissingMandatoryValue as error:
        key = error.full_key
        raise ConfigError(f"{key} is required: add {key}=<value> to the command line") from None


def _read_renamed_keys(config_name: str) -> None:
    """Spell the keys renamed in this release the new way on the command line, with a notice each;
    two old keys that disagree (``seg.renamed``) end the command in one line."""
    try:
        sys.argv[1:], notices = rename_overrides(config_name, sys.argv[1:])
    except SegError as error:
        print_error(first_line(error))
        raise SystemExit(USER_ERROR_STATUS) from None
    for notice in notices:
        print(notice, file=sys.stderr, flush=True)


def _set_env(name: str, value: str | None) -> None:
    """Set ``name`` to ``value``, or remove it for ``None``."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
