"""Every option of the engine, with its default and its allowed values, defined once.

Options are fields of frozen dataclasses. Each field's ``metadata`` (made by :func:`option`)
carries the command-line flag, the help text, the allowed values and bounds; the CLI
(:mod:`engine.options`), the web server and the Ray actors are all built from these classes, and
:func:`validate` checks any instance against the same metadata. Stage objects elsewhere take their
defaults from the constants below, so a default is written in exactly one place.

The allowed values of string options are module constants (``SAMPLING_MODES``, ...), imported by
the code that implements them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from core.compute import GPU_BACKENDS, ThreadBudget
from core.errors import InvalidInputError
from core.onnx_session import MAX_THREADS

# ------------------------------------------------------------------------------ allowed values

#: Inference backends by name; ``auto`` picks the first of ``AUTO_ORDER`` that runs here.
BACKEND_NAMES = ("auto", "tensorrt", "ort", "ort-cuda", "ort-tensorrt", "torch", "torch-cuda")
BACKEND_ALIASES = {"onnxruntime": "ort", "cpu": "ort", "trt": "tensorrt"}
AUTO_ORDER = ("tensorrt", "ort-cuda", "ort")
#: Numeric precisions of the classifier. Which backend runs which is each backend's own
#: declaration (``engine.backends.PRECISION_BACKENDS``); asking for one a backend cannot run is
#: an error, never a silent switch.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: Which frames of a video: the first N (the original) or N spread over the video.
SAMPLING_MODES = ("first", "uniform")
#: Who is scored: the main person followed through the video (a face track), every person
#: present in enough frames (each on its own), or the face of each frame chosen by the face rule
#: (the original's behaviour, frame by frame).
FACES_MODES = ("main", "all", "per-frame")
#: Which face of a frame, in ``per-frame`` mode: the highest detector score, or the largest box.
FACE_RULES = ("score", "largest")
#: A frame without a face at scoring time: classify the whole frame (the original) or drop it.
NO_FACE_RULES = ("full_frame", "drop")
#: A frame without a face in ``dfe preprocess`` clips: reuse the previous face's box (the
#: original's training preprocessing), skip the frame, or keep the whole frame.
CLIP_NO_FACE_RULES = ("previous", "skip", "full_frame")
#: The face box that is cropped: SCRFD's own, or SCRFD mapped to the box dlib's mmod detector
#: would draw (what the original's published checkpoints were trained on).
CROP_STYLES = ("scrfd", "dlib")
#: The largest crop margin (a fraction of the face box on each side): 10 puts the face in a
#: crop 21 times its size, already more frame than face; beyond it the box is out of any frame.
MAX_MARGIN = 10.0
#: Per-video reduction of per-frame logits: mean (the original's training code) or last frame
#: (the original web app).
REDUCE_MODES = ("mean", "last")
#: The detector's input: square (InsightFace's letterbox: exact mode, the default) or shaped
#: like the frame (aspect kept, sides multiples of 32: fast mode).
DETECTOR_INPUT_SHAPES = ("square", "frame")
#: Exact mode's detector input. The frame-shaped one runs a third less padding for 16:9 video
#: but its padding below the picture is shorter, so the network's outputs near the picture's
#: lower edge differ slightly and a rounded box can move by a pixel (issue 33: frames 38 and 52
#: of dfdc_like_fake at N=60); only the square input gives InsightFace's boxes on every frame.
DEFAULT_DETECTOR_INPUT_SHAPE = "square"
#: Video decoders: PyAV (FFmpeg) first and OpenCV as the fallback, or one of them.
DECODE_BACKENDS = ("auto", "pyav", "opencv")
#: Colour of decoded frames: converted to 8-bit BT.709 SDR as a player shows them (what the
#: model was trained on), or kept as decoded.
COLOUR_MODES = ("bt709", "keep")
#: Interlaced video: deinterlaced as a player does (FFmpeg's bwdif, one frame per frame), or its
#: woven fields kept as decoded.
DEINTERLACE_MODES = ("auto", "off")
#: Model variants: the published architecture (frames are the LSTM's batch) or the corrected
#: one (``batch_first=True``, a real recurrence over a video's frames).
VARIANTS = ("original", "sequence")
#: ``dfe train --init``: torchvision's ImageNet weights for the CNN, random weights (tests), or
#: else the path of a checkpoint to fine-tune.
TRAIN_INITS = ("imagenet", "random")
#: ``dfe train --device``: CUDA when available (``auto``), or one named (an error if absent).
TRAIN_DEVICES = ("auto", "cpu", "cuda")
#: ``dfe train --inputs``: what the labelled files are: videos (faces found and cropped by the
#: engine's stages), face clips made by ``dfe preprocess`` (used as they are), or ``auto``
#: (a file whose frames are exactly the model's input size is a face clip).
TRAIN_INPUTS = ("auto", "videos", "clips")

#: EngineConfig fields that configure face detection alone (``dfe detect``, ``dfe preprocess``,
#: ``dfe build``'s calibration crops).
DETECTOR_FIELDS = (
    "detector",
    "models_dir",
    "download",
    "detector_input",
    "score_threshold",
    "detector_batch",
    "intra_op_threads",
    "compute_workers",
)
#: EngineConfig fields ``dfe train`` uses: face detection for its crops (``size_probe`` as the
#: runtime; ``download`` also covers the ImageNet weights of ``--init imagenet``).
TRAIN_DETECTOR_FIELDS = (*DETECTOR_FIELDS, "size_probe")

# ------------------------------------------------------------------------------ defaults

DEFAULT_SEQ_LEN = 20  # the original web app's default slider position
#: ``dfe train``'s validation share when no validation CSV is given: the original notebook kept
#: the first 80% of its shuffled videos for training and the rest for validation.
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_CLASSIFIER_BATCH = 64
DEFAULT_DETECTOR = "det_500m"
DEFAULT_DETECTOR_INPUT = 640  # InsightFace's single-scale SCRFD input
DEFAULT_SCORE_THRESHOLD = 0.5  # InsightFace's det_thresh
DEFAULT_NMS_THRESHOLD = 0.4  # InsightFace's SCRFD nms_thresh
# Frames per detector run. On CPU, batching SCRFD does not pay: measured on 2 cores, 1.75
# videos/s at batch 1 against 0.85 at batch 16 (issue 4's note); on GPUs it does.
CPU_DETECTOR_BATCH = 1
GPU_DETECTOR_BATCH = 16


def option(
    help: str,
    *,
    flag: str | None = None,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    exclusive_minimum: float | None = None,
    maximum: float | None = None,
    metavar: str | None = None,
    cli: bool = True,
    score: bool | None = None,
) -> dict[str, Any]:
    """Metadata of a config field: its help text, its ``--flag`` (default: the field name with
    dashes), allowed values, bounds, whether the CLI offers it, and whether its value can change
    a score (``score``: such fields go into every record's provenance and must match for
    ``--resume`` to count a record as done; :class:`EngineConfig` and :class:`SequenceConfig`
    fields must say, a test checks it)."""
    return {
        "help": help,
        "score": score,
        "flag": flag,
        "choices": choices,
        "minimum": minimum,
        "exclusive_minimum": exclusive_minimum,
        "maximum": maximum,
        "metavar": metavar,
        "cli": cli,
    }


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(the type, whether None is allowed) of a resolved annotation like ``int | None``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return rest[0], len(rest) < len(args)
    return annotation, False


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, resolved once per class: it re-evaluates every string
    annotation on each call (the suite's tests without full models made 49,000 such calls, 31 s
    of their 548 s under cProfile)."""
    return typing.get_type_hints(cls)


def field_type(cls: type, name: str) -> tuple[type, bool]:
    """The base type of field ``name`` of the config class ``cls``, and whether it may be None."""
    return _base_type(type_hints(cls)[name])


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a config field (its metadata's, else ``--field-name``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def validate(config: Any) -> None:
    """Check every field of a config dataclass against its type and :func:`option` metadata.

    Raises :class:`InvalidInputError` naming the option, the value and the supported values.
    A field the command line offers is named by its flag first (``--margin must be a finite
    number, got nan (EngineConfig.margin)``), so the message reads right in a terminal and in
    Python."""
    hints = type_hints(type(config))
    for f in dataclasses.fields(config):
        try:
            _validate_field(f, getattr(config, f.name), hints[f.name])
        except InvalidInputError as exc:
            if f.metadata.get("cli", True) and f.metadata.get("help"):
                text = str(exc)
                if text.startswith(f.name):
                    text = flag_of(f) + text[len(f.name) :]
                raise InvalidInputError(f"{text} ({type(config).__name__}.{f.name})") from None
            raise


def score_fields(cls: type) -> tuple[str, ...]:
    """The fields of config class ``cls`` whose value can change a score (their ``option``
    metadata says ``score=True``): what a record's provenance carries and ``--resume``
    compares."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("score"))


def _validate_field(f: dataclasses.Field, value: Any, hint: Any) -> None:
    kind, nullable = _base_type(hint)
    meta = f.metadata
    if value is None:
        if nullable:
            return
        raise InvalidInputError(f"{f.name} must not be None")
    if kind is int:
        if isinstance(value, bool):
            raise InvalidInputError(f"{f.name} must be an integer, got {value!r}")
        try:
            value = operator.index(value)
        except TypeError:
            raise InvalidInputError(f"{f.name} must be an integer, got {value!r}") from None
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInputError(f"{f.name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise InvalidInputError(f"{f.name} must be a finite number, got {value!r}")
    elif kind is bool and not isinstance(value, bool):
        raise InvalidInputError(f"{f.name} must be True or False, got {value!r}")
    elif kind is str and not isinstance(value, str):
        raise InvalidInputError(f"{f.name} must be a string, got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise InvalidInputError(
            f"{f.name}={value!r} is not supported; supported values are "
            f"{', '.join(map(str, choices))}"
        )
    low, strict = meta.get("minimum"), meta.get("exclusive_minimum")
    if low is not None and value < low:
        raise InvalidInputError(f"{f.name} must be >= {low}, got {value!r}")
    if strict is not None and value <= strict:
        raise InvalidInputError(f"{f.name} must be > {strict}, got {value!r}")
    high = meta.get("maximum")
    if high is not None and value > high:
        raise InvalidInputError(f"{f.name} must be <= {high}, got {value!r}")


def default_of(cls: type, name: str) -> Any:
    """The default value of field ``name`` of config class ``cls`` (the one place it is set)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def canonical_backend(name: str) -> str:
    """``name`` with aliases resolved (``trt`` -> ``tensorrt``; ``onnxruntime``, ``cpu`` ->
    ``ort``)."""
    return BACKEND_ALIASES.get(name, name)


# ------------------------------------------------------------------------------ the configs


@dataclass(frozen=True)
class EngineConfig:
    """Options of an :class:`engine.api.Engine` (validated on construction).

    ``Engine.load(model_dir, **fields)`` takes these fields as keywords; ``dfe predict``,
    ``dfe serve``, ``dfe score``, ``dfe eval`` and ``dfe explain`` offer each as a flag.
    """

    backend: str = field(
        default="auto",
        metadata=option(
            "inference backend (auto: the best one that can run here; a backend named "
            "explicitly that cannot run is an error, never a silent fallback)",
            choices=(*BACKEND_NAMES, *BACKEND_ALIASES),
            score=True,
        ),
    )
    precision: str = field(
        default="fp32",
        metadata=option(
            "classifier precision: fp32; int8 (the Q/DQ graph of `dfe build MODEL --precision "
            "int8`: ONNX Runtime CPU or TensorRT); fp16 (TensorRT, torch-cuda); bf16 "
            "(torch-cuda). A backend that cannot run it is an error",
            choices=PRECISIONS,
            score=True,
        ),
    )
    batch_size: int = field(
        default=DEFAULT_CLASSIFIER_BATCH,
        metadata=option(
            "classifier frames per batch (frames of several videos share one)",
            minimum=1,
            score=False,
        ),
    )
    detector: str = field(
        default=DEFAULT_DETECTOR,
        metadata=option(
            "SCRFD model: a known name (det_500m, det_2.5g, det_10g) or an .onnx path", score=True
        ),
    )
    models_dir: str | None = field(
        default=None,
        metadata=option(
            "models directory (default: $DFE_MODELS or ~/.cache/deepfake-engine/models)",
            flag="--models",
            metavar="DIR",
            score=False,
        ),
    )
    download: bool = field(
        default=True,
        metadata=option("never download detector files", flag="--no-download", score=False),
    )
    detector_batch: int | None = field(
        default=None,
        metadata=option(
            f"frames per detector run (default: {GPU_DETECTOR_BATCH} on GPU backends, "
            f"{CPU_DETECTOR_BATCH} on CPU, where batching SCRFD does not pay)",
            minimum=1,
            score=False,
        ),
    )
    detector_input: int = field(
        default=DEFAULT_DETECTOR_INPUT,
        metadata=option(
            "detector input (letterbox) size in pixels, a multiple of 32",
            flag="--input-size",
            minimum=32,
            maximum=4096,
            score=True,
        ),
    )
    detect_every: int = field(
        default=1,
        metadata=option(
            "fast mode: detect faces on every K-th sampled frame (and the last) and follow the "
            "face tracks in between; 1 (default) is exact mode, every frame detected",
            minimum=1,
            score=True,
        ),
    )
    detector_input_shape: str = field(
        default=DEFAULT_DETECTOR_INPUT_SHAPE,
        metadata=option(
            "detector input: square (InsightFace's 640x640 letterbox; exact mode, its boxes on "
            "every frame) or frame (fast mode: shaped like the frame, e.g. 640x384 for 16:9, a "
            "third less detector work; a box near the picture's lower edge can move by a pixel)",
            choices=DETECTOR_INPUT_SHAPES,
            score=True,
        ),
    )
    size_probe: bool = field(
        default=True,
        metadata=option(
            "never look for faces the default detector input misses (very small or very large "
            "faces); by default a cheap probe per video chooses the input, keeping the default "
            "when its faces are of a size it detects well",
            flag="--no-size-probe",
            score=True,
        ),
    )
    score_threshold: float = field(
        default=DEFAULT_SCORE_THRESHOLD,
        metadata=option("detector score threshold, 0-1", minimum=0.0, score=True),
    )
    faces: str = field(
        default="main",
        metadata=option(
            "who is scored: main (the person present in most frames, followed as a face "
            "track), all (every person in at least a quarter of the frames, or 4, each on its "
            "own; the video's p_fake is the most-fake person's), per-frame (the --face rule in "
            "each frame, as the original)",
            choices=FACES_MODES,
            score=True,
        ),
    )
    face: str = field(
        default="score",
        metadata=option(
            "per-frame mode: which face of a frame to crop, highest score or largest",
            choices=FACE_RULES,
            score=True,
        ),
    )
    margin: float = field(
        default=0.0,
        metadata=option(
            "crop margin, a fraction of the face box on each side (the original: 0)",
            minimum=0.0,
            maximum=MAX_MARGIN,
            score=True,
        ),
    )
    no_face: str = field(
        default="full_frame",
        metadata=option(
            "a frame without a face: classify the whole frame (the original) or drop it",
            choices=NO_FACE_RULES,
            score=True,
        ),
    )
    crop_style: str | None = field(
        default=None,
        metadata=option(
            "face box to crop: SCRFD's own, or SCRFD mapped to the square box dlib's mmod "
            "detector draws (what the original's published checkpoints were trained on; no "
            "dlib needed); default: the model's, recorded at export",
            choices=CROP_STYLES,
            score=True,
        ),
    )
    decode_backend: str = field(
        default="auto",
        metadata=option(
            "video decoder: PyAV first, OpenCV as fallback, or one",
            choices=DECODE_BACKENDS,
            score=True,
        ),
    )
    colour: str = field(
        default="bt709",
        metadata=option(
            "frame colour: bt709 converts wide-gamut and HDR (PQ, HLG) video to 8-bit BT.709 "
            "SDR as a player shows it, what the model was trained on (recorded); keep leaves "
            "the pixels as decoded",
            choices=COLOUR_MODES,
            score=True,
        ),
    )
    deinterlace: str = field(
        default="auto",
        metadata=option(
            "interlaced video: auto deinterlaces the frames flagged interlaced (and streams "
            "whose field order says so) with FFmpeg's bwdif as a player does, one frame per "
            "frame (recorded); off keeps the woven fields as decoded",
            choices=DEINTERLACE_MODES,
            score=True,
        ),
    )
    timeline: bool = field(
        default=False,
        metadata=option(
            "also score the whole video at --timeline-fps, per person, and find the segments "
            "judged manipulated (engine.timeline); a video with one is not REAL",
            score=True,
        ),
    )
    timeline_fps: float = field(
        default=2.0,
        metadata=option(
            "frames per second of video the timeline scores",
            exclusive_minimum=0.0,
            maximum=60.0,
            score=True,
        ),
    )
    decode_workers: int = field(
        default=0,
        metadata=option(
            "videos decoded at once when scoring many (0: on CPU backends as many as "
            "decoding's measured share of the CPU needs, starting at one per two usable cores, "
            "or one per core with --sampling uniform; two on GPU backends)",
            minimum=0,
            maximum=MAX_THREADS,
            score=False,
        ),
    )
    decode_threads: int = field(
        default=1,
        metadata=option(
            "FFmpeg threads per video decoded (0: FFmpeg's choice, one per core); one is the "
            "most efficient when several videos are decoded at once (core.compute)",
            minimum=0,
            maximum=MAX_THREADS,
            score=False,
        ),
    )
    stage_workers: int = field(
        default=1,
        metadata=option(
            "batches of videos detected and classified at once by predict_many (each stage)",
            minimum=1,
            maximum=MAX_THREADS,
            score=False,
        ),
    )
    max_in_flight: int = field(
        default=8,
        metadata=option(
            "videos between decoding and result at once (bounds memory)", minimum=1, score=False
        ),
    )
    intra_op_threads: int = field(
        default=0,
        metadata=option(
            "ONNX Runtime threads per network call (0: $DFE_ORT_THREADS, else 1 on CPU, where "
            "--compute-workers calls run at once; ONNX Runtime's default on GPU backends)",
            flag="--threads",
            minimum=0,
            maximum=MAX_THREADS,
            score=False,
        ),
    )
    detector_threads: int | None = field(
        default=None,
        metadata=option(
            "ONNX Runtime threads per SCRFD call (default: --threads)",
            minimum=0,
            maximum=MAX_THREADS,
            score=False,
        ),
    )
    compute_workers: int = field(
        default=0,
        metadata=option(
            "network calls at once on CPU (SCRFD frames, classifier chunks), one thread per "
            "call each (0: one per usable core, divided by --threads; core.compute)",
            minimum=0,
            maximum=MAX_THREADS,
            score=False,
        ),
    )
    checkpoint: str | None = field(
        default=None,
        metadata=option(
            "training checkpoint for the torch backends (default: the one recorded at export)",
            metavar="PT",
            score=True,
        ),
    )
    hash_inputs: bool = field(
        default=False,
        metadata=option(
            "add each input's sha256 to its record's provenance, and compare content, not only "
            "path, size and modification time, when --resume decides what is already done",
            flag="--hash",
            score=False,
        ),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.score_threshold > 1:
            raise InvalidInputError(
                f"--score-threshold must be in [0, 1], got {self.score_threshold} "
                "(EngineConfig.score_threshold)"
            )
        if self.detector_input % 32:
            raise InvalidInputError(
                f"--input-size must be a multiple of 32 (SCRFD's largest stride), got "
                f"{self.detector_input} (EngineConfig.detector_input)"
            )

    @property
    def backend_name(self) -> str:
        """The backend with aliases resolved."""
        return canonical_backend(self.backend)

    def thread_budget(self, backend: str) -> ThreadBudget:
        """How the threads share the cores on ``backend`` (the running backend's name):
        :meth:`core.compute.ThreadBudget.resolve` of this config's thread options."""
        return ThreadBudget.resolve(
            backend,
            intra_op_threads=self.intra_op_threads,
            detector_threads=self.detector_threads,
            compute_workers=self.compute_workers,
            decode_workers=self.decode_workers,
        )

    def detector_batch_for(self, backend: str) -> int:
        """Frames per detector run on ``backend`` (the running backend's name)."""
        if self.detector_batch is not None:
            return self.detector_batch
        return GPU_DETECTOR_BATCH if backend in GPU_BACKENDS else CPU_DETECTOR_BATCH

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SequenceConfig:
    """Which frames of a video are scored (a per-call choice: ``Engine.predict(seq_len=...,
    sampling=...)``)."""

    seq_len: int | None = field(
        default=None,
        metadata=option(
            f"frames per video (default: the N the model was trained for, else {DEFAULT_SEQ_LEN})",
            minimum=1,
            score=True,
        ),
    )
    sampling: str = field(
        default="first",
        metadata=option(
            "first N frames (the original) or N spread over the whole video",
            choices=SAMPLING_MODES,
            score=True,
        ),
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class RayConfig:
    """How a Ray job is laid out (``dfe score --ray``, ``dfe eval --ray``)."""

    address: str | None = field(
        default=None,
        metadata=option(
            "Ray cluster to join ('auto', or HOST:PORT of `ray start --head`); default: start a "
            "local cluster on this machine"
        ),
    )
    num_workers: int = field(default=1, metadata=option("actors, one Engine each", minimum=1))
    cpus_per_worker: float | None = field(
        default=None,
        metadata=option(
            "CPUs reserved per actor, fractions allowed (default: up to 1, always leaving one "
            "CPU of the cluster for Ray Data's other tasks)",
            exclusive_minimum=0.0,
        ),
    )
    gpus_per_worker: float = field(
        default=0.0, metadata=option("GPUs per actor (0.5 ok)", minimum=0.0)
    )
    videos_per_batch: int = field(default=4, metadata=option("videos per actor call", minimum=1))
    memory_per_worker: float | None = field(
        default=None,
        metadata=option(
            "memory Ray reserves per actor, GB (about 1.5-2 GB for 1080p videos)",
            metavar="GB",
            exclusive_minimum=0.0,
        ),
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``dfe train`` and :func:`export.train.train` (validated on construction).

    Defaults follow the original training notebook where it was sound (Adam, lr 1e-5, weight
    decay 1e-5, cross-entropy, batch 4, 20 epochs, label 1 = REAL, BGR input with ImageNet
    statistics, an 80/20 split), plus a fixed seed and light augmentation. Face detection
    options are those of :class:`EngineConfig` (``DETECTOR_FIELDS`` and ``size_probe``).
    """

    seq_len: int = field(
        default=DEFAULT_SEQ_LEN,
        metadata=option("frames per training sequence (the N of the checkpoint)", minimum=1),
    )
    clip_frames: int | None = field(
        default=None,
        metadata=option(
            "face crops cached per video (default: --seq-len); with more, each training epoch "
            "takes a random window of --seq-len consecutive crops, validation the first ones",
            minimum=1,
        ),
    )
    sampling: str = field(
        default="first",
        metadata=option(
            "which frames of a video are cropped: the first ones (the original) or spread over "
            "the whole video (score with the same --sampling)",
            choices=SAMPLING_MODES,
        ),
    )
    epochs: int = field(default=20, metadata=option("training epochs", minimum=1))
    batch_size: int = field(default=4, metadata=option("videos per mini-batch", minimum=1))
    lr: float = field(default=1e-5, metadata=option("Adam learning rate", exclusive_minimum=0.0))
    weight_decay: float = field(
        default=1e-5, metadata=option("Adam weight decay (L2)", minimum=0.0)
    )
    init: str = field(
        default="imagenet",
        metadata=option(
            "starting weights: imagenet (torchvision's ResNeXt50 weights for the CNN, from the "
            "local torch cache), random, or the path of a checkpoint to fine-tune",
            metavar="imagenet|random|CHECKPOINT",
        ),
    )
    variant: str | None = field(
        default=None,
        metadata=option(
            "original: the published architecture with the semantics the engine runs (each "
            "frame one LSTM step from a zero state, mean over frames); sequence: LSTM with "
            "bias, batch_first=True, a real recurrence over a video's frames (default: the "
            "--init checkpoint's, else original)",
            choices=VARIANTS,
        ),
    )
    freeze_backbone: bool = field(
        default=False,
        metadata=option(
            "train the LSTM and the linear layer only (the CNN, BatchNorm statistics included, "
            "stays as initialised)"
        ),
    )
    val: str | None = field(
        default=None,
        metadata=option("validation set: a second file,label CSV", metavar="LABELS_VAL.csv"),
    )
    val_fraction: float | None = field(
        default=None,
        metadata=option(
            "share of the videos held out for validation, split by video and per class "
            f"(default {DEFAULT_VAL_FRACTION} without --val; 0: no validation)",
            minimum=0.0,
        ),
    )
    seed: int = field(
        default=0,
        metadata=option("seed of initialisation, split, data order and augmentation", minimum=0),
    )
    augment: bool = field(
        default=True,
        metadata=option(
            "no augmentation (default: a horizontal flip and brightness/contrast factors in "
            "[0.9, 1.1], the same for every frame of a video; crops stay tight)",
            flag="--no-augment",
        ),
    )
    device: str = field(
        default="auto",
        metadata=option("training device (auto: CUDA when available)", choices=TRAIN_DEVICES),
    )
    amp: bool = field(
        default=True,
        metadata=option(
            "no mixed precision (default on CUDA: fp16 autocast with gradient scaling; CPU "
            "always trains in fp32)",
            flag="--no-amp",
        ),
    )
    resume: bool = field(
        default=False,
        metadata=option(
            "continue the run in OUTDIR from its last finished epoch (same options; --epochs "
            "may grow)"
        ),
    )
    crop_style: str | None = field(
        default=None,
        metadata=option(
            "face box to crop (recorded with the checkpoints; `dfe export` uses it): default "
            "the --init checkpoint's style (dlib for the original's published checkpoints), "
            "else scrfd. For face clips, the style they were made with",
            choices=CROP_STYLES,
        ),
    )
    margin: float = field(
        default=0.0,
        metadata=option(
            "crop margin, a fraction of the face box on each side",
            minimum=0.0,
            maximum=MAX_MARGIN,
        ),
    )
    no_face: str = field(
        default="previous",
        metadata=option(
            "a frame without the person's face: reuse the previous box (the original's "
            "training preprocessing), skip the frame, or keep the whole frame",
            choices=CLIP_NO_FACE_RULES,
        ),
    )
    inputs: str = field(
        default="auto",
        metadata=option(
            "what the labelled files are: videos, face clips of `dfe preprocess`, or auto "
            "(frames of exactly 112x112 are a face clip)",
            choices=TRAIN_INPUTS,
        ),
    )
    data_name: str | None = field(
        default=None,
        metadata=option(
            "the <data> part of model_<acc>_acc_<N>_frames_<data>.pt (default: the labels "
            "file's name)",
            metavar="NAME",
        ),
    )
    cache_dir: str | None = field(
        default=None,
        metadata=option(
            "face crop cache, reusable across runs (default: OUTDIR/crops)",
            flag="--cache",
            metavar="DIR",
        ),
    )
    plots: bool = field(
        default=True,
        metadata=option("no curves.png (needs matplotlib, the `eval` extra)", flag="--no-plots"),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.clip_frames is not None and self.clip_frames < self.seq_len:
            raise InvalidInputError(
                f"clip_frames ({self.clip_frames}) must be at least seq_len ({self.seq_len})"
            )
        if self.val_fraction is not None and self.val_fraction >= 1:
            raise InvalidInputError(
                f"val_fraction must be in [0, 1), got {self.val_fraction} (0: no validation)"
            )
        if self.val is not None and self.val_fraction:
            raise InvalidInputError(
                "give either a validation CSV (val) or a val_fraction, not both"
            )
        if not self.init.strip():
            raise InvalidInputError(
                "init must be imagenet, random or the path of a checkpoint; got an empty string"
            )

    @property
    def frames_per_video(self) -> int:
        """Face crops cached per video: ``clip_frames``, else ``seq_len``."""
        return self.clip_frames or self.seq_len

    @property
    def validation_share(self) -> float:
        """The share split off for validation (0 with a validation CSV or none wanted)."""
        if self.val is not None:
            return 0.0
        return DEFAULT_VAL_FRACTION if self.val_fraction is None else self.val_fraction

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)
