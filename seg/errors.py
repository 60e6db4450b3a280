"""The one exception type for problems a user can fix, and how entry points report it."""

from __future__ import annotations

import contextlib
import logging
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
def unwrapping_user_errors() -> Iterator[None]:
    """Let a ``SegError`` through as itself when wrappers re-raised it (Hydra's ``instantiate``
    wraps whatever a ``_target_`` raises, once per nested ``instantiate``), so it is still
    reported in one line."""
    try:
        yield
    except Exception as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, SegError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


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
