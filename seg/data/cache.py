"""Derived data computed once and kept on disk, recomputed when what it came from changes.

Class weights and k-means colour clusters are JSON files named ``<kind>-<fingerprint>.json`` in
``data.cache_dir``. The fingerprint is of the inputs that say *which* value it is (the dataset's
file list, the mask format, the class count); the file also records a stamp of every file the value
was computed from, so that a dataset fixed or replaced at the same paths is noticed: a cached
value whose files changed is computed again, with one log line that says which files changed.

A stamp is a file's size and modification time (ns), plus a SHA-1 digest of its bytes when the
files read add up to at most ``DIGEST_LIMIT`` bytes. Masks are small and hashing them is cheap
next to decoding them (468 generated 480x360 label PNGs, CamVid's count and size: 6 ms to hash,
150 ms to decode on one core), so for class weights the digest is nearly always kept; it catches
an edit that keeps the size and the time (a coarse-grained filesystem clock, ``cp -p``), and a
file only touched is not counted as changed. Above the limit (photos with their labels beside
them, very large datasets), sizes and times alone are compared, so a cache hit never reads
gigabytes twice.

The synthetic dataset is a folder named by the fingerprint of its spec: it is generated, never
edited, so the spec is all it depends on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seg.artifacts import write_json

log = logging.getLogger(__name__)

#: Files read for one cached value are hashed when they add up to at most this many bytes.
DIGEST_LIMIT = 256 * 2**20

#: How many changed files a log line names.
NAMED = 3


def fingerprint(key: Any, length: int = 12) -> str:
    """A short hex digest (SHA-1) of ``key``, any JSON-serialisable value."""
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Sources:
    """The files a cached value is computed from, and how a log line names them.

    Args:
        paths: every file the computation reads.
        noun: what they are, plural ("training masks").
        root: log lines name files relative to it (default: their common folder's parent).
    """

    paths: Sequence[Path]
    noun: str = "files"
    root: Path | None = None

    def name(self, path: str) -> str:
        """``path`` as a log line shows it: relative to ``root`` where it lies under it."""
        root = self.root
        if root is None:
            common = Path(os.path.commonpath([str(p) for p in self.paths]))
            root = common.parent if len(self.paths) > 1 else common.parent.parent
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            return path


def _digest(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha1").hexdigest()


def stamp_files(paths: Sequence[Path], digests: bool) -> dict[str, list[Any]]:
    """``{path: [size, mtime_ns, sha1 or None]}`` for every file of ``paths`` (``None`` if missing)."""
    stamps: dict[str, list[Any]] = {}
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            stamps[str(path)] = [None, None, None]
            continue
        stamps[str(path)] = [stat.st_size, stat.st_mtime_ns, _digest(path) if digests else None]
    return stamps


def _wants_digests(paths: Sequence[Path]) -> bool:
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(path).st_size
        if total > DIGEST_LIMIT:
            return False
    return True


def changed_files(recorded: dict[str, Any], sources: Sources) -> tuple[list[str], bool]:
    """The files of ``sources`` that differ from their ``recorded`` stamps, and whether any stamp
    is out of date although the file is not (touched only: same digest, new time)."""
    digests = bool(recorded.get("digests"))
    files: dict[str, list[Any]] = recorded.get("files", {})
    now = stamp_files(sources.paths, digests)
    changed, stale = [], False
    for path, stamp in now.items():
        before = files.get(path)
        if before is None or before[0] != stamp[0]:
            changed.append(path)  # new, gone or resized
        elif before[2 if digests else 1] != stamp[2 if digests else 1]:
            changed.append(path)  # other bytes (digests), or a new time (without them)
        elif before[1] != stamp[1]:
            stale = True  # the same bytes, touched
    return changed, stale


def cached_json(
    cache_dir: str | os.PathLike[str],
    kind: str,
    key: Any,
    compute: Callable[[], dict[str, Any]],
    sources: Sources | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """The JSON object cached for ``(kind, key)`` in ``cache_dir``, computed and written if absent
    or if any file of ``sources`` changed since (one info line, naming ``label``, says which).

    The file is written atomically, so concurrent runs and interrupted writes never leave a
    half-written cache behind. Stamps are taken before ``compute`` runs, so a file edited while
    it runs is seen as changed next time rather than missed.
    """
    path = Path(cache_dir) / f"{kind}-{fingerprint(key)}.json"
    label = label or kind
    paths = list(sources.paths) if sources is not None else []
    stored = json.loads(path.read_text()) if path.is_file() else None
    if stored is not None and "value" in stored and sources is None:
        return stored["value"]
    if stored is not None and stored.get("sources") is None:
        log.info("%s: the cached copy records no file stamps (an older version wrote it); recomputing", label)
    elif stored is not None and sources is not None:
        recorded = stored["sources"]
        changed, stale = changed_files(recorded, sources)
        if not changed:
            if stale:  # only touched: keep the value, record the new times
                stamps = stamp_files(paths, recorded["digests"])
                write_json(path, {"value": stored["value"], "sources": {**recorded, "files": stamps}})
            return stored["value"]
        named = ", ".join(sources.name(p) for p in changed[:NAMED])
        more = f" and {len(changed) - NAMED} more" if len(changed) > NAMED else ""
        log.info(
            "%s: %d of %d %s changed since they were cached (%s%s); recomputing",
            label, len(changed), len(paths), sources.noun, named, more,
        )  # fmt: skip
    digests = _wants_digests(paths)
    recorded = {"digests": digests, "files": stamp_files(paths, digests)} if sources is not None else None
    value = compute()
    write_json(path, {"value": value, "sources": recorded})
    return value
