"""The one exception type for problems a user can fix, and how entry points report it."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class SegError(Exception):
    """A mistake in the user's data or config. The message names the file or key and the fix."""


class DataError(SegError):
    """A dataset file or folder that cannot be used (missing, unreadable, inconsistent)."""


class ConfigError(SegError):
    """A config value that cannot work; the message names the key."""


class OptionError(ConfigError):
    """An option of a component built from config that cannot work. The component names the
    option as its own argument (``gamma``); ``building`` adds the config path of the component
    (``loss.gamma``), so that one component's message is right wherever its config sits."""

    def __init__(self, option: str, problem: str) -> None:
        self.option, self.problem = option, problem
        self.located = False  # set once building() has put the config path in front
        super().__init__(f"{option}{problem}")

    @classmethod
    def invalid(cls, option: str, value: object, expected: str) -> OptionError:
        """``<option>=<value> is not valid: expected <expected>``."""
        return cls(option, f"={value!r} is not valid: expected {expected}")

    def within(self, path: str | None) -> OptionError:
        """The same error, its option under ``path`` (``terms.focal`` + ``gamma``)."""
        return OptionError(f"{path}.{self.option}" if path else self.option, self.problem)


class NonFiniteLossError(SegError):
    """The training loss became NaN or infinite (usually a learning rate too high for the loss)."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (a ``KeyError``'s key without quotes), or the name of
    its type when it has none: what a one-line message quotes of an error it explains."""
    text = str(error.args[0] if isinstance(error, KeyError) and error.args else error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def install_hint(extra: str) -> str:
    """The command that adds an optional extra to an installed seg, wheel or checkout alike."""
    return f'pip install "seg[{extra}]"'


def user_message(error: BaseException) -> str:
    """The one line to show for ``error``.

    A ``SegError`` raised in a dataloader worker comes back re-raised with the worker's whole
    traceback as its message; its last line is the original message.
    """
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    line = lines[-1].strip()
    for prefix in (f"{type(error).__module__}.{type(error).__name__}: ", f"{type(error).__name__}: "):
        if line.startswith(prefix):
            line = line[len(prefix) :]
    return line


@contextlib.contextmanager
def building(key: str | None = None) -> Iterator[None]:
    """Around ``instantiate`` of the config node at ``key``: a ``SegError`` raised inside reaches
    the caller as itself, however many ``InstantiationException`` wrappers Hydra put around it
    (one per nested ``instantiate``), so it is still reported in one line.

    This is the one place that puts config paths into messages: an ``OptionError`` gets the
    full key of the node it was raised in: Hydra's ``full_key`` of that node where Hydra knows
    it (a node nested in the built one: ``data.mask_format``), else ``key`` (a node built
    apart, such as the loss inside the LightningModule).
    """
    try:
        yield
    except Exception as error:
        cause: BaseException | None = error
        node_key = None
        while cause is not None and not isinstance(cause, SegError):
            found = _FULL_KEY.search(str(cause)) if type(cause).__name__ == "InstantiationException" else None
            node_key = found.group(1) if found else node_key  # the innermost node's wins
            cause = cause.__cause__
        if cause is None:
            raise
        if isinstance(cause, OptionError) and not cause.located:
            cause = cause.within(node_key or key)
            cause.located = True
        if cause is error:
            raise
        raise cause from None


#: How Hydra names the node whose ``_target_`` failed, on the last line of its message.
_FULL_KEY = re.compile(r"\nfull_key: (\S+)\s*$")


#: The exit status of a command stopped by a mistake the user can fix.
USER_ERROR_STATUS = 2


def print_error(message: str) -> None:
    """Show a user error: one ``error:`` line on stderr."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def exit_on_user_error(fn: Callable[[], T], full_traceback: bool = False) -> T:
    """Run ``fn``; a ``SegError`` ends the process with one line on stderr and exit status 2
    (with ``full_traceback``, it propagates with its traceback instead)."""
    try:
        return fn()
    except SegError as error:
        if full_traceback:
            raise
        log.debug("user error", exc_info=True)
        print_error(user_message(error))
        raise SystemExit(USER_ERROR_STATUS) from None
