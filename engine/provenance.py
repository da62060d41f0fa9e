"""How a record was made, in the record itself: the ``provenance`` object, and the rules that
compare two of them.

Every record (``dfe predict``, ``dfe score``, Ray, the web API, the Python API) carries::

    "provenance": {
      "engine":   {"version", and the versions of the libraries that compute a score},
      "model":    {"path", "sidecar_sha256", "spec_sha256", "calibration_sha256", "precision",
                   "graph", "graph_sha256", "head_sha256", "checkpoint_sha256"},
      "detector": {"name", "path", "sha256"}          (None for the caller's own crops),
      "settings": {every option whose value can change a score, resolved},
      "input":    {"path" (real path), "size", "mtime_ns", "sha256" (with --hash)}
    }

``settings`` holds every field of :class:`~core.config.EngineConfig` and
:class:`~core.config.SequenceConfig` whose metadata says ``score=True``
(:func:`~core.config.score_fields`), with the values that ran (``backend`` resolved from
``auto``, ``crop_style`` from the model's, ``seq_len`` from the model's N), so an option added
later cannot be left out. Two records are the same work (:func:`differences` is empty) when
their models (graph, head and sidecar-section digests), detectors (sha256) and settings are
equal; engine and library versions are recorded, not compared, since a record must stay
reproducible across a patch release. The input's identity (:func:`input_identity`) is its real
path plus size and modification time, and its content's sha256 when asked (``--hash``): the same
file reached through a symlink or ``./x/../v.mp4`` is the same input, a file replaced under the
same name is not.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.config import EngineConfig, SequenceConfig, flag_of, score_fields

#: Model fields compared by :func:`differences` (what ran), with how a difference reads.
MODEL_KEYS = {
    "graph_sha256": "classifier graph (sha256)",
    "head_sha256": "sequence head graph (sha256)",
    "spec_sha256": "model sidecar's preprocessing, labels or reduction",
    "calibration_sha256": "model calibration (dfe calibrate)",
    "checkpoint_sha256": "checkpoint (sha256)",
    "precision": "--precision",
}


@functools.lru_cache(maxsize=1)
def engine_versions() -> dict[str, str | None]:
    """deepfake-engine's version and those of the libraries whose version can move a score
    (decoding, resizing, inference). A library that is not installed is ``None``."""
    from importlib import metadata

    from core import __version__

    out: dict[str, str | None] = {"version": __version__}
    for dist in ("onnxruntime", "onnxruntime-gpu", "av", "opencv-python-headless", "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if dist != "onnxruntime-gpu":
                out[dist] = None
    try:
        import av

        out["ffmpeg"] = ".".join(map(str, av.library_versions.get("libavcodec", ())))
    except Exception:  # a version string is informative only
        out["ffmpeg"] = None
    return out


def library_versions(
    modules: Sequence[str], *, engine: bool = True, python: bool = True
) -> dict[str, str]:
    """What made an artifact, for its metadata (an export's sidecar, a training run, an INT8
    build, a benchmark's machine): ``{"deepfake-engine": version}`` (unless ``engine`` is
    False), ``{"python": "3.11.9"}`` (unless ``python`` is False), then ``{module: its
    __version__}`` for each of ``modules`` in the order given. A module that does not import
    or has no ``__version__`` is left out; nothing raises. Imports each module: call it where
    those libraries are loaded anyway (unlike :func:`engine_versions`, which reads the
    installed distributions for every record)."""
    import platform

    from core import __version__

    out: dict[str, str] = {}
    if engine:
        out["deepfake-engine"] = __version__
    if python:
        out["python"] = platform.python_version()
    for mod in modules:
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # not installed, broken, or no __version__
            continue
    return out


def input_identity(path: str | os.PathLike[str], *, content: bool = False) -> dict[str, Any]:
    """The identity of an input file: ``{"path": real path, "size": bytes, "mtime_ns": int,
    "sha256": hex or None}`` (``sha256`` only with ``content``). A path that does not exist
    gives ``{"path": the absolute path, "size": None, "mtime_ns": None, "sha256": None}``."""
    from core.hashing import file_sha256

    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return {"path": os.path.abspath(path), "size": None, "mtime_ns": None, "sha256": None}
    digest = None
    if content and Path(real).is_file():
        try:
            digest = file_sha256(real)
        except OSError:
            digest = None
    return {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}


def same_input(recorded: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether a record's ``input`` identity names the file ``current`` describes, unchanged:
    same real path, size and modification time; and the same sha256 when both have one."""
    if not recorded or recorded.get("size") is None or current.get("size") is None:
        return False
    if any(recorded.get(k) != current.get(k) for k in ("path", "size", "mtime_ns")):
        return False
    a, b = recorded.get("sha256"), current.get("sha256")
    return a is None or b is None or a == b


def settings(
    config: EngineConfig,
    *,
    backend: str,
    crop_style: str,
    seq_len: int | None,
    sampling: str | None,
) -> dict[str, Any]:
    """The ``settings`` of a record: every score-changing field of ``config`` (see the module
    docstring) with ``backend`` and ``crop_style`` as they ran, then ``seq_len`` and
    ``sampling``."""
    out = {name: getattr(config, name) for name in score_fields(EngineConfig)}
    out["backend"] = backend
    out["crop_style"] = crop_style
    out["seq_len"] = seq_len
    out["sampling"] = sampling
    return out


@functools.lru_cache(maxsize=1)
def _flags() -> dict[str, str]:
    fields = [*dataclasses.fields(EngineConfig), *dataclasses.fields(SequenceConfig)]
    return {f.name: flag_of(f) for f in fields}


def flag_for(setting: str) -> str:
    """How a ``settings`` key is named to a user: its command-line flag (``margin`` ->
    ``--margin``), with the field's name for a flag that turns it off (``size_probe
    (--no-size-probe)``), whose values would read backwards under the flag alone."""
    flag = _flags().get(setting, setting)
    return f"{setting} ({flag})" if flag.startswith("--no-") else flag


def differences(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between a record's provenance and the current one, in words naming flags
    (``"--margin: 0.0 in the record, 0.3 now"``); empty when they are the same work (see the
    module docstring). A record without provenance (made by an older version) differs."""
    if not recorded:
        return ["the record has no provenance (made by an older version of dfe)"]
    out: list[str] = []
    rm, cm = recorded.get("model") or {}, current.get("model") or {}
    for key, what in MODEL_KEYS.items():
        if rm.get(key) != cm.get(key):
            out.append(f"{what}: {_short(rm.get(key))} in the record, {_short(cm.get(key))} now")
    rd, cd = recorded.get("detector") or {}, current.get("detector") or {}
    if rd.get("sha256") != cd.get("sha256"):
        out.append(
            f"--detector: {rd.get('name')} ({_short(rd.get('sha256'))}) in the record, "
            f"{cd.get('name')} ({_short(cd.get('sha256'))}) now"
        )
    rs, cs = recorded.get("settings") or {}, current.get("settings") or {}
    for key in dict.fromkeys([*cs, *rs]):
        if key == "detector":
            continue  # compared by content above: a name and a path may name one file
        if key == "timeline_fps" and not rs.get("timeline") and not cs.get("timeline"):
            continue  # its rate changes nothing without a timeline
        if rs.get(key) != cs.get(key):
            out.append(f"{flag_for(key)}: {rs.get(key)!r} in the record, {cs.get(key)!r} now")
    return out


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12]
    return repr(value)
