"""The TensorRT engine cache, as plain functions: profiles, keys, lookup and rebuild decisions.

A serialized TensorRT engine only runs on the GPU model and TensorRT version that built it, for
the shapes of its optimisation profile. So every engine file ``<graph>.<precision>.<digest>.engine``
has a JSON sidecar next to it (``.engine.json``, never inside the engine bytes) holding its
**key**: the ONNX sha256, TensorRT version, GPU name, compute capability, precision, the
optimisation profile and the builder recipe version. An engine is used only when its key's
identity fields equal the ones asked for, its profile covers the shapes asked for, and its bytes
still hash to the recorded sha256; anything else is rebuilt, never loaded.

Nothing here imports TensorRT or CUDA: the build itself is passed in as a function, so the
decisions are unit-tested on CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InvalidInputError, ModelFormatError
from core.hashing import sha256_file
from core.paths import engines_dir

log = logging.getLogger(__name__)

ENGINE_SCHEMA = "deepfake-engine/tensorrt-engine"
ENGINE_SCHEMA_VERSION = 1
# Bump when the way engines are built changes (flags, Q/DQ conversion), so old engines rebuild.
BUILDER_VERSION = 1
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
# Key fields that must be equal for an engine to be usable; "profiles" must cover instead.
IDENTITY_FIELDS = (
    "graph",
    "onnx_sha256",
    "precision",
    "tensorrt_version",
    "gpu_name",
    "compute_capability",
    "builder_version",
)

Range = tuple[int, int, int]  # (min, opt, max) of one axis


@dataclass(frozen=True)
class TensorProfile:
    """The optimisation-profile shapes of one input tensor."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def covers(self, other: TensorProfile) -> bool:
        """Whether every shape allowed by ``other`` is allowed by this profile."""
        return (
            self.name == other.name
            and len(self.min) == len(other.min)
            and all(a <= b for a, b in zip(self.min, other.min))
            and all(a >= b for a, b in zip(self.max, other.max))
        )


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine is tied to."""

    gpu_name: str
    compute_capability: str  # "9.0"
    tensorrt_version: str


# ------------------------------------------------------------------------------ profiles


def _check_range(name: str, axis: int, r: Sequence[int]) -> Range:
    if len(r) != 3 or not all(isinstance(v, int) for v in r):
        raise InvalidInputError(f"{name}: axis {axis} range must be (min, opt, max) ints, got {r}")
    lo, opt, hi = r
    if not 1 <= lo <= opt <= hi:
        raise InvalidInputError(
            f"{name}: axis {axis} range (min {lo}, opt {opt}, max {hi}) must have "
            "1 <= min <= opt <= max"
        )
    return lo, opt, hi


def profile_shapes(
    name: str, dims: Sequence[int | str | None], ranges: Mapping[int, Sequence[int]]
) -> TensorProfile:
    """The profile of input ``name`` with ONNX ``dims`` (ints, or a name / None when dynamic).

    Every dynamic axis needs a ``(min, opt, max)`` in ``ranges`` (by axis index); a range given
    for a static axis must be that size exactly.
    """
    unknown = set(ranges) - set(range(len(dims)))
    if unknown:
        raise InvalidInputError(f"{name}: has {len(dims)} axes; no axis {sorted(unknown)}")
    lo, opt, hi = [], [], []
    for axis, d in enumerate(dims):
        static = isinstance(d, int) and d > 0
        if axis in ranges:
            r = _check_range(name, axis, ranges[axis])
            if static and r != (d, d, d):
                raise InvalidInputError(
                    f"{name}: axis {axis} is fixed at {d} in the graph; the profile asked for "
                    f"{r[0]}..{r[2]} (supported value: {d})"
                )
        elif static:
            r = (d, d, d)
        else:
            raise InvalidInputError(
                f"{name}: axis {axis} ({d!r}) is dynamic; give its (min, opt, max) range"
            )
        lo.append(r[0])
        opt.append(r[1])
        hi.append(r[2])
    return TensorProfile(name, tuple(lo), tuple(opt), tuple(hi))


def batch_ranges(max_batch: int, *, opt: int | None = None) -> Range:
    """The frame-batch axis: min 1, opt ``opt`` (default: ``max_batch``, the full batches that
    carry the throughput), max ``max_batch``."""
    if not isinstance(max_batch, int) or max_batch < 1:
        raise InvalidInputError(f"max batch must be a positive integer, got {max_batch!r}")
    return _check_range("batch", 0, (1, opt if opt is not None else max_batch, max_batch))


def check_in_profile(graph: str, name: str, shape: Sequence[int], profile: TensorProfile) -> None:
    """Raise before launch when ``shape`` is outside the engine's profile, saying the range."""
    if len(shape) != len(profile.min):
        raise InvalidInputError(
            f"{graph}: input {name!r} has {len(shape)} axes {list(shape)}; the TensorRT engine "
            f"takes {len(profile.min)} ({_describe(profile)})"
        )
    for axis, (v, lo, hi) in enumerate(zip(shape, profile.min, profile.max)):
        if not lo <= v <= hi:
            hint = (
                "; rebuild with a larger --max-batch (dfe build MODEL --max-batch N) or feed "
                "smaller batches"
                if axis == 0
                else ""
            )
            raise InvalidInputError(
                f"{graph}: input {name!r} shape {list(shape)} is outside the TensorRT engine's "
                f"optimisation profile: axis {axis} must be in [{lo}, {hi}], got {v} "
                f"(allowed: {_describe(profile)}){hint}"
            )


def _describe(p: TensorProfile) -> str:
    return " x ".join(str(a) if a == b else f"{a}..{b}" for a, b in zip(p.min, p.max))


# ------------------------------------------------------------------------------ keys


def cache_key(
    *,
    graph: str,
    onnx_sha256: str,
    precision: str,
    profiles: Sequence[TensorProfile],
    device: DeviceInfo,
) -> dict[str, Any]:
    if precision not in ENGINE_PRECISIONS:
        raise InvalidInputError(
            f"precision={precision!r}; supported values are {', '.join(ENGINE_PRECISIONS)}"
        )
    return {
        "graph": graph,
        "onnx_sha256": onnx_sha256,
        "precision": precision,
        "tensorrt_version": device.tensorrt_version,
        "gpu_name": device.gpu_name,
        "compute_capability": device.compute_capability,
        "builder_version": BUILDER_VERSION,
        "profiles": {p.name: p.as_dict() for p in profiles},
    }


def key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(key, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def engine_path(cache_dir: Path, key: Mapping[str, Any]) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(key["graph"]))
    return Path(cache_dir) / f"{safe}.{key['precision']}.{key_digest(key)[:16]}.engine"


def meta_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def timing_cache_path(cache_dir: Path, device: DeviceInfo) -> Path:
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", device.gpu_name).strip("-").lower()
    return (
        Path(cache_dir)
        / f"timing.trt{device.tensorrt_version}.{gpu}.sm{device.compute_capability}.cache"
    )


def _profiles_of(key: Mapping[str, Any]) -> dict[str, TensorProfile]:
    return {
        name: TensorProfile(name, tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
        for name, p in key.get("profiles", {}).items()
    }


def key_mismatch(have: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """Why an engine with key ``have`` cannot serve ``want`` (empty when it can): differing
    identity fields, and profiles that do not cover the shapes wanted."""
    reasons = [
        f"{f}: engine {have.get(f)!r}, wanted {want.get(f)!r}"
        for f in IDENTITY_FIELDS
        if have.get(f) != want.get(f)
    ]
    have_p, want_p = _profiles_of(have), _profiles_of(want)
    if set(have_p) != set(want_p):
        reasons.append(f"inputs: engine {sorted(have_p)}, wanted {sorted(want_p)}")
    else:
        for name, w in want_p.items():
            if not have_p[name].covers(w):
                reasons.append(
                    f"profile of {name}: engine {_describe(have_p[name])}, wanted {_describe(w)}"
                )
    return reasons


# ------------------------------------------------------------------------------ lookup


@dataclass(frozen=True)
class EngineStatus:
    path: Path
    state: str  # "ok" | "missing" | "mismatch" | "corrupt"
    reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def engine_status(path: Path, want: Mapping[str, Any]) -> EngineStatus:
    """Whether the engine at ``path`` may be loaded for key ``want``."""
    meta = meta_path(path)
    if not path.is_file() or not meta.is_file():
        what = "engine file" if not path.is_file() else "key sidecar"
        return EngineStatus(path, "missing", (f"no {what} at {path}",))
    try:
        data = json.loads(meta.read_text())
        have = data["key"]
        recorded = data["engine_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return EngineStatus(path, "corrupt", (f"unreadable key sidecar {meta.name}: {exc}",))
    if data.get("schema") != ENGINE_SCHEMA or data.get("schema_version") != ENGINE_SCHEMA_VERSION:
        return EngineStatus(path, "mismatch", (f"sidecar schema {data.get('schema')!r}",))
    reasons = key_mismatch(have, want)
    if reasons:
        return EngineStatus(path, "mismatch", tuple(reasons))
    if sha256_file(path) != recorded:
        return EngineStatus(path, "corrupt", ("engine bytes do not match the recorded sha256",))
    return EngineStatus(path, "ok")


def find_engine(cache_dir: Path, want: Mapping[str, Any]) -> EngineStatus:
    """The engine for ``want``: the exact key's file if valid, else any cached engine of the same
    graph and precision whose key can serve ``want`` (e.g. built with a larger --max-batch).
    The returned status says why nothing fits when it is not ok."""
    exact = engine_status(engine_path(cache_dir, want), want)
    if exact.ok:
        return exact
    pattern = engine_path(cache_dir, want).name.rsplit(".", 2)[0] + ".*.engine"
    rejected: list[EngineStatus] = []
    for candidate in sorted(Path(cache_dir).glob(pattern)):
        status = engine_status(candidate, want)
        if status.ok:
            return status
        if candidate != exact.path:
            rejected.append(status)
    if exact.state == "missing" and rejected:  # say why the engines that are there do not fit
        reasons = tuple(f"{r.path.name}: {'; '.join(r.reasons)}" for r in rejected)
        return EngineStatus(exact.path, "mismatch", reasons)
    return exact


def write_engine(path: Path, plan: bytes, key: Mapping[str, Any], **extra: Any) -> Path:
    """Write the engine, then its key sidecar (both atomically); returns the engine path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, plan)
    meta = {
        "schema": ENGINE_SCHEMA,
        "schema_version": ENGINE_SCHEMA_VERSION,
        "key": dict(key),
        "engine_sha256": hashlib.sha256(plan).hexdigest(),
        "engine_bytes": len(plan),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    _write_atomic(meta_path(path), (json.dumps(meta, indent=2) + "\n").encode())
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class EnsureResult:
    path: Path
    built: bool
    reason: str  # why it was (re)built, or "cached"


def ensure_engine(
    cache_dir: Path,
    key: Mapping[str, Any],
    build: Callable[[], bytes],
    *,
    rebuild: bool = False,
    **extra: Any,
) -> EnsureResult:
    """Return a valid engine for ``key``: a cached one, or one built now by ``build()`` (when
    missing, mismatched, corrupt, or ``rebuild``). A mismatched engine is never loaded."""
    status = find_engine(cache_dir, key)
    if status.ok and not rebuild:
        return EnsureResult(status.path, False, "cached")
    reason = "rebuild asked for" if rebuild else f"{status.state}: {'; '.join(status.reasons)}"
    log.info("building TensorRT engine %s (%s)", key.get("graph"), reason)
    t = time.perf_counter()
    plan = build()
    if not plan:
        raise ModelFormatError(f"TensorRT returned an empty engine for {key.get('graph')}")
    path = write_engine(
        engine_path(cache_dir, key),
        plan,
        key,
        build_seconds=round(time.perf_counter() - t, 2),
        **extra,
    )
    return EnsureResult(path, True, reason)


def default_cache_dir(model_dir: Path | None = None) -> Path:
    """``MODEL_DIR/engines`` when writable, else ``$DFE_ENGINES`` or
    ``~/.cache/deepfake-engine/engines`` (keys carry the ONNX sha256, so one folder can hold
    engines of many models and GPUs)."""
    if model_dir is not None:
        target = Path(model_dir) / "engines"
        try:
            target.mkdir(parents=True, exist_ok=True)
            if os.access(target, os.W_OK):
                return target
        except OSError:
            pass
    return engines_dir()


__all__ = [
    "DeviceInfo",
    "EngineStatus",
    "EnsureResult",
    "TensorProfile",
    "batch_ranges",
    "cache_key",
    "check_in_profile",
    "default_cache_dir",
    "engine_path",
    "engine_status",
    "ensure_engine",
    "find_engine",
    "key_digest",
    "key_mismatch",
    "profile_shapes",
    "timing_cache_path",
    "write_engine",
]
