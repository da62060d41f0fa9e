"""Keep a long job's memory flat: the free pages glibc's heaps hold are returned to the OS.

The cause (issue 20; measured on 2 cores over 800-3,000-video ``dfe predict`` jobs with
``mallinfo2``, ``/proc/PID/smaps``, ``memray`` and ``tracemalloc``, see docs/performance.md's "Long
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
heap was the same with and without a fix (410-450 MB, frames in flight included) while RSS
grew; Python's objects stayed at 35-42 MB.

The fix, applied by the engine so that every entry point gets it (the CLI, the server, Ray
actors, the Python API): after each video, at most once per :data:`TRIM_INTERVAL` seconds,
:func:`release_free_memory` calls glibc's ``malloc_trim(0)``, which hands every whole free page
of every arena back to the OS (``MADV_DONTNEED``), wherever it lies in the heap. Frames keep
coming from the heaps between trims. On a 2,000-video ``dfe predict`` job at N=4 (1080p and
480p clips) RSS after warm-up stayed at 690-790 MB with a fitted slope of -0.6 MB per 1,000
videos (standard error 6). The pages a trim releases are faulted in again by the next frames,
so trimming costs CPU in proportion to how often it runs: with the single-threaded stages of
:mod:`core.compute` (~2 videos/s on 2 cores, 24 1080p videos at N=20) a trim every 2 s
cost 1,082 ms of CPU per video against 1,016 every 30 s and 990 never (converting a decoded
frame to BGR took 3.4 ms instead of 1.9, in fresh pages). The interval is therefore 30 s: a
long job's free pages still go back twice a minute, while the heaps grow by a few MB at most
between trims.

An alternative with a lower level and a cost in speed is glibc's own knob, a fixed
``M_MMAP_THRESHOLD`` (``mallopt(3)``; setting it also turns the dynamic adjustment off):
``DFE_MMAP_THRESHOLD=1048576`` gives every block of 1 MiB or more its own mapping, unmapped on
free. Measured on the same kind of job: glibc's heaps held 76-92 MB instead of 480-580 MB and
RSS after warm-up was 490-620 MB, flat; but each frame then page-faults afresh (allocating and
writing a 6.2 MB frame took 1.2-1.5 ms instead of 0.1 ms) and a 24-video N=20 job on 1080p clips
spent 12% more CPU (system time 150 ms per video instead of 33 ms), so it is not the default.
It is skipped when the user has set ``MALLOC_MMAP_THRESHOLD_`` (glibc applied that at start-up).
``DFE_MALLOC_TRIM_INTERVAL=0`` turns the trimming off. On a C library other than glibc nothing
is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass

from core.errors import InvalidInputError
from core.paths import env

log = logging.getLogger(__name__)

#: A threshold that keeps frames (480p: 1.2 MB, 1080p: 6.2 MB), letterboxed detector inputs and
#: classifier batches out of the heaps (glibc's initial default is 128 KiB, then it adapts up to
#: 32 MiB): what ``DFE_MMAP_THRESHOLD`` was measured with. Not applied unless asked for.
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
    """The fixed mmap threshold to apply: ``$DFE_MMAP_THRESHOLD`` bytes, else None (0 or unset:
    glibc's adaptive threshold, with :func:`release_free_memory` keeping RSS flat). Raises
    :class:`InvalidInputError` for a value that is not an integer in [0, 32 MiB]."""
    value = env("DFE_MMAP_THRESHOLD")
    if value is None:
        return None
    try:
        size = int(value)
    except ValueError:
        size = -1
    if not 0 <= size <= MAX_MMAP_THRESHOLD:
        raise InvalidInputError(
            f"DFE_MMAP_THRESHOLD={value!r}: expected a size in bytes from 0 (glibc's adaptive "
            f"threshold, the default) to {MAX_MMAP_THRESHOLD} (32 MiB), e.g. {MMAP_THRESHOLD}"
        )
    return size or None


def tune_allocator() -> AllocatorTuning:
    """When ``$DFE_MMAP_THRESHOLD`` asks for it, give blocks of at least that many bytes their
    own mappings (glibc's ``mallopt(M_MMAP_THRESHOLD, ...)``, which also stops the threshold from
    adapting), once per process; later calls return the first result. By default nothing is
    changed here (:func:`release_free_memory` keeps RSS flat). See the module docstring."""
    global _tuning
    with _lock:
        if _tuning is None:
            _tuning = _tune()
            log.debug("allocator: %s", _tuning)
        return _tuning


def _tune() -> AllocatorTuning:
    trim_interval()  # a bad $DFE_MALLOC_TRIM_INTERVAL fails here, at load, not after a video
    threshold = configured_threshold()
    if threshold is None:
        return AllocatorTuning(
            False, None, "glibc's adaptive mmap threshold kept; free pages are trimmed after videos"
        )
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


#: Seconds between two :func:`release_free_memory` calls that trim (``$DFE_MALLOC_TRIM_INTERVAL``).
TRIM_INTERVAL = 30.0
_last_trim = 0.0
_trim_lock = threading.Lock()


def trim_interval() -> float:
    """``$DFE_MALLOC_TRIM_INTERVAL`` seconds (0: never trim), else :data:`TRIM_INTERVAL`.
    Raises :class:`InvalidInputError` for a value that is not a number >= 0."""
    value = env("DFE_MALLOC_TRIM_INTERVAL")
    if value is None:
        return TRIM_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise InvalidInputError(
            f"DFE_MALLOC_TRIM_INTERVAL={value!r}: expected seconds >= 0 (0: never trim); the "
            f"default is {TRIM_INTERVAL}"
        )
    return seconds


def release_free_memory() -> bool:
    """Return the free pages held in glibc's heaps to the OS (``malloc_trim(0)``, which since
    glibc 2.8 releases every whole free page of every arena, not only a heap's top), at most
    once per :func:`trim_interval` seconds per process; True when it trimmed now. Called by the
    pipeline after each video. A no-op on another C library."""
    global _last_trim
    interval = trim_interval()
    if not interval:
        return False
    now = time.monotonic()
    with _trim_lock:
        if now - _last_trim < interval:
            return False
        _last_trim = now
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    libc.malloc_trim.restype = ctypes.c_int
    libc.malloc_trim(0)
    return True
