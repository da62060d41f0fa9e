"""Batch-job plumbing for ``dfe predict``: expand inputs, write records, resume.

Every input gets exactly one record: a path that does not exist or a glob that matches nothing
becomes an error record too, so nothing is silently skipped. Records are flushed one by one, so
an interrupted job loses nothing already scored, and ``--resume`` skips what the output holds.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from engine.core.errors import InvalidInputError
from engine.core.records import RECORD_FIELDS, csv_row

log = logging.getLogger(__name__)

OUTPUT_FORMATS = (".jsonl", ".csv")
_GLOB_CHARS = set("*?[")


def expand_inputs(inputs: list[str]) -> Iterator[str]:
    """Files as given; directories recursively (every regular, non-hidden file, sorted); globs
    expanded (recursive ``**`` allowed). Unmatched patterns and missing paths are yielded as they
    are, so the job records an error for them."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not files:
                log.warning("directory %s holds no files", p)
            yield from (str(f) for f in files)
        elif not p.exists() and _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                yield item  # recorded as "not found"
            for m in matches:
                if Path(m).is_dir():
                    yield from expand_inputs([m])
                else:
                    yield m
        else:
            yield item


def output_format(path: Path | None) -> str:
    if path is None:
        return ".jsonl"
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise InvalidInputError(
            f"--out {path}: unsupported format {suffix!r}; supported values are "
            f"{', '.join(OUTPUT_FORMATS)}"
        )
    return suffix


def already_scored(path: Path) -> set[str]:
    """Videos recorded in an existing output file (any status)."""
    if not path.is_file():
        return set()
    done: set[str] = set()
    if output_format(path) == ".csv":
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if row.get("video"):
                    done.add(row["video"])
        return done
    with path.open() as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                done.add(json.loads(line)["video"])
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s line %d is not a record (an interrupted write?); ignored", path, n)
    return done


class RecordWriter:
    """Writes one record per video to JSONL or CSV (or JSONL to a stream), flushing each.

    CSV has one column per field of the record schema (:data:`engine.core.records.RECORD_FIELDS`;
    lists and dicts as JSON text), so no field is dropped."""

    def __init__(self, path: Path | None, *, append: bool, stream: IO[str] | None = None) -> None:
        self.path = path
        self.format = output_format(path)
        if path is None:
            self._file = stream
            self._own = False
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not (append and path.is_file() and path.stat().st_size > 0)
            self._file = path.open("a" if append else "w", newline="")
            self._own = True
            if self.format == ".jsonl" and not fresh:
                self._terminate_last_line(path)
        self._csv = None
        if self.format == ".csv":
            self._csv = csv.DictWriter(self._file, fieldnames=RECORD_FIELDS)
            if path is None or fresh:
                self._csv.writeheader()

    def _terminate_last_line(self, path: Path) -> None:
        with path.open("rb") as f:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                self._file.write("\n")

    def write(self, record: dict[str, Any]) -> None:
        if self._csv is not None:
            self._csv.writerow(csv_row(record))
        else:
            self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._own:
            self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
