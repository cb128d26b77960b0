"""Keep freed memory for reuse instead of returning it to the system after every step.

Why: glibc hands each tensor above its mmap threshold (32 MiB at most, by default set by
the sizes it has seen) straight to the kernel, and returns freed heap above 128 kB. A
scoring step on a large network allocates and frees the same activations every step, so
the kernel maps, zeroes and unmaps them again and again: on EfficientNet-Lite0 (batch 20,
224 px) 12 of 27 CPU-seconds went to the kernel, and a step took twice as long as with the
memory kept (docs/performance.md). Tuned here with mallopt, as MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ would be; elsewhere than glibc nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: only bigger blocks are mapped on their own
TOP_PAD = 2**30
TRIM_THRESHOLD = 2**31 - 1  # the most mallopt takes: 2 GiB of free heap is kept


@functools.cache
def keep_freed_memory() -> bool:
    """True where glibc's allocator took the settings."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = {
        M_MMAP_THRESHOLD: MMAP_THRESHOLD,
        M_TOP_PAD: TOP_PAD,
        M_TRIM_THRESHOLD: TRIM_THRESHOLD,
    }
    return all(mallopt(option, value) == 1 for option, value in settings.items())
