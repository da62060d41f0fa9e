"""Labelled video lists: the ``file,label`` CSV of ``dfe eval`` and ``dfe train``.

The format is the original's ``Gobal_metadata.csv``: one ``file,label`` row per video, labels
``REAL``/``FAKE`` in any case, with or without a header row. Class order is the original's:
FAKE first, then REAL (its label indices 0 and 1, :data:`core.reduce.LABELS`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from core.errors import InvalidInputError

#: Class names in index order: FAKE = 0, REAL = 1 (the original's ``FAKE -> 0, REAL -> 1``).
CLASSES = ("FAKE", "REAL")
#: Second-column words of a header row; any other unknown label on line 1 is an error (a typo
#: like ``FAEK`` must not make the first video vanish as a "header").
HEADER_WORDS = frozenset(("label", "labels", "class", "classes", "target", "truth", "y"))


def read_labels(
    path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None
) -> list[tuple[str, str]]:
    """``(video path, label)`` pairs of a ``file,label`` CSV (REAL/FAKE, any case), with or
    without a header row, like the original's ``Gobal_metadata.csv``. Relative paths resolve
    against ``root`` (default: the labels file's directory).

    Raises :class:`InvalidInputError` for a missing file, a row without two columns, a label
    other than REAL/FAKE (naming the line), or a file without any row."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"labels file not found: {path}")
    base = Path(root) if root is not None else path.parent
    pairs: list[tuple[str, str]] = []
    with path.open(newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) < 2:
                raise InvalidInputError(f"{path} line {n}: expected 'file,label', got {row!r}")
            name, label = row[0].strip(), row[1].strip().upper()
            if label not in CLASSES:
                if n == 1 and not pairs and label.lower() in HEADER_WORDS:  # "file,label"
                    continue
                raise InvalidInputError(
                    f"{path} line {n}: label {row[1]!r} is not supported; supported values are "
                    "REAL, FAKE"
                )
            video = Path(name)
            pairs.append((str(video if video.is_absolute() else base / video), label))
    if not pairs:
        raise InvalidInputError(f"{path} holds no 'file,label' rows")
    check_consistent(pairs, source=str(path))
    return pairs


def check_consistent(pairs: list[tuple[str, str]], *, source: str = "labels") -> None:
    """Raise :class:`InvalidInputError` when one video (compared by real path: a symlink or
    ``./x/../v.mp4`` is the same file) is listed with both labels; a file listed twice with
    one label is fine (its duplicates are merged by the callers)."""
    seen: dict[str, tuple[str, str]] = {}
    clashes = []
    for video, label in pairs:
        real = os.path.realpath(video)
        first = seen.setdefault(real, (video, label))
        if first[1] != label:
            clashes.append(f"{video} ({label}; also listed as {first[0]}, {first[1]})")
    if clashes:
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        raise InvalidInputError(
            f"{source} lists {len(clashes)} video(s) with both labels: "
            + "; ".join(clashes[:3])
            + f"{more}. A metric over contradictory labels means nothing: fix the labels file"
        )
