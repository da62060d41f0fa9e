"""Known face-detector weights: where to find them, how to check them, where to get them.

The SCRFD detectors come from InsightFace's model packs, whose pretrained models are licensed
**for non-commercial research use only**. They are never shipped with this project: they are
looked up in a models directory (``--models DIR``, else ``$DFE_MODELS``, else
``~/.cache/deepfake-engine/models``) and, when online, downloaded from InsightFace's GitHub
releases and verified against the sha256 in ``manifest.json``.

Policy for paths given explicitly (``find_model("/some/det_500m.onnx")``): the file is used as it
is. When its file name is one of the known files *and* its size is the known size, it is taken to
be that release and its sha256 is checked (a mismatch means a corrupt copy, and raises). A file
with a known name but another size is a different export (e.g. a re-export); it is used with an
info log. Files found by *name* in the models directory are always checked.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from core import paths
from core.errors import ArtifactNotFoundError, InvalidInputError, ModelFormatError
from core.hashing import sha256_file

logger = logging.getLogger(__name__)

__all__ = [
    "LICENSE",
    "ModelInfo",
    "find_model",
    "known_models",
    "models_dir",
    "sha256_file",
    "verify_model",
]

LICENSE = "InsightFace pretrained models: non-commercial research use only"
_CHUNK = 1 << 20

# Indirection so that tests can replace the network with a local opener.
_urlopen = urllib.request.urlopen


@dataclass(frozen=True)
class ModelInfo:
    """One known model file, as listed in ``manifest.json``."""

    name: str
    file: str
    sha256: str | None
    size: int | None
    packs: tuple[str, ...]
    urls: tuple[str, ...]
    member: str
    description: str = ""
    license: str = LICENSE

    @property
    def verifiable(self) -> bool:
        """Whether a sha256 is known, i.e. whether a copy of this file can be verified."""
        return bool(self.sha256)

    def where_to_get(self) -> str:
        size = f", {self.size:,} bytes" if self.size else ""
        digest = f"sha256 {self.sha256}" if self.sha256 else "no known sha256"
        return (
            f"get it from InsightFace's {' / '.join(self.packs)} pack: {self.urls[0]} "
            f"(member {self.member}; {digest}{size}). License: {self.license}"
        )


@functools.lru_cache(maxsize=1)
def _load_manifest() -> dict[str, ModelInfo]:
    text = resources.files(__name__).joinpath("manifest.json").read_text(encoding="utf-8")
    data = json.loads(text)
    models: dict[str, ModelInfo] = {}
    for name, entry in data["models"].items():
        models[name] = ModelInfo(
            name=name,
            file=entry["file"],
            sha256=entry.get("sha256") or None,
            size=entry.get("size"),
            packs=tuple(entry.get("packs", ())),
            urls=tuple(entry.get("urls", ())),
            member=entry.get("member", entry["file"]),
            description=entry.get("description", ""),
            license=entry.get("license", LICENSE),
        )
    return models


def known_models() -> Mapping[str, ModelInfo]:
    """The known models by name (``det_500m``, ``det_2.5g``, ``det_10g``)."""
    return dict(_load_manifest())


def models_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The models directory: ``explicit`` (the ``--models DIR`` value), else ``$DFE_MODELS``,
    else ``~/.cache/deepfake-engine/models`` (:func:`core.paths.models_dir`). Not
    created here."""
    return paths.models_dir(explicit)


# find_model's keyword argument is also called models_dir.
_models_dir_from = models_dir


def verify_model(path: str | os.PathLike[str], info: ModelInfo) -> bool:
    """Check ``path`` against ``info``: True when verified, False when it cannot be (no known
    sha256; a warning says so). Raises :class:`ModelFormatError` for a corrupt file."""
    path = Path(path)
    if not info.verifiable:
        logger.warning(
            "%s cannot be verified: no sha256 is known for %s; using it unverified", path, info.name
        )
        return False
    size = path.stat().st_size
    problem = None
    if info.size is not None and size != info.size:
        problem = f"size {size:,} bytes, expected {info.size:,}"
    else:
        digest = sha256_file(path)
        if digest != info.sha256:
            problem = f"sha256 {digest}, expected {info.sha256}"
    if problem:
        raise ModelFormatError(
            f"{path} is corrupt or not InsightFace's {info.name} ({problem}). Delete it and run "
            f"again with network access to download it again, or replace it by hand: "
            f"{info.where_to_get()}"
        )
    return True


def _lookup(name_or_path: str) -> ModelInfo | None:
    models = known_models()
    if name_or_path in models:
        return models[name_or_path]
    for info in models.values():
        if name_or_path == info.file:
            return info
    return None


def _not_found(info: ModelInfo, directory: Path, reason: str) -> ArtifactNotFoundError:
    return ArtifactNotFoundError(
        f"{info.file} ({info.name}) is not in the models directory {directory} and {reason}. "
        f"Put the file at {directory / info.file} (or pass --models DIR / set DFE_MODELS to "
        f"the folder that holds it); {info.where_to_get()}"
    )


def _extract_member(archive: Path, info: ModelInfo, dest: Path) -> None:
    """Copy ``info.member`` (or the one member with the same file name) out of ``archive``."""
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        if info.member in names:
            member = info.member
        else:
            matches = [n for n in names if n.rsplit("/", 1)[-1] == info.file]
            if len(matches) != 1:
                raise ArtifactNotFoundError(
                    f"{info.member} is not in the downloaded archive (members: {names[:10]})"
                )
            member = matches[0]
        with zf.open(member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)


def _download(info: ModelInfo, directory: Path, timeout: float) -> Path:
    """Download the pack, extract the member, verify it, rename it into place atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / info.file
    errors: list[str] = []
    for url in info.urls:
        fd_zip, tmp_zip = tempfile.mkstemp(dir=directory, prefix=f".{info.name}.", suffix=".zip")
        fd_out, tmp_out = tempfile.mkstemp(dir=directory, prefix=f".{info.file}.", suffix=".tmp")
        os.close(fd_out)
        try:
            logger.info("downloading %s from %s", info.name, url)
            with os.fdopen(fd_zip, "wb") as out, _urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out, _CHUNK)
            _extract_member(Path(tmp_zip), info, Path(tmp_out))
            verify_model(tmp_out, info)
            os.chmod(tmp_out, 0o644)
            os.replace(tmp_out, target)
            logger.info("saved %s to %s", info.name, target)
            return target
        except (
            OSError,
            urllib.error.URLError,
            http.client.HTTPException,
            zipfile.BadZipFile,
            ValueError,
        ) as exc:
            # ArtifactNotFoundError is an OSError, ModelFormatError a ValueError.
            errors.append(f"{url}: {exc}")
            logger.warning("download of %s from %s failed: %s", info.name, url, exc)
        finally:
            for tmp in (tmp_zip, tmp_out):
                with contextlib.suppress(OSError):
                    Path(tmp).unlink(missing_ok=True)
    raise _not_found(info, directory, "could not be downloaded (" + "; ".join(errors) + ")")


def find_model(
    name_or_path: str | os.PathLike[str],
    *,
    models_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Locate a detector model; return its path.

    - An existing file path is used as it is (see the module docstring for when it is verified).
    - A known name (``det_500m``, ``det_2.5g``, ``det_10g``, or its file name) is looked up in
      the models directory, as ``<dir>/<file>`` or InsightFace's ``<dir>/<pack>/<file>``, then
      (no ``models_dir`` given, in a source checkout or with ``$DFE_SHARED``) in the shared test
      and demo assets' ``models/``, where ``make demo`` finds it; its sha256 is verified; if
      absent it is downloaded (``download=True``), verified and saved as ``<dir>/<file>``.
    - Otherwise :class:`ArtifactNotFoundError`, which says which file to put where and where
      to get it.
    """
    if isinstance(name_or_path, str) and not name_or_path.strip():
        raise InvalidInputError("find_model: empty model name or path")
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        info = _lookup(candidate.name)
        if info is not None and info.size is not None and candidate.stat().st_size == info.size:
            verify_model(candidate, info)
        elif info is not None:
            logger.info(
                "%s is named like InsightFace's %s but is not that release file (different "
                "size); using it as it is",
                candidate,
                info.name,
            )
        return candidate

    info = _lookup(str(name_or_path))
    directory = _models_dir_from(models_dir)
    if info is None:
        known = ", ".join(known_models())
        raise ArtifactNotFoundError(
            f"no model file at {candidate}, and {str(name_or_path)!r} is not a known model name "
            f"(supported values are {known}, or the path of an .onnx file)"
        )
    places = [directory / info.file] + [directory / pack / info.file for pack in info.packs]
    if models_dir is None and (paths.env("DFE_SHARED") or paths.in_checkout()):
        # the demo's detector: `make demo` and the tests take it from the shared assets, so a
        # newcomer's next `dfe predict` in the checkout finds it too (verified as any other)
        places.append(paths.shared_dir() / "models" / info.file)
    for place in places:
        if place.is_file():
            verify_model(place, info)
            logger.debug("found %s at %s", info.name, place)
            return place
    if not download:
        raise _not_found(info, directory, "downloads are disabled")
    return _download(info, directory, timeout)
