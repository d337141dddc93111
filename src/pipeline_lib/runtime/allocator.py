"""glibc's malloc told to keep freed memory in the heap, so that a training step's
activations do not fault their pages in again at every step.

With glibc's defaults a block above the (dynamic) mmap threshold is a fresh ``mmap`` each
time and freed memory at the top of the heap above the trim threshold goes back to the OS;
a network that allocates and frees the same activation sizes every step then pays a page
fault per 4 kB page, every step. Measured on the 2-core VM (bench/README.md, "The allocator"):
a 3-epoch cnn2 run took 0.3-1.7 M minor faults and 0.5-2.4 s of system time for 9-10 s of
user time; with the settings below 35 k faults and 0.06 s, the same peak RSS.
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h) and its largest mmap threshold on 64-bit systems:
# every block up to that size is served from the heap and reused.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


def retain_freed_memory() -> bool:
    """Process-wide, glibc only (a no-op elsewhere); returns whether both settings took. Called
    where a process starts (``step.run_step``, the benches), not inside library functions."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap_ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
        trim_ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        return mmap_ok and trim_ok
    except (OSError, AttributeError):  # another C library (musl) or no libc.so.6
        return False
