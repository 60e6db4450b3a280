"""Derived data computed once and kept on disk, found again by a fingerprint of what it depends on.

Class weights and k-means colour clusters are JSON files named ``<kind>-<fingerprint>.json`` in
``data.cache_dir``; the synthetic dataset is a folder named by the fingerprint of its spec.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seg.artifacts import write_json


def fingerprint(key: Any, length: int = 12) -> str:
    """A short hex digest (SHA-1) of ``key``, any JSON-serialisable value."""
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:length]


def cached_json(
    cache_dir: str | os.PathLike[str], kind: str, key: Any, compute: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """The JSON object cached for ``(kind, key)`` in ``cache_dir``, computed and written if absent.

    The file is written atomically, so concurrent runs and interrupted writes never leave a
    half-written cache behind.
    """
    path = Path(cache_dir) / f"{kind}-{fingerprint(key)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    write_json(path, value)
    return value
