"""Hydra command-line overrides (``key=value``, ``+key=value``, ``++key=value``, ``~key``), read
as a prefix, a key and a value in this one place."""

from __future__ import annotations

from typing import NamedTuple


class Override(NamedTuple):
    """One override: ``prefix`` is ``""``, ``"+"``, ``"++"`` or ``"~"``; ``value`` is ``None`` for
    ``~key`` without one."""

    prefix: str
    key: str
    value: str | None

    @classmethod
    def parse(cls, override: str) -> Override:
        body = override.lstrip("+~")
        key, sep, value = body.partition("=")
        return cls(override[: len(override) - len(body)], key, value if sep else None)

    def __str__(self) -> str:
        return f"{self.prefix}{self.key}" + ("" if self.value is None else f"={self.value}")


def split_override(override: str) -> tuple[str, str]:
    """``(key, value)`` of one override, the key without its ``+``, ``++`` or ``~`` prefix; the
    value is ``""`` for ``~key``."""
    parsed = Override.parse(override)
    return parsed.key, parsed.value or ""


def override_key(override: str) -> str:
    """The config key one override sets, adds or deletes."""
    return Override.parse(override).key
