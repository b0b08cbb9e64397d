"""The process settings training runs under."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# In a fresh interpreter, so the process-wide setting does not leak into other tests: the
# median page faults of seven steps that allocate, write and free 64 MB, before and after the
# call, each after five warm-up steps (the heap takes a few steps to grow room for the block).
# The median, because a single step can still be served by a fresh mapping now and then (seen
# once in CI: one block faulted in again among five steps).
FAULTS_WITHOUT_AND_WITH = """
import resource, statistics, torch
from kgserver.training.runtime import retain_freed_memory

def median_faults_per_step():
    for _ in range(5):
        torch.ones(64 * 2**20 // 4)
    faults = []
    for _ in range(7):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(64 * 2**20 // 4)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(faults)

default = median_faults_per_step()
retain_freed_memory()
print(default, median_faults_per_step())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_retained_memory_is_reused_without_faulting_it_in_again() -> None:
    out = subprocess.run([sys.executable, "-c", FAULTS_WITHOUT_AND_WITH], check=True, capture_output=True, text=True)
    default, retained = map(int, out.stdout.split())
    block_pages = 64 * 2**20 // 4096
    assert default > block_pages / 2  # glibc maps a fresh 64 MB block each time and faults it in page by page
    assert retained < block_pages / 100
