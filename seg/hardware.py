"""What this machine can do fast, detected at run time (never assumed)."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from pathlib import Path
from typing import Any

import torch

from seg.errors import SegError

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@functools.cache
def cpuinfo() -> dict[str, str]:
    """The first processor's fields in ``/proc/cpuinfo`` (``model name``, ``flags``...); empty
    where the system has no such file."""
    path = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(errors="ignore").splitlines():
            if not line.strip():
                break  # the end of the first processor's block
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name() -> str:
    """The CPU's model name, e.g. ``Intel(R) Xeon(R) Platinum 8480C``."""
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX).

    Without it, bf16 autocast on CPU emulates the arithmetic and convolutions can run many
    times slower than fp32, so the CPU trainer falls back to 32-bit.
    """
    if "flags" in cpuinfo():
        return any(flag in cpuinfo()["flags"].split() for flag in _BF16_FLAGS)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def mps_available() -> bool:
    """True on Apple silicon with PyTorch's Metal (MPS) backend."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def best_precision(accelerator: str = "auto") -> str:
    """The fastest safe Lightning ``precision`` for ``accelerator`` (``cpu``, ``gpu``, ``mps`` or
    ``auto``).

    GPU: ``bf16-mixed`` where the card supports it, else ``16-mixed``. Apple MPS: ``32-true``
    (mixed precision there is not checked by this project). CPU: ``bf16-mixed`` with native bf16,
    else ``32-true``. ``auto`` means a CUDA GPU when one is present, else MPS, else the CPU, as
    Lightning's ``accelerator=auto`` chooses.
    """
    if accelerator not in ("auto", "cpu", "gpu", "cuda", "mps"):
        raise ValueError(f"unknown accelerator {accelerator!r}; expected auto, cpu, gpu or mps")
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed"
        return "16-mixed"
    if accelerator == "mps":
        return "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


#: glibc's own mmap and trim thresholds before they adapt: freed blocks above 128 KiB go back.
GLIBC_DEFAULT_THRESHOLD = 128 * 1024


def tune_allocator(keep_bytes: int = 1 << 30) -> bool:
    """Keep large freed blocks in the process (glibc) instead of returning them to the system.

    glibc hands allocations above a (dynamic, at most 32 MiB) threshold straight back to the
    kernel on free, so every training step page-faults its large activations in again. Raising
    the mmap and trim thresholds to ``keep_bytes`` makes a U-Net step at 256x256, batch 16, about
    1.5x faster on CPU; the cost is that the process keeps its peak memory, so a process that
    changes phase (training to validation) should ``release_memory`` between them. Returns
    whether it applied (glibc only).
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    value = min(keep_bytes, 2**31 - 1)  # mallopt takes a C int
    return bool(mallopt(m_mmap_threshold, value)) and bool(mallopt(m_trim_threshold, value))


def untune_allocator() -> bool:
    """Return freed blocks above 128 KiB to the system again, as glibc does by default: for
    processes forked from a tuned one that only decode and hold little (loader workers)."""
    return tune_allocator(GLIBC_DEFAULT_THRESHOLD)


def _mallopt() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return None


def release_memory() -> None:
    """Return freed heap memory to the system now (glibc ``malloc_trim``), e.g. before measuring RSS."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is not None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


def resolve_device(device: str) -> torch.device:
    """The device ``device`` names: ``auto`` (a CUDA GPU when present, else Apple MPS, else the
    CPU), ``cpu``, ``cuda`` (``cuda:N``) or ``mps``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise SegError(f"device={device!r} is not valid: expected auto, cpu, cuda or mps")
    return torch.device(device)
