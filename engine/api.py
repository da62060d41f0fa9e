"""The embeddable Python API: ``Engine.load(model_dir)``, ``predict`` and ``predict_many``.

Torch-free on the ONNX Runtime paths, thread-safe (sessions are shared, calls keep their state on
the stack), and never silently changes backend. ``predict_many`` runs a pipeline whose stages
overlap in threads (FFmpeg and ONNX Runtime release the GIL): decode (a pool), batched detection
across videos, crop and normalise, batched classification across videos, per-video reduction.
Queues are bounded by the number of videos in flight, so memory stays flat over any job length.
A video that fails becomes an error record; the job goes on.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.backends import get_factory
from engine.errors import EngineError, InvalidInputError, ModelFormatError
from engine.models import ModelCatalog, load_catalog
from engine.reduce import label_of, reduce_logits, softmax
from engine.sidecar import PRECISIONS, ModelSpec
from preprocess.crop import INPUT_SIZE, crop_box, face_crop, normalize, resize_pil
from preprocess.dlib_map import check_crop_style, face_box
from preprocess.sampling import check_count, check_sampling

if TYPE_CHECKING:
    from engine.backends.base import GraphBackend
    from engine.backends.torch_detector import TorchSCRFDDetector
    from preprocess.scrfd import Face, SCRFDDetector

log = logging.getLogger(__name__)

FACE_POLICIES = ("score", "largest")
NO_FACE_POLICIES = ("full_frame", "drop")
DEFAULT_SEQ_LEN = 20
GPU_BACKENDS = ("ort-cuda", "ort-tensorrt", "tensorrt", "torch-cuda")


@dataclass(frozen=True)
class EngineConfig:
    """Options of an :class:`Engine` (validated on construction)."""

    backend: str = "auto"
    precision: str = "fp32"
    batch_size: int = 64  # classifier frames per batch (frames of several videos share it)
    detector: str = "det_500m"  # a known model name or the path of an SCRFD .onnx
    models_dir: str | None = None
    download: bool = True
    # frames per detector run; None: 16 on GPU backends, 1 on CPU, where batching SCRFD does
    # not pay (measured on 2 cores: 1.75 videos/s at batch 1 against 0.85 at batch 16)
    detector_batch: int | None = None
    detector_input: int = 640
    score_threshold: float = 0.5
    face: str = "score"  # which face of a frame: highest score, or largest box
    margin: float = 0.0  # crop margin, a fraction of the box size on each side
    no_face: str = "full_frame"  # a frame without a face: whole frame (original) or drop it
    # "scrfd": SCRFD's box; "dlib": SCRFD mapped to the box dlib's mmod detector would draw, as
    # the original checkpoints were trained on; None: the model sidecar's default
    crop_style: str | None = None
    decode_backend: str = "auto"
    decode_workers: int = 2
    max_in_flight: int = 8  # videos between decode and result, bounds memory
    intra_op_threads: int = 0  # ONNX Runtime threads per session (0: its default)
    checkpoint: str | None = None  # for the torch backend

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("face", self.face, FACE_POLICIES),
            ("no_face", self.no_face, NO_FACE_POLICIES),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise InvalidInputError(
                    f"{name}={value!r} is not supported; supported values are {', '.join(allowed)}"
                )
        if self.detector_batch is not None:
            check_count(self.detector_batch, name="detector_batch")
        for name in ("batch_size", "decode_workers", "max_in_flight"):
            check_count(getattr(self, name), name=name)
        if self.crop_style is not None:
            check_crop_style(self.crop_style)
        if self.margin < 0:
            raise InvalidInputError(f"margin must be >= 0, got {self.margin}")


@dataclass(frozen=True)
class Prediction:
    """The result for one video (or one sequence of frames or crops)."""

    video: str
    status: str  # "ok" or "error"
    error: str | None = None
    label: str | None = None  # "REAL" or "FAKE"
    confidence: float | None = None  # 0-100, the winning class's probability, as the original
    p_fake: float | None = None
    frames: int = 0  # frames used
    faces: int = 0  # frames in which a face was found
    frame_p_fake: list[float] = field(default_factory=list)
    frame_indices: list[int] = field(default_factory=list)
    boxes: list[list[int] | None] = field(default_factory=list)  # crop box per frame used
    crop_style: str | None = None  # "scrfd" or "dlib" (None: the caller's own crops)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    seq_len: int | None = None
    sampling: str | None = None
    reduce: str | None = None
    backend: str | None = None
    model: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Inspection:
    """One video scored as :meth:`Engine.predict` scores it, with what went into the score."""

    prediction: Prediction
    crops: list[np.ndarray]  # the 112x112 BGR face crops, one per frame used
    frames: list[np.ndarray | None]  # the full BGR frames used (None where not kept)
    outputs: dict[str, np.ndarray]  # the classifier's other outputs asked for, one row per frame


@dataclass
class _Work:
    """One video travelling through the pipeline."""

    index: int
    name: str
    source: Any = None
    frames: list[np.ndarray] = field(default_factory=list)
    frame_indices: list[int] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    boxes: list[list[int] | None] = field(default_factory=list)
    faces: int = 0
    detect: bool = True
    crop_style: str = "scrfd"
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, EngineError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


_SENTINEL = object()


class Engine:
    """A loaded model (or catalog of models for several N), a backend and a detector."""

    def __init__(self, catalog: ModelCatalog, config: EngineConfig) -> None:
        self.catalog = catalog
        self.config = config
        options = {"intra_op_threads": config.intra_op_threads}
        if config.checkpoint:
            options["checkpoint"] = config.checkpoint
        # TensorRT engines are built for batches up to the classifier batch
        options["max_batch"] = config.batch_size
        self._factory = get_factory(config.backend, precision=config.precision, **options)
        self.backend = self._factory.name
        self._lock = threading.Lock()
        self._runners: dict[Path, tuple[GraphBackend, GraphBackend | None]] = {}
        self._detector: SCRFDDetector | None = None
        if catalog.single:
            self._get_runners(catalog.specs[0])  # fail now, not on the first video

    @classmethod
    def load(
        cls, model: str | os.PathLike[str], *, backend: str = "auto", **options: Any
    ) -> Engine:
        """Load an exported model directory (or a directory of them, one per N).

        ``backend``: ``auto``, ``tensorrt`` (``trt``), ``ort``, ``ort-cuda``, ``ort-tensorrt``,
        ``torch``, ``torch-cuda``. ``precision``: ``fp32``; ``int8`` (the Q/DQ graph made by
        ``dfe build --precision int8``; ONNX Runtime CPU or TensorRT); ``fp16`` (TensorRT,
        ``torch-cuda``); ``bf16`` (``torch``, ``torch-cuda``).
        Other options are the fields of :class:`EngineConfig`.
        """
        return cls(load_catalog(model), EngineConfig(backend=backend, **options))

    # ------------------------------------------------------------------ resources

    def _get_runners(self, spec: ModelSpec) -> tuple[GraphBackend, GraphBackend | None]:
        with self._lock:
            if spec.directory not in self._runners:
                cls = self._factory(
                    "classifier", spec.classifier_for(self.config.precision), spec=spec
                )
                head = (
                    self._factory("head", spec.head_file, spec=spec)
                    if spec.head_file is not None
                    else None
                )
                self._runners[spec.directory] = (cls, head)
            return self._runners[spec.directory]

    @property
    def detector_batch(self) -> int:
        if self.config.detector_batch is not None:
            return self.config.detector_batch
        return 16 if self.backend in GPU_BACKENDS else 1

    @property
    def detector(self) -> SCRFDDetector | TorchSCRFDDetector:
        with self._lock:
            if self._detector is None:
                from preprocess.scrfd import SCRFDDetector
                from weights import find_model

                path = find_model(
                    self.config.detector,
                    models_dir=self.config.models_dir,
                    download=self.config.download,
                )
                make_detector = getattr(self._factory, "make_detector", None)
                if make_detector is not None:  # torch-cuda: SCRFD in PyTorch on the same GPU
                    self._detector = make_detector(
                        path,
                        input_size=self.config.detector_input,
                        score_threshold=self.config.score_threshold,
                        batch_size=self.detector_batch,
                    )
                    return self._detector
                providers = (
                    ("CUDAExecutionProvider", "CPUExecutionProvider")
                    if self.backend in GPU_BACKENDS
                    else ("CPUExecutionProvider",)
                )
                session = None
                trt_detector = getattr(self._factory, "detector_session", None)
                if trt_detector is not None:  # TensorRT: the detector on the classifier's stream
                    session = trt_detector(
                        path,
                        batch=self.detector_batch,
                        input_size=self.config.detector_input,
                        model_dir=self.catalog.specs[0].directory,
                    )
                self._detector = SCRFDDetector(
                    path,
                    input_size=self.config.detector_input,
                    score_threshold=self.config.score_threshold,
                    batch_size=self.detector_batch,
                    providers=providers,
                    intra_op_threads=self.config.intra_op_threads,
                    session=session,
                )
            return self._detector

    def spec_for(self, seq_len: int | None) -> ModelSpec:
        return self.catalog.pick(seq_len)

    def crop_style_for(self, spec: ModelSpec) -> str:
        """The configured crop style, else the model's default (``scrfd`` when its sidecar
        names none)."""
        return check_crop_style(self.config.crop_style or spec.crop_style or "scrfd")

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.config.precision,
            "models": [str(s.directory) for s in self.catalog.specs],
            "seq_lens": self.catalog.seq_lens(),
            "demo": any(s.demo for s in self.catalog.specs),
        }

    # ------------------------------------------------------------------ stages

    def _decode(self, work: _Work, n: int, sampling: str) -> None:
        from preprocess.video import read_video

        t = time.perf_counter()
        clip = read_video(work.source, n, sampling=sampling, backend=self.config.decode_backend)
        work.frames, work.frame_indices = clip.frames, clip.indices
        work.warnings.extend(clip.warnings)
        work.timings["decode"] = time.perf_counter() - t

    def _detect_and_crop(self, works: Sequence[_Work]) -> None:
        """Detection on the frames of several videos in shared batches, then crops."""
        todo = [w for w in works if w.error is None and w.detect]
        frames = [f for w in todo for f in w.frames]
        if frames:
            t = time.perf_counter()
            faces = self.detector.detect(frames)
            share = (time.perf_counter() - t) / len(frames)
            pos = 0
            for w in todo:
                count = len(w.frames)
                w.timings["detect"] = share * count
                t = time.perf_counter()
                self._crop(w, faces[pos : pos + count])
                w.timings["crop"] = time.perf_counter() - t
                pos += count

    def _pick_face(self, faces: list[Face]) -> Face | None:
        if not faces:
            return None
        if self.config.face == "largest":
            return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        return faces[0]  # sorted by score, highest first

    def _crop(self, work: _Work, faces: list[list[Face]]) -> None:
        crops, boxes, indices = [], [], []
        found = 0
        for frame, idx, frame_faces in zip(work.frames, work.frame_indices, faces):
            face = self._pick_face(frame_faces)
            box = (
                crop_box(face_box(face, work.crop_style), frame.shape, margin=self.config.margin)
                if face
                else None
            )
            if box is None and self.config.no_face == "drop":
                continue
            found += box is not None
            crops.append(face_crop(frame, box))
            boxes.append(list(box) if box else None)
            indices.append(idx)
        if not crops:
            raise InvalidInputError(
                f"{work.name}: no face in any of the {len(work.frames)} frames read, and "
                "no_face='drop' leaves nothing to classify; use no_face='full_frame' to classify "
                "whole frames as the original did"
            )
        work.crops, work.boxes, work.frame_indices, work.faces = crops, boxes, indices, found
        work.frames = []  # release the full-size frames early

    def _classify(
        self,
        works: Sequence[_Work],
        spec: ModelSpec,
        extra: dict[str, list[np.ndarray]] | None = None,
    ) -> list[np.ndarray]:
        """Per-frame (or per-step) logits of each video; all frames share classifier batches.
        For each name in ``extra`` the classifier's output of that name is also computed and
        stored there, one array per video."""
        classifier, head = self._get_runners(spec)
        lengths = [len(w.crops) for w in works]
        batch = normalize(np.stack([c for w in works for c in w.crops]))
        t = time.perf_counter()
        size = self.config.batch_size
        key = "logits" if head is None else "features"
        names = [key, *(extra or {})]
        rows = [
            classifier.infer({"frames": batch[i : i + size]}, names)
            for i in range(0, len(batch), size)
        ]
        bounds = np.cumsum([0, *lengths])

        def split(name: str) -> list[np.ndarray]:
            out = np.concatenate([r[name] for r in rows])
            return [out[bounds[i] : bounds[i + 1]] for i in range(len(works))]

        for name in extra or {}:
            extra[name] = split(name)
        per_video = split(key)
        if head is not None:
            padded = np.zeros((len(works), max(lengths), per_video[0].shape[1]), np.float32)
            for i, f in enumerate(per_video):
                padded[i, : len(f)] = f
            steps = head.infer({"features": padded}, ["logits"])["logits"]
            per_video = [steps[i, :n] for i, n in enumerate(lengths)]
        share = (time.perf_counter() - t) / max(len(batch), 1)
        for w, n in zip(works, lengths):
            w.timings["classify"] = share * n
        return per_video

    def _result(
        self,
        work: _Work,
        logits: np.ndarray | None,
        spec: ModelSpec | None,
        n: int | None,
        sampling: str | None,
    ) -> Prediction:
        timings = {k: round(v, 6) for k, v in work.timings.items()}
        timings["total"] = round(time.perf_counter() - work.started, 6)
        common = {
            "video": work.name,
            "seq_len": n,
            "sampling": sampling,
            "backend": self.backend,
            "model": str(spec.directory) if spec else None,
            "reduce": spec.reduce if spec else None,
            "crop_style": work.crop_style if work.detect else None,
            "timings": timings,
            "warnings": list(work.warnings),
        }
        if work.error is not None or logits is None:
            return Prediction(status="error", error=work.error or "not classified", **common)
        probs = softmax(reduce_logits(logits, spec.reduce))
        label, confidence = label_of(probs)
        frame_probs = softmax(logits)
        return Prediction(
            status="ok",
            label=label,
            confidence=confidence,
            p_fake=float(probs[0]),
            frames=len(work.crops),
            faces=work.faces,
            frame_p_fake=[float(p) for p in frame_probs[:, 0]],
            frame_indices=list(work.frame_indices),
            boxes=list(work.boxes),
            **common,
        )

    # ------------------------------------------------------------------ public API

    def _work_for(self, index: int, source: Any, crops: bool) -> _Work:
        if isinstance(source, (str, os.PathLike)):
            return _Work(index=index, name=str(source), source=source)
        if isinstance(source, np.ndarray) and source.ndim == 3:
            raise InvalidInputError(
                "predict() takes a video path or a sequence of frames; got one HxWx3 image: "
                "wrap it in a list"
            )
        try:
            frames = list(source)
        except TypeError as exc:
            raise InvalidInputError(
                f"predict() takes a video path or a sequence of HxWx3 uint8 BGR frames, "
                f"got {type(source).__name__}"
            ) from exc
        for i, f in enumerate(frames):
            if not (
                isinstance(f, np.ndarray)
                and f.ndim == 3
                and f.shape[2] == 3
                and f.dtype == np.uint8
            ):
                raise InvalidInputError(
                    f"frame {i}: expected an HxWx3 uint8 BGR array, got "
                    f"{getattr(f, 'shape', type(f).__name__)} {getattr(f, 'dtype', '')}"
                )
        if not frames:
            raise InvalidInputError("predict() got an empty sequence of frames")
        name = f"<{'crops' if crops else 'frames'}:{len(frames)}>"
        w = _Work(index=index, name=name, frame_indices=list(range(len(frames))), detect=not crops)
        if crops:
            w.crops = [resize_pil(f, INPUT_SIZE) for f in frames]
            w.boxes = [None] * len(frames)
            w.faces = len(frames)
        else:
            w.frames = frames
        return w

    def predict(
        self,
        source: str | os.PathLike[str] | Sequence[np.ndarray],
        *,
        seq_len: int | None = None,
        sampling: str = "first",
        crops: bool = False,
    ) -> Prediction:
        """Score one video path, a sequence of decoded BGR frames (faces detected here), or,
        with ``crops=True``, a sequence of the caller's own BGR face crops (no detection; any
        size, resized to 112x112). For a path, the first ``seq_len`` frames (``sampling=
        "first"``, the original's choice) or ``seq_len`` frames spread over the video
        (``"uniform"``) are used. Bad input raises; use :meth:`predict_many` for error records.
        """
        check_sampling(sampling)
        spec = self.spec_for(seq_len)
        n = seq_len or spec.seq_len or DEFAULT_SEQ_LEN
        check_count(n, name="seq_len")
        work = self._work_for(0, source, crops)
        work.crop_style = self.crop_style_for(spec)
        if work.source is not None:
            self._decode(work, n, sampling)
        self._detect_and_crop([work])
        (logits,) = self._classify([work], spec)
        return self._result(work, logits, spec, n, sampling if work.source is not None else None)

    def inspect(
        self,
        source: str | os.PathLike[str] | Sequence[np.ndarray],
        *,
        seq_len: int | None = None,
        sampling: str = "first",
        outputs: Sequence[str] = (),
        keep_frames: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> Inspection:
        """Score one video (a path or decoded BGR frames) exactly as :meth:`predict` does and
        keep what went into the score: the face crops, the full frames used (``keep_frames``)
        and the classifier's per-frame ``outputs`` besides the logits (``fmap``, ``features``).
        ``progress`` is called with each stage's name as it starts. Bad input raises."""
        check_sampling(sampling)
        spec = self.spec_for(seq_len)
        n = seq_len or spec.seq_len or DEFAULT_SEQ_LEN
        check_count(n, name="seq_len")
        classifier, _ = self._get_runners(spec)
        for name in outputs:
            if name not in classifier.outputs:
                raise ModelFormatError(
                    f"{spec.classifier_file} has no {name!r} output (outputs: "
                    f"{list(classifier.outputs)}); re-export the checkpoint with this version "
                    "of dfe"
                )
        step = progress or (lambda _stage: None)
        work = self._work_for(0, source, False)
        work.crop_style = self.crop_style_for(spec)
        if work.source is not None:
            step("decoding")
            self._decode(work, n, sampling)
        frames = dict(zip(work.frame_indices, work.frames)) if keep_frames else {}
        step("detecting faces")
        self._detect_and_crop([work])
        step("classifying")
        extra: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        (logits,) = self._classify([work], spec, extra)
        pred = self._result(work, logits, spec, n, sampling if work.source is not None else None)
        return Inspection(
            prediction=pred,
            crops=list(work.crops),
            frames=[frames.get(i) for i in pred.frame_indices],
            outputs={name: arrays[0] for name, arrays in extra.items()},
        )

    def predict_many(
        self,
        sources: Iterable[str | os.PathLike[str]],
        *,
        seq_len: int | None = None,
        sampling: str = "first",
        ordered: bool = True,
    ) -> Iterator[Prediction]:
        """Score many videos through the overlapped pipeline. Yields one :class:`Prediction`
        per source, in input order (``ordered=True``) or as they finish; a failed video gives
        an error record and the job goes on."""
        check_sampling(sampling)
        spec = self.spec_for(seq_len)
        n = seq_len or spec.seq_len or DEFAULT_SEQ_LEN
        check_count(n, name="seq_len")
        return self._pipeline(iter(sources), spec, n, sampling, ordered)

    def _pipeline(
        self, sources: Iterator[Any], spec: ModelSpec, n: int, sampling: str, ordered: bool
    ) -> Iterator[Prediction]:
        cfg = self.config
        style = self.crop_style_for(spec)
        slots = threading.Semaphore(cfg.max_in_flight)
        stop = threading.Event()
        decoded: queue.Queue = queue.Queue(maxsize=cfg.max_in_flight)
        detected: queue.Queue = queue.Queue(maxsize=cfg.max_in_flight)
        results: queue.Queue = queue.Queue()

        def decode_one(work: _Work) -> None:
            try:
                self._decode(work, n, sampling)
            except Exception as exc:  # recorded per video, never fatal for the job
                work.error = _error_text(exc)
            decoded.put(work)

        def feeder() -> None:
            with ThreadPoolExecutor(cfg.decode_workers, thread_name_prefix="dfe-decode") as pool:
                try:
                    for i, src in enumerate(sources):
                        slots.acquire()
                        if stop.is_set():
                            break
                        work = _Work(index=i, name=str(src), source=src, crop_style=style)
                        pool.submit(decode_one, work)
                except Exception as exc:  # the input iterator itself failed
                    log.error("reading the list of inputs failed: %s", exc)
                    results.put(exc)
            decoded.put(_SENTINEL)

        def gather(q: queue.Queue, limit: int) -> tuple[list[_Work], bool]:
            first = q.get()
            if first is _SENTINEL:
                return [], True
            batch, frames = [first], len(first.frames) or len(first.crops)
            while frames < limit:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is _SENTINEL:
                    return batch, True
                batch.append(item)
                frames += len(item.frames) or len(item.crops)
            return batch, False

        def run_isolated(stage, batch: list[_Work]) -> None:
            try:
                stage(batch)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = _error_text(exc)
                    return
                for w in batch:  # find the culprit, spare the others
                    run_isolated(stage, [w])

        def detect_stage() -> None:
            done = False
            while not done:
                batch, done = gather(decoded, self.detector_batch)
                live = [w for w in batch if w.error is None]
                if live:
                    run_isolated(self._detect_and_crop, live)
                for w in batch:
                    detected.put(w)
            detected.put(_SENTINEL)

        def classify_stage() -> None:
            done = False
            while not done:
                batch, done = gather(detected, cfg.batch_size)
                live = [w for w in batch if w.error is None]
                logits: dict[int, np.ndarray] = {}

                def classify(ws: list[_Work], out: dict[int, np.ndarray] = logits) -> None:
                    for w, z in zip(ws, self._classify(ws, spec)):
                        out[w.index] = z

                if live:
                    run_isolated(classify, live)
                for w in batch:
                    results.put((w.index, self._result(w, logits.get(w.index), spec, n, sampling)))
            results.put(_SENTINEL)

        def guarded(stage):
            def run() -> None:
                try:
                    stage()
                except BaseException as exc:  # a bug in a stage: surface it, never hang
                    log.exception("pipeline stage %s failed", stage.__name__)
                    stop.set()
                    results.put(exc)

            return run

        threads = [
            threading.Thread(target=guarded(f), name=f"dfe-{f.__name__}", daemon=True)
            for f in (feeder, detect_stage, classify_stage)
        ]
        for t in threads:
            t.start()

        pending: dict[int, Prediction] = {}
        next_index = 0
        try:
            while True:
                item = results.get()
                if item is _SENTINEL:
                    break
                if isinstance(item, BaseException):
                    raise item
                index, prediction = item
                if not ordered:
                    slots.release()
                    yield prediction
                    continue
                pending[index] = prediction
                while next_index in pending:
                    slots.release()
                    yield pending.pop(next_index)
                    next_index += 1
            for index in sorted(pending):  # cannot happen unless a stage lost order
                yield pending.pop(index)
        finally:
            stop.set()
            for _ in range(cfg.max_in_flight + 1):
                slots.release()
