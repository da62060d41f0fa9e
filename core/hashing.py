"""sha256 of files, read in chunks: the one helper every cache key, manifest and provenance uses.

:func:`sha256_file` always reads the file. :func:`file_sha256` remembers the digest of a file
for as long as its identity (device, inode, size and modification time in nanoseconds) does not
change, so a process that loads the same model many times (a server, a test run, a catalog)
hashes its graphs once; any rewrite of the file changes its identity and the digest is taken
again.
"""

from __future__ import annotations

import hashlib
import os
import threading

_CHUNK = 1 << 20
_CACHE: dict[tuple[int, int, int, int], str] = {}
_LOCK = threading.Lock()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 (hex) of the file at ``path``, read now. Raises ``OSError`` as ``open``."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 (hex) of the file at ``path``, read once per file identity (device, inode,
    size, ``st_mtime_ns``; see the module docstring). Raises ``OSError`` as ``os.stat``."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    digest = sha256_file(path)
    if os.stat(path).st_mtime_ns == st.st_mtime_ns:  # not rewritten while it was read
        with _LOCK:
            _CACHE[key] = digest
    return digest
