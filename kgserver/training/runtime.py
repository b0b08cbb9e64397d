"""The process settings training runs under: seeds, threads, deterministic kernels, the heap, the device."""

from __future__ import annotations

import ctypes
import platform
import random
from collections.abc import Iterator
from contextlib import contextmanager

import dgl
import numpy as np
import torch

from kgserver.errors import ConfigurationError


def seed_everything(seed: int) -> None:
    """Seed every random source training touches: Python, NumPy, torch and DGL's samplers.

    Call it before building the model too, so that weight initialisation repeats.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    dgl.seed(seed)


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` CPU threads for the duration (None: leave the setting alone)."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Make torch pick its deterministic kernels for the duration, then restore the setting.

    On the CPU this matters for the accumulating index backward (embedding rows
    gathered per edge), whose default kernel sums in a varying order. Kernels
    without a deterministic variant (on CUDA) warn instead of failing.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def retain_freed_memory() -> None:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel, process-wide.

    A training step allocates and frees tensors of up to hundreds of megabytes
    (per-edge attention, gradients). glibc hands out blocks above its mmap
    threshold (32 MB at most) as fresh mappings and unmaps them when freed, so
    every step faults its whole working set back in, page by page, zero-filled
    by the kernel. With mappings off and trimming at its maximum, freed blocks
    stay in the heap and the next step reuses them (the measured speed-up is in
    ``bench/RESULTS.md``). The cost is a
    resident size that stays at the run's peak until the process exits. Other C
    libraries have no such knobs; there this does nothing.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL("libc.so.6")
    for parameter, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)):
        if libc.mallopt(parameter, value) != 1:
            raise RuntimeError(f"glibc mallopt({parameter}, {value}) failed")


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a usable device, or a clear error.

    A CUDA device needs both torch and DGL built with CUDA (PyPI's DGL is CPU-only).
    """
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigurationError(f"unknown device {name!r}; use cpu or cuda[:N]") from error
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigurationError(f"unsupported device {name!r}; use cpu or cuda[:N]")
    if not torch.cuda.is_available():
        raise ConfigurationError(
            f"--device {name} was requested but no CUDA device is available to torch "
            "(torch.cuda.is_available() is False); use --device cpu"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigurationError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    try:
        dgl.graph(([0], [0])).to(device)
    except dgl.DGLError as error:
        raise ConfigurationError(
            f"--device {name}: this DGL build has no CUDA support ({error}); install a CUDA build of DGL "
            "or use --device cpu"
        ) from error
    return device
