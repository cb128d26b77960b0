"""Keep freed memory for reuse instead of returning it to the system after every step.

Why: glibc hands each block above its mmap threshold (32 MiB at most) straight to the
kernel, and returns freed heap above 128 kB. A scoring step on a large network allocates
and frees the same activations every step, so the kernel maps, zeroes and unmaps them again
and again: on EfficientNet-Lite0 (batch 20, 224 px) 12 of 27 CPU-seconds went to the
kernel, and a step took twice as long as with the memory kept (docs/performance.md).

Why no block is mapped on its own, whatever its size: glibc maps a block above the threshold
only when no free heap fits it. After the budget search, Lite0's heap held 2.4 GiB free in
pieces too small for the filter sheets' activations (98 images at 224 px), so each step of
the drawing mapped and faulted them in anew: 740 thousand page faults and 1.7 s of kernel
time a step, 2.0 s a step against 0.9 s with the heap grown instead; the extract's drawing
took 120 s against 50 s. Why never trim: a step that frees more than the trim threshold
at the heap's top would give it back and fault it in again on the next. The process keeps
its peak heap.

Tuned here with mallopt, as MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_
would be; elsewhere than glibc nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
TOP_PAD = 2**30  # the heap grows by at least 1 GiB at a time
NEVER = -1  # M_TRIM_THRESHOLD's "never trim"


@functools.cache
def keep_freed_memory() -> bool:
    """True where glibc's allocator took the settings."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = {M_MMAP_MAX: 0, M_TOP_PAD: TOP_PAD, M_TRIM_THRESHOLD: NEVER}
    return all(mallopt(option, value) == 1 for option, value in settings.items())
