"""Keep a long job's memory flat: large buffers get their own mappings, returned on free.

The cause this fixes (issue 20; measured on 2 cores over 800-3,000-video ``dfe predict`` jobs
with ``mallinfo2``, ``/proc/PID/smaps``, ``memray`` and ``tracemalloc``, see the README's "Long
jobs"): glibc's ``malloc`` serves a block of at least ``M_MMAP_THRESHOLD`` bytes from a mapping
of its own, which ``free`` returns to the OS, but the threshold is *dynamic*: the first time
such a block is freed, it is raised to that block's size (up to 32 MiB on 64-bit). After the
first decoded 1080p frame (6.2 MB) is freed, frames, letterboxed images and detector batches
all come from the heaps of the allocating thread's arena (up to 8 arenas per core). The
pipeline allocates them in decoder threads and frees them in others, in sizes that change from
video to video, between small blocks that live on; a heap only shrinks from its top, so the
freed space stays resident and the heaps grow as new sizes do not fit old holes. Measured:
glibc's bytes in use stayed flat while its freed-but-held bytes grew (300 to 490 MB over 2,000
videos, on main as of b00917d), all in the thread arenas' heaps; ``memray``'s live
heap was the same with and without the fix (410-450 MB, frames in flight included) while RSS
stood 460 MB above it without and 175 MB with; Python's objects stayed at 35-42 MB.

The fix is glibc's own knob, applied by the engine so that every entry point gets it (the CLI,
the server, Ray actors, the Python API): a fixed ``M_MMAP_THRESHOLD`` (setting it also turns the
dynamic adjustment off, ``mallopt(3)``) of :data:`MMAP_THRESHOLD` bytes. Frames and batches are
then mapped and unmapped with each video and never fragment the heaps: on a 2,000-video job
glibc's heaps held 76-92 MB instead of 480-580 MB, and RSS after warm-up was 490-620 MB instead
of 770-890 MB, without a slope. The cost is the page faults of fresh mappings: allocating and
writing a 6.2 MB frame took 1.2-1.5 ms instead of 0.1 ms (median of 200, 2 cores).

It changes the whole process's allocator, so it is skipped when the user has set
``MALLOC_MMAP_THRESHOLD_`` (glibc applied that at start-up) and can be turned off with
``DFE_MMAP_THRESHOLD=0`` (or set to another size in bytes). On a C library other than glibc
nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import threading
from dataclasses import dataclass

from engine.core.errors import InvalidInputError
from engine.core.paths import env

log = logging.getLogger(__name__)

#: Blocks of at least this many bytes get their own mapping (glibc's initial default is 128 KiB,
#: then it adapts up to 32 MiB). 1 MiB keeps frames (480p: 1.2 MB, 1080p: 6.2 MB), letterboxed
#: detector inputs and classifier batches out of the heaps, and the many small blocks in them.
MMAP_THRESHOLD = 1 << 20
#: glibc's ``mallopt`` parameter numbers (``<malloc.h>``).
M_MMAP_THRESHOLD = -3
#: glibc refuses thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit).
MAX_MMAP_THRESHOLD = 32 << 20


@dataclass(frozen=True)
class AllocatorTuning:
    """What :func:`tune_allocator` did: ``applied`` (mallopt succeeded), the threshold in bytes
    (None when left alone) and why."""

    applied: bool
    mmap_threshold: int | None
    reason: str


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_lock = threading.Lock()
_tuning: AllocatorTuning | None = None


def _libc() -> ctypes.CDLL | None:
    """glibc, or None on another C library (musl, macOS, Windows)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def configured_threshold() -> int | None:
    """The threshold to apply: ``$DFE_MMAP_THRESHOLD`` bytes (0: none), else
    :data:`MMAP_THRESHOLD`. Raises :class:`InvalidInputError` for a value that is not an
    integer in [0, 32 MiB]."""
    value = env("DFE_MMAP_THRESHOLD")
    if value is None:
        return MMAP_THRESHOLD
    try:
        size = int(value)
    except ValueError:
        size = -1
    if not 0 <= size <= MAX_MMAP_THRESHOLD:
        raise InvalidInputError(
            f"DFE_MMAP_THRESHOLD={value!r}: expected a size in bytes from 0 (leave glibc's "
            f"allocator alone) to {MAX_MMAP_THRESHOLD} (32 MiB); the default is {MMAP_THRESHOLD}"
        )
    return size or None


def tune_allocator() -> AllocatorTuning:
    """Give blocks of at least :func:`configured_threshold` bytes their own mappings (glibc's
    ``mallopt(M_MMAP_THRESHOLD, ...)``, which also stops the threshold from adapting), once per
    process; later calls return the first result. See the module docstring for why."""
    global _tuning
    with _lock:
        if _tuning is None:
            _tuning = _tune()
            log.debug("allocator: %s", _tuning)
        return _tuning


def _tune() -> AllocatorTuning:
    threshold = configured_threshold()
    if threshold is None:
        return AllocatorTuning(False, None, "DFE_MMAP_THRESHOLD=0: glibc's defaults kept")
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return AllocatorTuning(
            False, None, "MALLOC_MMAP_THRESHOLD_ is set: glibc applied it at start-up"
        )
    libc = _libc()
    if libc is None:
        return AllocatorTuning(False, None, "not glibc: nothing to tune")
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    if libc.mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        return AllocatorTuning(False, None, f"mallopt(M_MMAP_THRESHOLD, {threshold}) failed")
    return AllocatorTuning(True, threshold, f"blocks >= {threshold} bytes are mmapped")


def heap_stats() -> dict[str, int] | None:
    """glibc's ``mallinfo2()`` over all arenas, in bytes: ``heap`` (obtained for the heaps),
    ``in_use`` and ``free`` (held in the heaps, not in use), ``mmapped`` (blocks with their
    own mapping). None where glibc < 2.33 or another C library."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {
        "heap": info.arena,
        "in_use": info.uordblks,
        "free": info.fordblks,
        "mmapped": info.hblkhd,
    }
