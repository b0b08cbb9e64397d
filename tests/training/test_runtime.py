"""The process settings training runs under."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# In a fresh interpreter, so the process-wide setting does not leak into other tests: page
# faults of five steps that allocate, write and free 64 MB, before and after the call, each
# after five warm-up steps (the heap takes a few steps to grow room for the block).
FAULTS_WITHOUT_AND_WITH = """
import resource, torch
from kgserver.training.runtime import retain_freed_memory

def faults_of_five_steps():
    for _ in range(5):
        torch.ones(64 * 2**20 // 4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(64 * 2**20 // 4)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults_of_five_steps()
retain_freed_memory()
print(default, faults_of_five_steps())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_retained_memory_is_reused_without_faulting_it_in_again() -> None:
    out = subprocess.run([sys.executable, "-c", FAULTS_WITHOUT_AND_WITH], check=True, capture_output=True, text=True)
    default, retained = map(int, out.stdout.split())
    assert default > 5 * 10_000  # glibc maps a fresh 64 MB block each time and faults it in page by page
    assert retained < default / 100
