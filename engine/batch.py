"""Batch-job plumbing of ``dfe predict`` and ``dfe score``: which inputs, where records go, and
what ``--resume`` may count as done.

The guarantees (docs/scoring.md, "What a scoring job guarantees"):

- **Every input is accounted for.** Directories are walked recursively, following symlinked
  folders (each real folder once, so a link cycle ends); files found there whose extension is
  not a video's (:data:`VIDEO_EXTENSIONS`) and hidden files are counted and listed as skipped,
  not scored; a file given by name is always tried, and a missing path or an unmatched glob gets
  an error record. The same file reached by two paths (a symlink, ``./x/../v.mp4``, an absolute
  path) is scored once. The output never counts as an input.
- **Results are never destroyed.** An existing non-empty output is refused unless ``--resume``
  (add to it) or ``--overwrite`` (replace it: the new records go to a temporary file renamed
  over the old one when the job ends, so an interrupted job leaves the old file as it was).
  Records are appended one by one with ``os.write`` and are on disk when the next video starts;
  a write that fails (disk full, quota, I/O error) is cut back to the last complete record and
  ends the job with :class:`~core.errors.OutputError`; a torn last line left by a killed
  job is removed when the file is resumed.
- **Resume means the same work.** A record counts as done only when it is ``ok``, its input is
  the same file unchanged (:func:`engine.provenance.same_input`) and it was made by the same
  model, detector and score-changing settings (:func:`engine.provenance.differences`); a
  file holding ``ok`` records made otherwise is refused, naming what differs. Error records and
  records of changed files are scored again and replaced, so a resumed file holds one record
  per input.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import io
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.errors import InvalidInputError, OutputError
from engine.provenance import differences, input_identity, same_input
from engine.records import RECORD_FIELDS, csv_row, from_csv_row
from preprocess.video import is_animated_image

log = logging.getLogger(__name__)

OUTPUT_FORMATS = (".jsonl", ".csv")
_GLOB_CHARS = set("*?[")
#: File extensions a directory walk scores (lower case). A file named explicitly is tried
#: whatever its name; what cannot be decoded gets an error record.
# fmt: off
VIDEO_EXTENSIONS = frozenset((
    ".3g2", ".3gp", ".asf", ".avi", ".dv", ".f4v", ".flv", ".gif", ".h264", ".h265", ".hevc",
    ".m2t", ".m2ts", ".m2v", ".m4v", ".mj2", ".mjpeg", ".mk3d", ".mkv", ".mov", ".mp4", ".mpeg",
    ".mpg", ".mts", ".mxf", ".nut", ".ogg", ".ogv", ".qt", ".rm", ".rmvb", ".ts", ".vob", ".webm",
    ".wmv", ".y4m", ".apng",
))
# fmt: on
#: Image extensions a walk scores only when the file is an animation (animated WebP and PNG:
#: ``preprocess.video.is_animated_image``, which reads only the headers); still ones are
#: skipped as still images.
ANIMATION_EXTENSIONS = frozenset((".webp", ".png"))
#: Free bytes below which an output's file system counts as full before the job starts.
MIN_FREE_BYTES = 1 << 20


# ------------------------------------------------------------------------------ inputs


@dataclass
class InputSet:
    """What a list of input arguments resolves to.

    ``paths``: what is scored, in order (files found or named, and missing paths or unmatched
    globs, which get an error record); ``skipped``: what a directory walk found and did not
    score, by reason (:data:`SKIP_REASONS`); ``duplicates``: paths naming a file already in
    ``paths``; ``excluded``: files left out because they are the job's own output."""

    paths: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False)

    @property
    def not_videos(self) -> list[str]:
        """Every path a directory walk skipped, whatever the reason."""
        return [p for paths in self.skipped.values() for p in paths]

    def skip(self, reason: str, path: str) -> None:
        self.skipped.setdefault(reason, []).append(path)

    @property
    def existing(self) -> int:
        """How many of ``paths`` exist."""
        return sum(os.path.exists(p) for p in self.paths)

    def add(self, path: str) -> None:
        real = os.path.realpath(path)
        if real in self._seen:
            self.duplicates.append(path)
            return
        self._seen.add(real)
        self.paths.append(path)

    def summary(self) -> str:
        """One line on what was left out (empty when nothing was)."""
        parts = []
        for reason, paths in self.skipped.items():
            names = ", ".join(Path(p).name for p in paths[:5])
            more = " ..." if len(paths) > 5 else ""
            parts.append(f"{len(paths)} skipped ({reason}): {names}{more}")
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} path(s) naming a file already listed, skipped")
        if self.excluded:
            parts.append(f"{len(self.excluded)} file(s) of the job's own output left out")
        return "; ".join(parts)


def is_video_name(path: str | os.PathLike[str]) -> bool:
    """Whether a file name has one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def collect_inputs(
    inputs: Iterable[str], *, exclude: Iterable[str | os.PathLike[str]] = ()
) -> InputSet:
    """Resolve input arguments (files, directories, globs) as the module docstring says.
    ``exclude``: paths (files or folders) that are never inputs, such as the job's output."""
    excluded = [os.path.realpath(e) for e in exclude]
    result = InputSet()

    def left_out(path: str) -> bool:
        """The output itself, what is inside it, and its hidden companions next to it (its
        lock, a replacement being written)."""
        real = os.path.realpath(path)
        head, name = os.path.split(real)
        return any(
            real == e
            or real.startswith(e + os.sep)
            or (head == os.path.dirname(e) and name.startswith(f".{os.path.basename(e)}."))
            for e in excluded
        )

    def walk(root: str) -> None:
        found: list[str] = []
        seen_dirs: set[tuple[int, int]] = set()
        for top, dirs, files in os.walk(root, followlinks=True):
            st = os.stat(top)
            if (st.st_dev, st.st_ino) in seen_dirs:  # a folder reached twice (a link cycle)
                dirs[:] = []
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            for d in sorted(dirs):
                path = os.path.join(top, d)
                if d.startswith(".") and not left_out(path):
                    result.skip("a hidden folder, not searched", path)
                elif not os.path.isdir(path):  # os.walk lists a dangling folder link here
                    found.append(path)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                found.append(os.path.join(top, name))
        if not found:
            log.warning("directory %s holds no files", root)
        for f in sorted(found):
            if left_out(f):
                result.excluded.append(f)
            elif os.path.islink(f) and not os.path.exists(f):
                result.skip("a link to nothing", f)
            elif not os.path.isfile(f):
                result.skip("not a regular file", f)
            elif Path(f).name.startswith("."):
                result.skip("hidden", f)
            elif Path(f).suffix.lower() in ANIMATION_EXTENSIONS:
                if is_animated_image(f):
                    result.add(f)
                else:
                    result.skip("a still image", f)
            elif not is_video_name(f):
                result.skip("not a video by name", f)
            else:
                result.add(f)

    for item in inputs:
        item = str(item)
        if os.path.isdir(item):
            walk(item)
        elif not os.path.exists(item) and _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                result.paths.append(item)  # recorded as "not found"
            for m in matches:
                if os.path.isdir(m):
                    walk(m)
                elif left_out(m):
                    result.excluded.append(m)
                else:
                    result.add(m)
        elif os.path.exists(item) and left_out(item):
            result.excluded.append(item)
        elif os.path.exists(item):
            result.add(item)
        else:
            result.paths.append(item)  # recorded as "not found"
    return result


def expand_inputs(inputs: list[str]) -> Iterator[str]:
    """The paths :func:`collect_inputs` scores (for commands that need only the list)."""
    yield from collect_inputs(inputs).paths


def require_videos(found: InputSet, inputs: Iterable[str]) -> None:
    """Raise :class:`InvalidInputError` when the inputs name no file that exists (a typo, an
    empty folder, a folder of other files): nothing would be scored."""
    if found.existing:
        return
    named = ", ".join(map(str, inputs))
    missing = [p for p in found.paths if not os.path.exists(p)]
    why = (
        [f"{', '.join(missing)} {'does' if len(missing) == 1 else 'do'} not exist"]
        if missing
        else []
    )
    if found.summary():
        why.append(found.summary())
    raise InvalidInputError(
        f"no video found in {named}" + (f" ({'; '.join(why)})" if why else "") + ". Nothing was "
        "scored or written. Check the paths; folders are searched, following symlinks, for "
        f"files with a video extension ({', '.join(sorted(VIDEO_EXTENSIONS)[:8])} ...); name a "
        "file explicitly to try it whatever its extension"
    )


# ------------------------------------------------------------------------------ outputs


def output_format(
    path: str | os.PathLike[str] | None,
    formats: Sequence[str] = OUTPUT_FORMATS,
    *,
    note: str = "",
) -> str:
    """The format of ``--out path`` from its suffix, lower case: one of ``formats`` (by default
    ``.jsonl`` or ``.csv``; JSONL for standard output, ``path`` None). Raises
    :class:`InvalidInputError` for another suffix, naming the supported ones (``note`` is said
    after the suffix, as :data:`engine.distributed.output_format`'s Ray job)."""
    if path is None:
        return ".jsonl"
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise InvalidInputError(
            f"--out {path}: unsupported format {suffix!r}{note}; supported values are "
            f"{', '.join(formats)}"
        )
    return suffix


def is_nonempty(path: Path) -> bool:
    """Whether ``path`` exists and holds something (a file with bytes, a folder with entries)."""
    if path.is_dir():
        return any(path.iterdir())
    return path.exists() and path.stat().st_size > 0


def holds_records(path: Path) -> bool:
    """Whether the file ``path`` starts as an output of ``dfe predict`` does (read from its
    first line, at most 1 MiB): for ``.csv`` a header with the ``video`` and ``status``
    columns; else a JSON object with ``video`` and ``status``, or one cut short (a torn last
    line of a killed job). An empty file holds nothing, so not records either: False."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20).decode("utf-8", errors="replace")
    except OSError:
        return False
    text = head.lstrip()
    line, newline, _ = text.partition("\n")
    if not line.strip():
        return False
    if Path(path).suffix.lower() == ".csv":
        header = next(csv.reader([line]), [])
        return "video" in header and "status" in header
    try:
        rec = json.loads(line)
    except ValueError:  # a first record cut short (killed while writing it) is still one
        return not newline and line.startswith('{"')
    return isinstance(rec, dict) and "video" in rec and "status" in rec


def resolve_output(path: Path) -> Path:
    """The file (or folder) an output path names: a symlink's target, so a job writes where
    the link points and never replaces the link by a file of its own."""
    return Path(os.path.realpath(path))


def check_output(path: Path, *, resume: bool, overwrite: bool, kind: str = "file") -> None:
    """Before anything is loaded or scored: refuse an output that a job would destroy or
    cannot write. ``path`` is the resolved output (:func:`resolve_output`). Raises
    :class:`InvalidInputError` when ``path`` holds results and neither ``resume`` nor
    ``overwrite`` is given, or both are, or it is of the wrong kind; :class:`OutputError` when
    it cannot be created or written, or its file system is full. A file output's format
    (:func:`output_format`) is checked first, and a file that holds something other than
    records (:func:`holds_records`) is refused with ``resume`` or without either flag, named
    as such (it holds no results to keep or add to)."""
    if resume and overwrite:
        raise InvalidInputError("give --resume or --overwrite, not both")
    if path.exists() and kind == "file" and not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file"
        raise InvalidInputError(
            f"--out {path} is {what}; give a file name ending in "
            f"{' or '.join(OUTPUT_FORMATS)}"
            + (f", e.g. {path / 'results.jsonl'}" if path.is_dir() else "")
        )
    if path.exists() and kind == "directory" and not path.is_dir():
        raise InvalidInputError(
            f"--out {path} is a file; dfe score writes a folder named *.parquet or *.jsonl"
        )
    if kind == "file":
        output_format(path)  # an unsupported format is refused before anything loads
        if is_nonempty(path) and not overwrite and not holds_records(path):
            raise InvalidInputError(
                f"--out {path} holds data that is not records of this tool (dfe predict's "
                f"{' or '.join(OUTPUT_FORMATS)}); nothing was written. Choose another --out"
                + ("" if resume else ", or add --overwrite to replace the file")
            )
    if is_nonempty(path) and not (resume or overwrite):
        raise InvalidInputError(
            f"--out {path} already holds results; nothing was written. Add --resume to score "
            "only what is not in it yet, --overwrite to replace it (the old results stay until "
            "the new job has finished), or choose another --out"
        )
    parent = path.parent
    blocker = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"--out {path}: {blocker} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"--out {path}: cannot create its folder {parent} ({exc.strerror or exc})"
        ) from exc
    probe = path if kind == "file" else parent / f".{path.name}.{os.getpid()}.probe"
    existed = probe.exists()
    try:  # the one real test: open it for writing, as the job will
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.close(fd)
    except OSError as exc:
        raise OutputError(
            f"--out {path} cannot be written: {exc.strerror or exc} (errno {exc.errno}); choose "
            "another --out" + (" or fix its permissions" if exc.errno == errno.EACCES else "")
        ) from exc
    finally:
        if not existed and probe.exists() and probe.stat().st_size == 0:
            probe.unlink()
    usage = shutil.disk_usage(parent)
    if usage.total and usage.free < MIN_FREE_BYTES:
        raise OutputError(
            f"--out {path}: the file system holding it is full ({usage.free} bytes free); free "
            "some space or choose another --out"
        )


class OutputLock:
    """An exclusive lock on an output for the length of a job (``fcntl.flock`` on a hidden
    ``.NAME.lock`` file next to it), so that two jobs never write one output at once: the
    second is refused, naming the first's process id. Also removes temporary files that jobs
    killed before they could clean up left next to the output (their process is gone)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = path.with_name(f".{path.name}.lock")
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InvalidInputError(
                f"--out {self.path} is being written by another dfe job (process {holder}); "
                "wait for it to finish, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        self._remove_stale()
        return self

    def _remove_stale(self) -> None:
        """Temporary files of this output whose process is gone (killed jobs)."""
        for tmp in self.path.parent.glob(f".{self.path.name}.*"):
            parts = tmp.name[len(self.path.name) + 2 :].split(".")
            if not parts or not parts[0].isdigit() or parts[0] == str(os.getpid()):
                continue
            try:
                os.kill(int(parts[0]), 0)
                continue  # its job still runs
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            log.info("removing %s, left by a job that was killed", tmp)
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.lock.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def copy_permissions(src: Path, dst: Path) -> None:
    """Give ``dst`` the mode (and, where allowed, the owner and group) of ``src``, so that a
    rewritten output keeps what its owner set."""
    try:
        st = os.stat(src)
    except OSError:
        return
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    with contextlib.suppress(OSError):
        os.chown(dst, st.st_uid, st.st_gid)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class RecordWriter:
    """Writes one record per video to a JSONL or CSV file (or JSONL to a stream).

    ``mode``: ``"append"`` adds to ``path`` (created if missing; a CSV header when it is
    empty), ``"replace"`` writes to a hidden temporary file next to ``path`` that
    :meth:`close` renames over it when the job succeeded (``commit=True``) and removes
    otherwise. Each record is written with ``os.write`` (no buffer left in the process), so
    what was written survives a killed job. A failed write is cut back to the last complete
    record and raises :class:`~core.errors.OutputError` saying how many are kept.

    CSV has one column per field of the record schema (:data:`RECORD_FIELDS`; lists and
    dicts as JSON text), so no field is dropped."""

    def __init__(
        self, path: Path | None, *, mode: str = "append", stream: IO[str] | None = None
    ) -> None:
        if mode not in ("append", "replace"):
            raise InvalidInputError(f"mode={mode!r}; supported values are append, replace")
        self.path = path
        self.format = output_format(path)
        self.mode = mode
        self.written = 0
        self._stream = stream
        self._fd: int | None = None
        self._tmp: Path | None = None
        if path is None:
            if self.format == ".csv":
                raise InvalidInputError("CSV needs --out FILE.csv")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        target = path
        if mode == "replace":
            self._tmp = target = path.with_name(f".{path.name}.{os.getpid()}.partial")
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        if mode == "replace":
            flags |= os.O_TRUNC
        try:
            self._fd = os.open(target, flags, 0o644)
            self._good = os.fstat(self._fd).st_size
            if self.format == ".csv" and self._good == 0:
                self._write(_csv_text(list(RECORD_FIELDS)))
        except OSError as exc:
            self._abandon()
            raise OutputError(f"cannot write --out {path}: {exc}") from exc

    def _write(self, data: str) -> None:
        assert self._fd is not None
        try:
            _write_all(self._fd, data.encode())
        except OSError as exc:
            try:  # no torn line: cut back to the last complete record
                os.ftruncate(self._fd, self._good)
            except OSError:
                log.error("could not cut %s back to its last complete record", self.path)
            if self.mode == "append":
                kept = (
                    f"Every complete record is kept in it ({self.written} written by this job); "
                    "free some space (or choose another --out) and run the same command with "
                    "--resume to score the rest"
                )
            else:
                kept = (
                    f"{self.path} was left as it was (--overwrite replaces it only when the "
                    "job has finished); free some space and run the same command again"
                )
            raise OutputError(
                f"writing --out {self.path} failed: {exc.strerror or exc} (errno {exc.errno}). "
                f"{kept}"
            ) from exc
        self._good += len(data.encode())

    def write(self, record: dict[str, Any]) -> None:
        """Write one record; raises :class:`OutputError` when it cannot be written whole."""
        if self._fd is None:
            assert self._stream is not None
            self._stream.write(json.dumps(record) + "\n")
            self._stream.flush()
        elif self.format == ".csv":
            row = csv_row(record)
            self._write(_csv_text([row.get(k) for k in RECORD_FIELDS]))
        else:
            self._write(json.dumps(record) + "\n")
        self.written += 1

    def close(self, *, commit: bool = True) -> None:
        """Close the file; in ``replace`` mode, rename the temporary file over ``path`` when
        ``commit``, else remove it."""
        if self._fd is None:
            return
        try:
            if commit and self._tmp is not None:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            if commit:
                copy_permissions(self.path, self._tmp)
                os.replace(self._tmp, self.path)
            else:
                self._tmp.unlink(missing_ok=True)

    def _abandon(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(commit=exc_type is None)


def _csv_text(row: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(row)
    return buf.getvalue()


# ------------------------------------------------------------------------------ resume


@dataclass
class Entry:
    """One record of an existing output: the decoded record and its text as stored."""

    record: dict[str, Any]
    text: str


def read_output(path: Path) -> tuple[list[Entry], bool]:
    """The records of an existing ``--out`` file, and whether its last line was torn (a job
    killed while writing it; the torn line is not a record).

    Raises :class:`InvalidInputError` for a line that is not a record in the middle of the
    file, or a CSV whose columns are not this version's."""
    if not path.is_file():
        return [], False
    data = path.read_bytes()
    torn = bool(data) and not data.endswith(b"\n")
    text = data.decode("utf-8", errors="replace")
    entries: list[Entry] = []
    if output_format(path) == ".csv":
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if torn and rows:
            rows.pop()
        if not rows:
            return [], torn
        if tuple(rows[0]) != RECORD_FIELDS:
            raise InvalidInputError(
                f"{path} was written by another version of dfe (its columns are not this "
                "version's); score into a new --out, or replace it with --overwrite"
            )
        for n, row in enumerate(rows[1:], 2):
            if not any(row):
                continue
            try:
                rec = from_csv_row(dict(zip(RECORD_FIELDS, row)))
            except ValueError:
                raise InvalidInputError(
                    f"{path} row {n} is not a record; remove or fix it, or score into a new --out"
                ) from None
            entries.append(Entry(rec, _csv_text(row)))
        return entries, torn
    lines = text.split("\n")
    if torn:
        lines.pop()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "video" not in rec or "status" not in rec:
                raise ValueError("not a record")
        except ValueError:
            raise InvalidInputError(
                f"{path} line {n} is not a record; remove or fix it, or score into a new --out"
            ) from None
        entries.append(Entry(rec, line + "\n"))
    return entries, torn


@dataclass
class ResumePlan:
    """What ``--resume`` does with an existing output: ``todo`` (the inputs to score, in
    order), ``done`` (inputs whose records stand), ``keep`` (the records that stay, in their
    order) and why the others are dropped: ``retried`` (error records scored again),
    ``changed`` (inputs replaced or modified since), ``doubled`` (a second record of one
    input), ``torn`` (a torn last line)."""

    todo: list[str]
    done: list[str]
    keep: list[Entry]
    retried: int = 0
    changed: int = 0
    doubled: int = 0
    torn: bool = False
    unreadable: int = 0  # files of an output folder that could not be read (killed writes)

    @property
    def rewrite(self) -> bool:
        """Whether the output must be rewritten (records dropped) before appending."""
        return bool(self.retried or self.changed or self.doubled or self.torn or self.unreadable)

    def summary(self, out: Path | str) -> str:
        parts = [f"{len(self.done)} input(s) already in {out} with these settings, skipped"]
        if self.retried:
            parts.append(f"{self.retried} error record(s) scored again")
        if self.changed:
            parts.append(f"{self.changed} input(s) changed since they were scored, scored again")
        if self.doubled:
            parts.append(f"{self.doubled} extra record(s) of one input removed")
        if self.torn:
            parts.append("a torn last line (an interrupted write) removed")
        if self.unreadable:
            parts.append(
                f"{self.unreadable} damaged file(s) (half written by a killed job) rewritten: "
                "their complete records kept, the rest scored again"
            )
        return "resume: " + "; ".join(parts)


def plan_resume(
    entries: list[Entry],
    paths: list[str],
    current: dict[str, Any],
    *,
    content: bool = False,
    torn: bool = False,
    out: Path | str = "the output",
) -> ResumePlan:
    """Decide what ``--resume`` scores, keeps and drops (see the module docstring).

    ``entries``: the output's records; ``paths``: this job's inputs; ``current``: the
    provenance this job's records will carry (its ``input`` left out); ``content``: compare
    inputs by sha256 too (``--hash``). Raises :class:`InvalidInputError` naming the settings
    that differ when an ``ok`` record was made otherwise, or has no provenance."""
    for e in entries:
        rec = e.record
        if rec.get("status") != "ok":
            continue
        diff = differences(rec.get("provenance"), current)
        if diff:
            raise InvalidInputError(
                f"--resume: {out} holds records made with other settings (first: "
                f"{rec.get('video')}): " + "; ".join(diff) + ". Nothing was scored. Resume with "
                "the settings of the file, or score into another --out (or replace it with "
                "--overwrite)"
            )
    identity = {p: input_identity(p, content=content) for p in paths}
    wanted = {ident["path"]: p for p, ident in identity.items()}
    given = set(paths)
    keep: list[Entry] = []
    done: dict[str, str] = {}
    plan = ResumePlan(todo=[], done=[], keep=keep, torn=torn)
    for e in entries:
        rec = e.record
        rec_input = (rec.get("provenance") or {}).get("input") or {}
        # records of older versions name their input only by the path given
        real = rec_input.get("path") or os.path.realpath(str(rec.get("video", "")))
        if real in wanted:
            path = wanted[real]
        elif rec.get("video") in given:  # the path now names another file (a new symlink)
            path = rec["video"]
            real = identity[path]["path"]
        else:
            keep.append(e)  # another job's input in the same file: left as it is
            continue
        if rec.get("status") != "ok" or not _plausible(rec):
            plan.retried += 1
        elif not same_input(rec_input, identity[path]) or (
            content and not rec_input.get("sha256")  # --hash: content unknown, not the same
        ):
            plan.changed += 1
        elif real in done:
            plan.doubled += 1
        else:
            done[real] = path
            keep.append(e)
    plan.done = list(done.values())
    finished = set(done.values())
    plan.todo = [p for p in paths if p not in finished]
    return plan


def _plausible(record: dict[str, Any]) -> bool:
    """Whether an ``ok`` record has a probability (a hand-edited or damaged one may not)."""
    p = record.get("p_fake")
    return isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0


def rewrite_output(path: Path, entries: list[Entry]) -> None:
    """Replace ``path`` by ``entries`` (their stored text, a CSV header first) atomically: a
    temporary file next to it, synced, then renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.resume")
    try:
        with open(tmp, "w", newline="") as f:
            if output_format(path) == ".csv":
                f.write(_csv_text(list(RECORD_FIELDS)))
            for e in entries:
                f.write(e.text)
            f.flush()
            os.fsync(f.fileno())
        copy_permissions(path, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(
            f"--resume could not rewrite {path} ({exc}); it was left as it was"
        ) from exc
