"""The embeddable Python API: ``Engine.load(model_dir)``, ``predict`` and ``predict_many``.

:class:`Engine` composes the stages of :mod:`engine.pipeline` for each exported model of a
catalog, over one backend and one detector, and runs them one after the other (``predict``,
``inspect``) or overlapped in threads (``predict_many``, :mod:`engine.executor`). Torch-free on
the ONNX Runtime paths, thread-safe (sessions are shared, calls keep their state in their own
jobs), and it never silently changes backend or precision.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.classifier import ClassifierRunner, runner_outputs
from core.compute import CPU_POOL_BACKENDS, shared_pool
from core.config import DEFAULT_SEQ_LEN, EngineConfig
from core.errors import EngineError, ModelFormatError
from core.sidecar import ModelSpec
from engine.allocator import tune_allocator
from engine.backends import get_factory
from engine.executor import Stages, run_overlapped
from engine.models import ModelCatalog, load_catalog
from engine.pipeline import VideoJob, VideoPipeline, error_text, job_for, policy_for
from engine.records import Prediction
from preprocess.faces import FacePolicy
from preprocess.sampling import check_count, check_sampling

if TYPE_CHECKING:
    from engine.backends.base import BackendFactory
    from preprocess.faces import Detector

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SEQ_LEN",
    "Engine",
    "EngineConfig",
    "Inspection",
    "PersonInspection",
    "Prediction",
    "open_detector",
]


@dataclass(frozen=True)
class PersonInspection:
    """What went into one scored sequence (one person, or the per-frame rule's choice)."""

    track: int | None  # the face track's id (None: per-frame rule, or the caller's crops)
    p_fake: float
    label: str
    frame_indices: list[int]
    boxes: list[list[int] | None]
    frame_p_fake: list[float]
    crops: list[np.ndarray]  # the size x size BGR crops, one per frame used
    frames: list[np.ndarray | None]  # the full BGR frames used (None where not kept)
    outputs: dict[str, np.ndarray]  # the classifier's other outputs asked for, one row per frame


@dataclass(frozen=True)
class Inspection:
    """One video scored as :meth:`Engine.predict` scores it, with what went into the score:
    the deciding sequence's crops, frames and outputs, and every scored person's."""

    prediction: Prediction
    crops: list[np.ndarray]  # the 112x112 BGR face crops, one per frame used
    frames: list[np.ndarray | None]  # the full BGR frames used (None where not kept)
    outputs: dict[str, np.ndarray]  # the classifier's other outputs asked for, one row per frame
    people: list[PersonInspection]  # every scored sequence, the deciding one included


def open_detector(
    config: EngineConfig,
    *,
    factory: BackendFactory | None = None,
    model_dir: Path | None = None,
    path: Path | None = None,
) -> Detector:
    """The face detector ``config`` describes (``detector``, ``models_dir``, ``download``,
    ``detector_input``, ``detector_input_shape``, ``score_threshold``, ``detector_batch``, the
    thread budget), on the device of ``factory`` (a backend factory; default: ``config``'s
    backend). The one way the engine, ``dfe detect``, ``dfe preprocess``, training and INT8
    calibration open it: the file is found (:func:`weights.find_model`; ``path``: already
    found), loaded once (read, hashed and made batch-dynamic into the cache of derived graphs:
    :func:`preprocess.scrfd_graph.load_detector_graph`), and the backend makes the detector of
    that graph (:meth:`~engine.backends.base.BackendFactory.detector`: the SCRFD maths over its
    runner on ONNX Runtime and TensorRT, the PyTorch detector on torch-cuda). ``model_dir``: the
    exported model whose ``engines/`` folder caches a TensorRT detector engine.
    Raises :class:`~core.errors.ArtifactNotFoundError` when the model file is missing
    and cannot be downloaded."""
    from engine.backends.base import DetectorOptions
    from preprocess.scrfd import DetectorConfig
    from preprocess.scrfd_graph import load_detector_graph
    from weights import find_model

    if factory is None:
        factory = get_factory(config.backend_name, precision="fp32")
    budget = config.thread_budget(factory.name)
    if path is None:
        path = find_model(config.detector, models_dir=config.models_dir, download=config.download)
    options = DetectorOptions(
        DetectorConfig(
            input_size=config.detector_input,
            input_shape=config.detector_input_shape,
            score_threshold=config.score_threshold,
            batch_size=config.detector_batch_for(factory.name),
        ),
        intra_op_threads=budget.detector_threads,
        pool=shared_pool(budget.workers),
        model_dir=model_dir,
    )
    return factory.detector(load_detector_graph(path), options)


class Engine:
    """A loaded model (or catalog of models for several N), a backend and a detector."""

    def __init__(self, catalog: ModelCatalog, config: EngineConfig) -> None:
        # Frames and batches on mappings of their own, so that a long job's heap stays flat
        # (engine.allocator); once per process, before the first session or frame.
        tune_allocator()
        self.catalog = catalog
        self.config = config
        # TensorRT engines are built for batches up to the classifier batch
        self._factory = get_factory(
            config.backend_name,
            precision=config.precision,
            intra_op_threads=config.intra_op_threads,
            checkpoint=config.checkpoint,
            max_batch=config.batch_size,
        )
        self.backend = self._factory.name
        #: how the threads share the cores (core.compute)
        self.threads = config.thread_budget(self.backend)
        if self.threads.threads != config.intra_op_threads:
            self._factory = get_factory(
                self.backend,
                precision=config.precision,
                intra_op_threads=self.threads.threads,
                checkpoint=config.checkpoint,
                max_batch=config.batch_size,
            )
        if self.backend in CPU_POOL_BACKENDS:
            note = self.threads.oversubscription()
            if note:
                log.warning("%s", note)
        self.pool = shared_pool(self.threads.workers)
        self._lock = threading.RLock()  # detector() finds the detector file under it
        self._pipelines: dict[Path, VideoPipeline] = {}
        self._detector: Detector | None = None
        self._detector_path: Path | None = None
        self._provenance: dict[Path, dict[str, Any]] = {}
        if catalog.single:
            self.pipeline_for(catalog.specs[0])  # fail now, not on the first video

    @classmethod
    def load(
        cls, model: str | os.PathLike[str], *, backend: str = "auto", **options: Any
    ) -> Engine:
        """Load an exported model directory (or a directory of them, one per N).

        ``backend``: ``auto``, ``tensorrt`` (``trt``), ``ort``, ``ort-cuda``, ``ort-tensorrt``,
        ``torch``, ``torch-cuda``. ``precision``: ``fp32``; ``int8`` (the Q/DQ graph made by
        ``dfe build --precision int8``; ONNX Runtime CPU or TensorRT); ``fp16`` (TensorRT,
        torch-cuda); ``bf16`` (torch-cuda). Other options are the fields of
        :class:`EngineConfig`; a config object can be passed as ``config=``.
        """
        config = options.pop("config", None)
        if config is None:
            config = EngineConfig(backend=backend, **options)
        else:
            if backend != "auto":
                options["backend"] = backend
            config = config.replace(**options) if options else config
        return cls(load_catalog(model), config)

    # ------------------------------------------------------------------ resources

    @property
    def detector_batch(self) -> int:
        """Frames per detector run on this engine's backend."""
        return self.config.detector_batch_for(self.backend)

    @property
    def detector(self) -> Detector:
        """The face detector (loaded on first use; shared by every model of the catalog)."""
        with self._lock:
            if self._detector is None:
                self._detector = self._make_detector()
            return self._detector

    def _make_detector(self) -> Detector:
        return open_detector(
            self.config,
            factory=self._factory,
            model_dir=self.catalog.specs[0].directory,
            path=self.detector_file(),
        )

    def detector_file(self) -> Path:
        """The detector model file ``config.detector`` names (found, verified against the
        known checksums, or downloaded once; :func:`weights.find_model`)."""
        from weights import find_model

        with self._lock:
            if self._detector_path is None:
                cfg = self.config
                found = find_model(cfg.detector, models_dir=cfg.models_dir, download=cfg.download)
                self._detector_path = Path(found).resolve()
            return self._detector_path

    def provenance(self, spec: ModelSpec) -> dict[str, Any]:
        """The engine's part of a record's ``provenance`` for model ``spec``
        (:mod:`engine.provenance`): versions, the model's and the detector's checksums,
        and every score-changing option as it runs (``seq_len``/``sampling`` left None: the
        call sets them). Computed once per model; the detector file is found here."""
        from core.hashing import file_sha256
        from engine import provenance

        pipeline = self.pipeline_for(spec)
        with self._lock:
            cached = self._provenance.get(spec.directory)
        if cached is not None:
            return cached
        detector = self.detector_file()
        base = {
            "engine": provenance.engine_versions(),
            "model": {
                "path": str(spec.directory.resolve()),
                "sidecar_sha256": spec.sidecar_sha256,
                "spec_sha256": spec.spec_sha256,
                "calibration_sha256": spec.calibration_sha256,
                "precision": self.config.precision,
                **pipeline.graphs,
                "checkpoint_sha256": spec.checkpoint.sha256,
            },
            "detector": {
                "name": self.config.detector,
                "path": str(detector),
                "sha256": file_sha256(detector),
            },
            "settings": provenance.settings(
                self.config,
                backend=self.backend,
                crop_style=pipeline.policy.crop_style,
                seq_len=None,
                sampling=None,
            ),
        }
        with self._lock:
            return self._provenance.setdefault(spec.directory, base)

    def pipeline_for(self, spec: ModelSpec) -> VideoPipeline:
        """The stages of one model of the catalog (built once, then shared)."""
        with self._lock:
            if spec.directory not in self._pipelines:
                _ = spec.calibration  # a damaged calibration fails here, at load
                graphs = (
                    {"graph": "checkpoint", "graph_sha256": None, "head_sha256": None}
                    if self.backend in ("torch", "torch-cuda")  # runs the checkpoint, which
                    else spec.verify_graphs(self.config.precision)  # its backend verifies
                )
                classifier = self._factory(
                    "classifier", spec.classifier_for(self.config.precision), spec=spec
                )
                head = (
                    self._factory("head", spec.head_file, spec=spec)
                    if spec.head_file is not None
                    else None
                )
                self._pipelines[spec.directory] = VideoPipeline(
                    spec,
                    ClassifierRunner(
                        classifier, head, batch_size=self.config.batch_size, pool=self.pool
                    ),
                    lambda: self.detector,
                    policy=self.face_policy(spec),
                    backend=self.backend,
                    precision=self.config.precision,
                    faces=self.config.faces,
                    size_probe=self.config.size_probe,
                    detect_every=self.config.detect_every,
                    decode_backend=self.config.decode_backend,
                    decode_threads=self.config.decode_threads,
                    colour=self.config.colour,
                    provenance=lambda spec=spec: self.provenance(spec),
                    hash_inputs=self.config.hash_inputs,
                    detector_input_shape=self.config.detector_input_shape,
                    deinterlace=self.config.deinterlace,
                )
                self._pipelines[spec.directory].graphs = graphs
            return self._pipelines[spec.directory]

    def prepare(self, seq_len: int | None = None) -> None:
        """Load the classifier for ``seq_len`` and the detector now, so that a missing or
        unloadable model is one error before the first video rather than one per video."""
        self.pipeline_for(self.spec_for(seq_len))
        _ = self.detector

    def is_prepared(self, seq_len: int | None = None) -> bool:
        """Whether :meth:`prepare` has loaded the classifier for ``seq_len`` and the detector."""
        with self._lock:
            loaded = self._detector is not None
        try:
            spec = self.spec_for(seq_len)
        except EngineError:
            return False
        return loaded and spec.directory in self._pipelines

    def spec_for(self, seq_len: int | None) -> ModelSpec:
        """The model of the catalog for ``seq_len`` frames."""
        return self.catalog.pick(seq_len)

    def face_policy(self, spec: ModelSpec) -> FacePolicy:
        """The face policy this engine applies for ``spec`` (:func:`engine.pipeline.policy_for`)."""
        return policy_for(self.config, spec)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.config.precision,
            "models": [str(s.directory) for s in self.catalog.specs],
            "seq_lens": self.catalog.seq_lens(),
            "demo": any(s.demo for s in self.catalog.specs),
        }

    def job_provenance(self, seq_len: int | None, sampling: str) -> dict[str, Any]:
        """The provenance every record of a job over video files with ``seq_len`` and
        ``sampling`` will carry, without its ``input`` (what ``--resume`` compares)."""
        pipeline, n = self._resolve(seq_len, sampling)
        prov = self.provenance(pipeline.spec)
        return {**prov, "settings": {**prov["settings"], "seq_len": n, "sampling": sampling}}

    # ------------------------------------------------------------------ public API

    def _resolve(self, seq_len: int | None, sampling: str) -> tuple[VideoPipeline, int]:
        check_sampling(sampling)
        spec = self.spec_for(seq_len)
        n = seq_len or spec.seq_len or DEFAULT_SEQ_LEN
        check_count(n, name="seq_len", what="frames per video")
        return self.pipeline_for(spec), n

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
        (``"uniform"``) are used; of a sequence of frames or crops, the first ``seq_len``
        (``"first"``) or ``seq_len`` spread over them (``"uniform"``), all of them when
        ``seq_len`` is None and fewer are given than the model's N. Bad input raises; use
        :meth:`predict_many` for error records.
        """
        pipeline, n = self._resolve(seq_len, sampling)
        job = _job(
            source,
            n if seq_len is not None else None,
            sampling,
            crops=crops,
            size=pipeline.preprocessor.size,
        )
        pred, _ = pipeline.run(job, n=n, sampling=sampling)
        return self._with_timeline(pipeline, pred, job.source)

    def timeline(self, source: str | os.PathLike[str], *, fps: float | None = None) -> Any:
        """The whole video as a timeline: per person, the calibrated p_fake of a frame every
        ``1 / fps`` seconds (default ``timeline_fps``), and the segments judged manipulated
        (:func:`engine.timeline.build_timeline`). Streaming: memory does not grow with the
        video's length. Raises for a video that cannot be read."""
        from engine.timeline import build_timeline

        pipeline = self.pipeline_for(self.spec_for(None))
        return build_timeline(pipeline, str(source), fps=fps or self.config.timeline_fps)

    def stream(self, source: Any, *, options: Any = None, **kwargs: Any) -> Any:
        """Rolling per-person verdicts on a live source (:class:`engine.live.LiveStream`):
        a URL FFmpeg opens, ``"-"`` (standard input), ``/dev/videoN``, a file, or an iterator
        of ``(time_s, HxWx3 uint8 BGR frame)`` (or of frames, with ``input_fps=``). Iterate the
        result for its events (``to_record()``: ``dfe watch``'s lines); ``stop()`` ends it.
        ``options``: an :class:`engine.live.LiveOptions`; ``kwargs``: its fields."""
        from engine.live import LiveOptions, LiveStream

        opts = options if options is not None else LiveOptions()
        seq_len = kwargs.get("seq_len", opts.seq_len)
        self.prepare(seq_len)
        return LiveStream(self.pipeline_for(self.spec_for(seq_len)), source, opts, **kwargs)

    def _with_timeline(self, pipeline: VideoPipeline, pred: Prediction, source: Any) -> Prediction:
        """``pred`` with the video's timeline and segments when ``timeline`` is on (a video
        path scored ok); a timeline that fails is a warning, the first frames' verdict stays."""
        if not self.config.timeline or source is None or not pred.ok:
            return pred
        import dataclasses

        from engine.timeline import apply_segments, build_timeline

        try:
            line = build_timeline(pipeline, str(source), fps=self.config.timeline_fps)
        except EngineError as exc:
            return dataclasses.replace(
                pred, warnings=[*pred.warnings, f"the timeline could not be made: {exc}"]
            )
        return apply_segments(pred, line)

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
        pipeline, n = self._resolve(seq_len, sampling)
        available = runner_outputs(pipeline.classifier.classifier)
        for name in outputs:
            if name not in available:
                raise ModelFormatError(
                    f"{pipeline.spec.classifier_file} has no {name!r} output (outputs: "
                    f"{list(available)}); re-export the checkpoint with this version of dfe"
                )
        job = _job(
            source, n if seq_len is not None else None, sampling, size=pipeline.preprocessor.size
        )
        job.keep_frames = keep_frames
        if keep_frames and job.source is None:
            job.kept_frames = dict(zip(job.frame_indices, job.frames))
        pred, out = pipeline.run(
            job, n=n, sampling=sampling, extra_outputs=outputs, progress=progress
        )
        results = pipeline.results(job, out.logits)
        people = [
            PersonInspection(
                track=r.sequence.track,
                p_fake=r.score.p_fake,
                label=r.score.label,
                frame_indices=list(r.sequence.frame_indices),
                boxes=[list(b) if b else None for b in r.sequence.boxes],
                frame_p_fake=r.score.frame_p_fake,
                crops=list(r.sequence.crops),
                frames=[job.kept_frames.get(i) for i in r.sequence.frame_indices],
                outputs={name: arrays[k] for name, arrays in out.extra.items()},
            )
            for k, r in enumerate(results)
        ]
        best = people[pipeline.deciding(results)]
        return Inspection(
            prediction=pred,
            crops=best.crops,
            frames=best.frames,
            outputs=best.outputs,
            people=people,
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
        pipeline, n = self._resolve(seq_len, sampling)
        cfg = self.config
        decode_threads, decode_gate = self.threads.decode_plan(sampling)
        log.info(
            "predict_many: %s video(s) decoded at once (%s sampling), %d network call(s) at once",
            f"{decode_gate.limit} to {decode_threads}, by decoding's share of the CPU,"
            if decode_gate
            else decode_threads,
            sampling,
            self.threads.workers,
        )
        jobs = (VideoJob(index=i, name=str(src), source=src) for i, src in enumerate(sources))

        def classify(batch: list[VideoJob]) -> list[list[np.ndarray]]:
            return [out.logits for out in pipeline.classify(batch)]

        stages: Stages[VideoJob, Prediction] = Stages(
            decode=lambda job: pipeline.decode(job, n, sampling),
            detect=pipeline.detect_and_crop,
            classify=classify,
            finish=lambda job, logits: pipeline.finish(job, logits, n=n, sampling=sampling),
            error_text=error_text,
        )
        results = run_overlapped(
            jobs,
            stages,
            decode_workers=decode_threads,
            decode_gate=decode_gate,
            max_in_flight=cfg.max_in_flight,
            detect_frames=self.detector_batch,
            classify_frames=cfg.batch_size,
            ordered=ordered,
            detect_workers=cfg.stage_workers,
            classify_workers=cfg.stage_workers,
        )
        if not cfg.timeline:
            return results
        return self._timelines(pipeline, results)

    def _timelines(
        self, pipeline: VideoPipeline, results: Iterator[Prediction]
    ) -> Iterator[Prediction]:
        """Each prediction of ``results`` with its timeline (see :meth:`_with_timeline`); the
        timelines run one video at a time as the predictions come. Closing this generator
        closes ``results`` (the pipeline's threads stop)."""
        try:
            for pred in results:
                yield self._with_timeline(pipeline, pred, pred.video)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()


def _job(source: Any, n: int | None, sampling: str, *, crops: bool = False, size: int) -> VideoJob:
    """:func:`engine.pipeline.job_for` of ``source``; of a sequence of frames or crops, only the
    ``n`` that ``sampling`` picks (the first ``n``, or ``n`` spread evenly:
    :func:`preprocess.sampling.sample_indices`), their positions kept as frame indices; all of
    them when ``n`` is None or at least their number."""
    if n is None or isinstance(source, (str, os.PathLike, np.ndarray)):
        return job_for(0, source, crops=crops, size=size)
    try:
        frames = list(source)
    except TypeError:
        return job_for(0, source, crops=crops, size=size)  # it says what is wrong
    from preprocess.sampling import sample_indices

    picked = sample_indices(len(frames), n, sampling)
    job = job_for(0, [frames[i] for i in picked] if frames else frames, crops=crops, size=size)
    job.frame_indices = list(picked)
    for seq in job.sequences:  # the caller's crops: one sequence
        seq.frame_indices = list(picked)
    return job
