"""scorer.serving.resources: the worker's memory bound (RLIMIT_DATA) and its 'auto' size."""

from __future__ import annotations

import subprocess
import sys

import psutil

from scorer.serving.resources import memory_limit_bytes


def test_settings_map_to_bytes() -> None:
    assert memory_limit_bytes("off", "cpu") is None
    assert memory_limit_bytes("2048", "cpu") == 2048 << 20
    assert memory_limit_bytes("auto", "cuda") is None  # the CUDA driver maps host memory


def test_auto_is_what_the_worker_has_plus_most_of_what_is_free() -> None:
    limit = memory_limit_bytes("auto", "cpu")
    assert limit is not None
    free = psutil.virtual_memory().available
    assert 0.8 * free < limit < free + psutil.Process().memory_info().vms


def test_an_allocation_past_the_limit_is_a_memory_error_not_a_kill() -> None:
    script = (
        "from scorer.serving.resources import limit_memory\n"
        "limit_memory(512 << 20)\n"
        "blocks = []\n"
        "try:\n"
        "    while True:\n"
        "        blocks.append(bytearray(b'x' * (64 << 20)))\n"
        "except MemoryError:\n"
        "    print('memory-error', len(blocks))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    kind, blocks = done.stdout.split()
    assert kind == "memory-error" and 1 <= int(blocks) < 8
