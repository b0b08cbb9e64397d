"""Seeding and device selection: the two things that make a run repeatable and portable."""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

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
