"""Training data: labelled videos -> cached 112x112 face crops, made by the engine's own stages.

A labelled file is a video or a face clip made by ``dfe preprocess``:

- a **video** goes through the face chain the runtime runs,
  :class:`preprocess.face_extraction.FaceExtractor`: decode, detect (with the per-video
  detector input), face tracks (the main person, as ``--faces main`` scores), face policy
  (:class:`preprocess.faces.FacePolicy`: crop style, margin, no-face rule) and crop. So a model
  is trained on the crops it will be served; ``tests/export/test_datasets.py`` and
  ``tests/engine/test_face_extraction_users.py`` pin that they equal ``Engine.inspect``'s
  crops.
- a **face clip** (frames of exactly the model's input size) is used as it is.

Crops are cached as ``.npy`` files (N x 112 x 112 x 3 uint8 BGR) with a JSON record each, under a
key made of the file's identity (path, size, mtime) and every option that changes the crops, so
epochs after the first read no video, and a second run with the same options none at all.

Splits are by video, never by frame (:func:`split_by_video`). Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import TRAIN_INPUTS, EngineConfig
from core.errors import EngineError, InvalidInputError
from core.labels import CLASSES
from preprocess.crop import INPUT_SIZE, Preprocessor
from preprocess.face_extraction import FaceExtractor
from preprocess.faces import FacePolicy, clip_policy

if TYPE_CHECKING:
    from preprocess.faces import Detector

log = logging.getLogger(__name__)

#: Bumped when the way crops are made changes, so old cache entries are not reused (2: the face
#: chain of the runtime: tracks linked across a size change, its detector-input rule).
CACHE_VERSION = 2


@dataclass(frozen=True)
class LabelledVideo:
    """One labelled file: ``path`` (as resolved from the CSV) and ``label`` (FAKE or REAL)."""

    path: str
    label: str

    @property
    def target(self) -> int:
        """The class index: FAKE 0, REAL 1 (the original's ``FAKE -> 0, REAL -> 1``)."""
        return CLASSES.index(self.label)


def unique_videos(
    pairs: Sequence[tuple[str, str]], *, source: str = "labels"
) -> list[LabelledVideo]:
    """``(path, label)`` pairs as :class:`LabelledVideo` items, duplicates merged (first order
    kept). Raises :class:`InvalidInputError` when one file is listed with both labels."""
    seen: dict[str, str] = {}
    for path, label in pairs:
        if label not in CLASSES:
            raise InvalidInputError(f"{source}: label {label!r} of {path}; supported: REAL, FAKE")
        old = seen.setdefault(path, label)
        if old != label:
            raise InvalidInputError(f"{source}: {path} is listed as both {old} and {label}")
    return [LabelledVideo(p, lab) for p, lab in seen.items()]


def split_by_video(
    videos: Sequence[LabelledVideo], fraction: float, *, seed: int
) -> tuple[list[LabelledVideo], list[LabelledVideo]]:
    """(train, validation): ``round(fraction * n)`` videos of each class held out (at least one
    of a class with two or more videos when ``fraction > 0``), chosen by a seeded shuffle.
    Whole videos go to one side, never frames of one video to both. ``fraction`` 0 gives no
    validation. Order within each side follows ``videos``."""
    if not 0.0 <= fraction < 1.0:
        raise InvalidInputError(f"validation fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return list(videos), []
    rng = random.Random(seed)
    held: set[int] = set()
    for name in CLASSES:
        idx = [i for i, v in enumerate(videos) if v.label == name]
        k = round(fraction * len(idx))
        if k == 0 and len(idx) >= 2:
            k = 1
        k = min(k, len(idx) - 1)  # keep at least one video of the class for training
        held.update(rng.sample(idx, k) if k > 0 else [])
    train = [v for i, v in enumerate(videos) if i not in held]
    val = [v for i, v in enumerate(videos) if i in held]
    return train, val


@dataclass(frozen=True)
class CropOptions:
    """Everything that decides which crops a file gives (part of the cache key).

    ``frames``: frames read per video (``sampling`` ``first`` or ``uniform``); ``policy``: face
    rule, crop style, margin and no-face rule; ``inputs``: ``auto``, ``videos`` or ``clips``;
    ``detector``: the face detection options (:class:`EngineConfig`'s detector fields and
    ``size_probe``).
    """

    frames: int
    sampling: str = "first"
    policy: FacePolicy = field(default_factory=lambda: FacePolicy(no_face="drop"))
    inputs: str = "auto"
    detector: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        if self.inputs not in TRAIN_INPUTS:
            raise InvalidInputError(
                f"inputs={self.inputs!r} is not supported; supported values are "
                f"{', '.join(TRAIN_INPUTS)}"
            )
        if self.frames < 1:
            raise InvalidInputError(f"frames must be >= 1, got {self.frames}")

    def describe(self) -> dict[str, Any]:
        """JSON-ready; the cache key and ``train.json`` record it."""
        d = self.detector
        return {
            "frames": self.frames,
            "sampling": self.sampling,
            "faces": "main",
            "policy": self.policy.describe(),
            "inputs": self.inputs,
            "detector": {
                "model": d.detector,
                "input_size": d.detector_input,
                "score_threshold": d.score_threshold,
                "size_probe": d.size_probe,
            },
        }


def options_for(
    frames: int,
    *,
    sampling: str = "first",
    no_face: str = "previous",
    crop_style: str = "scrfd",
    margin: float = 0.0,
    inputs: str = "auto",
    detector: EngineConfig | None = None,
) -> CropOptions:
    """:class:`CropOptions` from ``dfe train``'s options (``no_face`` as ``dfe preprocess``
    takes it: ``previous``, ``skip`` or ``full_frame``)."""
    return CropOptions(
        frames=frames,
        sampling=sampling,
        policy=clip_policy(no_face, crop_style=crop_style, margin=margin),
        inputs=inputs,
        detector=detector or EngineConfig(),
    )


@dataclass(frozen=True)
class VideoCrops:
    """The face crops of one file, as cached.

    ``crops``: (N, 112, 112, 3) uint8 BGR (a read-only memory map when loaded from the cache);
    ``frame_indices``: the video frame of each crop; ``boxes``: the integer crop box of each (None:
    the whole frame, or a face clip's frame); ``source``: ``video`` or ``clip``; ``found``: crops
    cut at a face detected in that frame; ``reused``: at the previous face's box; ``record``:
    the rest of the JSON record (detector input chosen, warnings).
    """

    path: str
    crops: np.ndarray
    frame_indices: list[int]
    boxes: list[list[int] | None]
    source: str
    found: int
    reused: int
    record: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.crops.shape[0])


def open_detector(config: EngineConfig) -> Detector:
    """The detector of ``config`` on ONNX Runtime CPU, as the engine opens it there: the
    runtime's one :func:`engine.api.open_detector` with ``backend="ort"`` (training data is made
    on the CPU; the crops are those ``dfe predict --backend ort`` scores). Raises
    :class:`~core.errors.ArtifactNotFoundError` when the model file is missing and cannot
    be downloaded."""
    from engine.api import open_detector as open_engine_detector

    return open_engine_detector(config.replace(backend="ort"))


def is_face_clip(frame: np.ndarray) -> bool:
    """Whether a decoded frame is a face clip's: exactly the model's input size (112x112)."""
    return frame.shape[0] == INPUT_SIZE and frame.shape[1] == INPUT_SIZE


class FaceCropper:
    """Labelled file -> :class:`VideoCrops` through the runtime's face chain (module docstring).

    ``detector`` is any object with ``detect(frames)`` (and ``detect_prepared`` for the
    per-video input choice); by default the detector of ``options.detector`` is opened on first
    use, so a set made only of face clips needs no detector file. :attr:`extractor` is the
    :class:`~preprocess.face_extraction.FaceExtractor` it runs: ``--faces main``, the options'
    face policy and ``size_probe``, exact mode (every frame detected), 112x112 crops.
    """

    def __init__(self, options: CropOptions, detector: Any = None) -> None:
        self.options = options
        self._detector = detector
        self.preprocessor = Preprocessor()
        self.extractor = FaceExtractor(
            lambda: self.detector,
            options.policy,
            self.preprocessor,
            faces="main",
            size_probe=options.detector.size_probe,
        )

    @property
    def detector(self) -> Any:
        if self._detector is None:
            self._detector = open_detector(self.options.detector)
        return self._detector

    def __call__(self, path: str | os.PathLike[str]) -> VideoCrops:
        """The crops of one file; raises :class:`~core.errors.InvalidVideoError` for an
        unreadable file and :class:`InvalidInputError` when no crop is kept."""
        opts = self.options
        clip = self.extractor.read(path, opts.frames, opts.sampling)
        frames = clip.frames
        kind = opts.inputs
        if kind == "auto":
            kind = "clips" if is_face_clip(frames[0]) else "videos"
        record: dict[str, Any] = {"warnings": list(clip.warnings)}
        if kind == "clips":
            if not is_face_clip(frames[0]):
                raise InvalidInputError(
                    f"{path}: frames of {frames[0].shape[1]}x{frames[0].shape[0]} are not a face "
                    f"clip of `dfe preprocess` ({INPUT_SIZE}x{INPUT_SIZE}); use inputs=videos "
                    "or auto"
                )
            crops = np.stack([self.preprocessor.crop(f, None) for f in frames])
            n = len(frames)
            indices = list(clip.indices)
            return VideoCrops(str(path), crops, indices, [None] * n, "clip", n, 0, record)
        got = self.extractor.extract(frames, clip.indices)
        record.update(got.record())
        if not got.sequences:
            raise InvalidInputError(
                f"{path}: no face found in the {len(frames)} frames read, so no crop was kept "
                f"(no-face rule {opts.policy.no_face!r}; full_frame keeps whole frames)"
            )
        (seq,) = got.sequences
        return VideoCrops(
            str(path),
            np.stack(seq.crops),
            list(seq.frame_indices),
            [list(b) if b else None for b in seq.boxes],
            "video",
            seq.found,
            seq.reused,
            record,
        )


class CropCache:
    """A directory of cached :class:`VideoCrops`: ``<key>.npy`` (the crops) and
    ``<key>.json`` (the record), written atomically; the key is the sha256 of the file's
    resolved path, size and mtime and of :meth:`CropOptions.describe`."""

    def __init__(self, directory: str | os.PathLike[str], options: CropOptions) -> None:
        self.directory = Path(directory)
        self.options = options
        self._described = options.describe()

    def key(self, path: str | os.PathLike[str]) -> str:
        p = Path(path)
        st = p.stat()
        ident = {
            "version": CACHE_VERSION,
            "path": str(p.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "options": self._described,
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]

    def load(self, path: str | os.PathLike[str]) -> VideoCrops | None:
        """The cached crops of ``path``, or None when there are none (or they are unreadable)."""
        key = self.key(path)
        npy, meta = self.directory / f"{key}.npy", self.directory / f"{key}.json"
        if not (npy.is_file() and meta.is_file()):
            return None
        try:
            rec = json.loads(meta.read_text())
            crops = np.load(npy, mmap_mode="r")
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable cache entry %s: %s", npy, exc)
            return None
        if crops.ndim != 4 or crops.shape[0] != len(rec["frame_indices"]):
            log.warning("ignoring the inconsistent cache entry %s", npy)
            return None
        return VideoCrops(
            str(path),
            crops,
            rec["frame_indices"],
            rec["boxes"],
            rec["source"],
            rec["found"],
            rec["reused"],
            rec.get("record", {}),
        )

    def save(self, item: VideoCrops) -> VideoCrops:
        """Write ``item``; returns it backed by the cache file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.key(item.path)
        npy, meta = self.directory / f"{key}.npy", self.directory / f"{key}.json"
        tmp = npy.with_name(npy.name + ".part")
        with tmp.open("wb") as f:
            np.save(f, np.ascontiguousarray(item.crops, dtype=np.uint8))
        tmp.replace(npy)
        rec = {
            "video": item.path,
            "frame_indices": item.frame_indices,
            "boxes": item.boxes,
            "source": item.source,
            "found": item.found,
            "reused": item.reused,
            "record": item.record,
            "options": self._described,
        }
        tmp_meta = meta.with_name(meta.name + ".part")
        tmp_meta.write_text(json.dumps(rec) + "\n")
        tmp_meta.replace(meta)
        return VideoCrops(
            item.path,
            np.load(npy, mmap_mode="r"),
            item.frame_indices,
            item.boxes,
            item.source,
            item.found,
            item.reused,
            item.record,
        )


@dataclass(frozen=True)
class PreparedSet:
    """The usable videos of a set with their crops, and the ones left out with the reason."""

    videos: list[LabelledVideo]
    crops: list[VideoCrops]
    skipped: list[dict[str, str]]  # {"video", "label", "reason"}
    from_cache: int  # videos whose crops came from the cache


def prepare_crops(
    videos: Sequence[LabelledVideo],
    cache: CropCache,
    cropper: FaceCropper,
    *,
    min_crops: int,
    progress: Callable[[int], None] | None = None,
) -> PreparedSet:
    """Crops for every video: from ``cache``, else made by ``cropper`` and cached. A file that
    cannot be read, has no face under the no-face rule, or gives fewer than ``min_crops`` crops
    is left out and listed in ``skipped`` with the reason (logged as a warning), never dropped
    silently. ``progress(1)`` is called after each video."""
    kept: list[LabelledVideo] = []
    crops: list[VideoCrops] = []
    skipped: list[dict[str, str]] = []
    hits = 0
    for v in videos:
        try:
            item = cache.load(v.path) if Path(v.path).is_file() else None
            if item is None:
                item = cache.save(cropper(v.path))
            else:
                hits += 1
        except (EngineError, OSError) as exc:
            reason = str(exc)
            item = None
        else:
            reason = (
                f"{len(item)} face crops, fewer than the {min_crops} a sequence needs"
                if len(item) < min_crops
                else ""
            )
        if reason:
            log.warning("left out of training: %s (%s): %s", v.path, v.label, reason)
            skipped.append({"video": v.path, "label": v.label, "reason": reason})
        else:
            kept.append(v)
            crops.append(item)
        if progress is not None:
            progress(1)
    return PreparedSet(kept, crops, skipped, hits)


def augment_video(crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light augmentation of one video's crops (T, H, W, 3) uint8 BGR, the same for every frame
    (a video has one lighting and one orientation): a horizontal flip with probability 1/2, then
    brightness and contrast factors drawn from [0.9, 1.1] as torchvision's ``ColorJitter``
    applies them (contrast blends with the mean grey level, BGR luma weights 0.114/0.587/0.299).
    The crop itself is not moved or rescaled, so the tight-crop convention stays. Returns
    uint8, rounded and clipped."""
    flip = rng.random() < 0.5
    brightness = rng.uniform(0.9, 1.1)
    contrast = rng.uniform(0.9, 1.1)
    x = np.asarray(crops, dtype=np.float32)
    if flip:
        x = x[:, :, ::-1, :]
    x = np.clip(x * np.float32(brightness), 0, 255)
    grey = x @ np.array([0.114, 0.587, 0.299], dtype=np.float32)  # BGR order
    mean = grey.mean(axis=(1, 2), keepdims=True)[..., None]
    x = np.clip((x - mean) * np.float32(contrast) + mean, 0, 255)
    return np.ascontiguousarray(np.rint(x).astype(np.uint8))
