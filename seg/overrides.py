"""Hydra command-line overrides (``key=value``, ``+key=value``, ``++key=value``, ``~key``), read
as a key and a value in this one place."""

from __future__ import annotations


def split_override(override: str) -> tuple[str, str]:
    """``(key, value)`` of one override, the key without its ``+``, ``++`` or ``~`` prefix; the
    value is ``""`` for ``~key``."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def override_key(override: str) -> str:
    """The config key one override sets, adds or deletes."""
    return split_override(override)[0]
