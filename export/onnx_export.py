"""Export a training checkpoint to ONNX, then prove the graph reproduces the original model.

``export_checkpoint`` writes ``classifier.onnx`` (frames of any number of videos in one batch
axis), ``head.onnx`` for the ``sequence`` variant, and the sidecar ``classifier.json``. Before it
returns it runs ``onnx.checker`` and compares ONNX Runtime (CPU) with the faithful PyTorch module
on several videos of different lengths, run through the runtime's own classifier stage
(:class:`core.classifier.ClassifierRunner`), for both reductions; a mismatch beyond
tolerance raises :class:`ParityError` and nothing is left behind that looks valid.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.classifier import ClassifierRunner
from core.config import REDUCE_MODES
from core.deps import require
from core.errors import InvalidInputError, ParityError
from core.hashing import sha256_file
from core.onnx_session import create_session
from core.reduce import LABELS, score_video
from core.sidecar import (
    SIDECAR_NAME,
    CheckpointInfo,
    ClassifierGraph,
    ExplainInfo,
    GraphRecord,
    Graphs,
    InputSpec,
    ModelInfo,
    PreprocessingInfo,
    Sidecar,
    TrainingInfo,
    remove_derived_files,
    write_sidecar,
)
from engine.provenance import library_versions
from network.checkpoint import LoadedCheckpoint, build_model, load_checkpoint, training_record
from preprocess.crop import INPUT_SIZE, normalize
from preprocess.dlib_map import check_crop_style

log = logging.getLogger(__name__)

OPSET = 17
PARITY_SEQ_LENS = (1, 20, 60, 100)
PARITY_TOLERANCE = 1e-4  # max |difference of softmax probabilities|
CLASSIFIER_FILE = "classifier.onnx"
HEAD_FILE = "head.onnx"
# linear1's weight (2, 2048), float32: ``dfe explain`` weights the ``fmap`` output with the row of
# the predicted class (the original's plot_heat_map). A small file, so the graph stays as is.
EXPLAIN_WEIGHTS_FILE = "linear1.npy"
FMAP_SHAPE = ("frames", 2048, 4, 4)


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    classifier: Path
    head: Path | None
    sidecar: Path
    parity: dict[str, Any]


def synthetic_crops(n: int, *, seed: int = 0, size: int = INPUT_SIZE) -> np.ndarray:
    """Deterministic image-like uint8 crops (smooth blobs plus fine noise), n x size x size x 3."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(n, 7, 7, 3))
    img = np.kron(coarse, np.ones((1, size // 7 + 1, size // 7 + 1, 1)))[:, :size, :size]
    # soften the block edges
    img = (img + np.roll(img, 3, axis=1) + np.roll(img, 3, axis=2) + np.roll(img, -3, axis=1)) / 4
    img += rng.normal(0, 12, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def run_onnx_videos(runner: ClassifierRunner, videos: list[np.ndarray], reduce: str) -> np.ndarray:
    """Video probabilities (V, 2) (FAKE, REAL) through the runtime's classifier runner, every
    video's frames concatenated into shared batches, reduced and labelled as the runtime does."""
    logits = runner.run(videos).logits
    scores = [score_video(z, reduce, LABELS) for z in logits]
    return np.array([[s.p_fake, 1.0 - s.p_fake] for s in scores])


def run_reference_videos(model: Any, videos: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Video probabilities per reduce mode from the faithful PyTorch module, one video at a
    time with shape (1, seq, 3, 112, 112), as the original ran it."""
    torch = require("torch")
    from network.model import reduce_lstm

    out: dict[str, list[np.ndarray]] = {m: [] for m in REDUCE_MODES}
    with torch.inference_mode():
        for v in videos:
            _, x_lstm = model.lstm_outputs(torch.from_numpy(v).unsqueeze(0))
            for mode in REDUCE_MODES:
                logits = model.linear1(reduce_lstm(x_lstm, mode))
                out[mode].append(torch.softmax(logits, dim=1)[0].double().numpy())
    return {m: np.stack(v) for m, v in out.items()}


def check_parity(
    model: Any,
    runner: ClassifierRunner,
    videos: list[np.ndarray],
    *,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Any]:
    """Compare the exported graph, run by the runtime's :class:`ClassifierRunner` on ONNX
    Runtime, with the reference on ``videos`` for both reductions."""
    ref = run_reference_videos(model, videos)
    report: dict[str, Any] = {
        "reference": "PyTorch DeepfakeModel (original forward, nn.LSTM), one video per call",
        "onnx": "ONNX Runtime CPUExecutionProvider through core.classifier."
        "ClassifierRunner (the runtime's classifier stage): all videos' frames concatenated "
        f"and run in the runtime's batches of {runner.batch_size}",
        "seq_lens": [len(v) for v in videos],
        "tolerance_prob": tolerance,
        "modes": {},
    }
    ok = True
    for mode in REDUCE_MODES:
        got = run_onnx_videos(runner, videos, mode)
        diff = float(np.max(np.abs(got - ref[mode])))
        labels_equal = bool(np.array_equal(got.argmax(1), ref[mode].argmax(1)))
        p_fake = ref[mode][:, 0]
        report["modes"][mode] = {
            "max_abs_prob_diff": diff,
            "labels_equal": labels_equal,
            "reference_p_fake": [round(float(p), 6) for p in p_fake],
            "onnx_p_fake": [round(float(p), 6) for p in got[:, 0]],
        }
        ok &= diff <= tolerance and labels_equal
    all_p = np.concatenate([np.asarray(m["reference_p_fake"]) for m in report["modes"].values()])
    report["saturated"] = bool(np.all((all_p < 1e-6) | (all_p > 1 - 1e-6)))
    report["max_abs_prob_diff"] = max(m["max_abs_prob_diff"] for m in report["modes"].values())
    report["passed"] = bool(ok)
    if report["saturated"]:
        log.warning(
            "every parity probability is saturated at 0 or 1; the parity figure cannot tell "
            "small differences apart for this checkpoint on these inputs"
        )
    return report


def _export_graph(
    module: Any, example: Any, path: Path, inputs: list[str], outputs: list[str], axes: dict
) -> None:
    torch = require("torch")
    with torch.inference_mode(), warnings.catch_warnings():
        # the TorchScript-based exporter warns about traced Python values (shapes read in
        # forward); the parity check below is what proves the graph right
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx = require("onnx")
    onnx.checker.check_model(str(path))


def export_model_graphs(
    ckpt: LoadedCheckpoint, model: Any, outdir: Path
) -> tuple[Path, Path | None]:
    torch = require("torch")
    from network.model import FeatureExtractor, FrameClassifier, SequenceHead

    classifier = outdir / CLASSIFIER_FILE
    example = torch.from_numpy(normalize(synthetic_crops(3, seed=1)))
    if ckpt.variant == "original":
        _export_graph(
            FrameClassifier(model).eval(),
            example,
            classifier,
            ["frames"],
            ["logits", "features", "fmap"],
            {
                "frames": {0: "frames"},
                "logits": {0: "frames"},
                "features": {0: "frames"},
                "fmap": {0: "frames"},
            },
        )
        return classifier, None
    _export_graph(
        FeatureExtractor(model).eval(),
        example,
        classifier,
        ["frames"],
        ["features", "fmap"],
        {"frames": {0: "frames"}, "features": {0: "frames"}, "fmap": {0: "frames"}},
    )
    head = outdir / HEAD_FILE
    _export_graph(
        SequenceHead(model).eval(),
        torch.zeros(2, 3, 2048),
        head,
        ["features"],
        ["logits"],
        {"features": {0: "videos", 1: "steps"}, "logits": {0: "videos", 1: "steps"}},
    )
    return classifier, head


def default_crop_style(ckpt: LoadedCheckpoint) -> str:
    """The crop style ``dfe train`` recorded for this checkpoint (:func:`training_record`);
    else ``dlib`` for the original's published checkpoints (variant original, no LSTM bias,
    named ``model_<acc>_acc_<N>_frames_<data>.pt``): they were trained on dlib mmod crops.
    Else ``scrfd``."""
    trained = training_record(ckpt)
    if trained is not None and trained.get("crop_style"):
        return str(trained["crop_style"])
    if ckpt.variant == "original" and not ckpt.lstm_bias and ckpt.name is not None:
        return "dlib"
    return "scrfd"


def _trained(record: dict[str, Any] | None, key: str) -> Any:
    """A value of this checkpoint's entry in its training record, else of the record."""
    if record is None:
        return None
    return record["checkpoint"].get(key, record.get(key))


def write_verified_graphs(
    ckpt: LoadedCheckpoint,
    model: Any,
    outdir: Path,
    parity_videos: list[np.ndarray],
    tolerance: float,
) -> tuple[Path, Path | None, Path, dict[str, Any]]:
    """Export the graphs of ``model`` (and ``linear1``'s weights for ``dfe explain``) into a
    scratch folder in ``outdir``, check parity on ``parity_videos`` (:func:`check_parity`) and
    only then move them into place, removing a stale head and what was made from the graphs
    replaced (:data:`core.sidecar.DERIVED_FILES`). Returns the classifier graph, the
    head graph (None: the original variant), the explain weights and the parity report;
    raises :class:`ParityError` (nothing written) when parity fails."""
    with tempfile.TemporaryDirectory(dir=outdir, prefix=".export-") as tmp:
        tmpdir = Path(tmp)
        cls_tmp, head_tmp = export_model_graphs(ckpt, model, tmpdir)
        weights_tmp = tmpdir / EXPLAIN_WEIGHTS_FILE
        np.save(weights_tmp, model.linear1.weight.detach().float().numpy())
        runner = ClassifierRunner(  # the runtime's default classifier batch
            create_session(cls_tmp), create_session(head_tmp) if head_tmp else None
        )
        parity = check_parity(model, runner, parity_videos, tolerance=tolerance)
        del runner
        if not parity["passed"]:
            raise ParityError(
                f"the ONNX export of {ckpt.path} does not reproduce the PyTorch model: max "
                f"|prob diff| {parity['max_abs_prob_diff']:.3g} (tolerance {tolerance:g}), labels "
                f"equal: {[m['labels_equal'] for m in parity['modes'].values()]}. Nothing was "
                "written. Please report this with the checkpoint's sidecar figures."
            )
        classifier = outdir / CLASSIFIER_FILE
        cls_tmp.replace(classifier)
        explain_weights = outdir / EXPLAIN_WEIGHTS_FILE
        weights_tmp.replace(explain_weights)
        head = None
        if head_tmp is not None:
            head = outdir / HEAD_FILE
            head_tmp.replace(head)
        elif (outdir / HEAD_FILE).exists():
            (outdir / HEAD_FILE).unlink()  # stale head from an earlier sequence-variant export
        for stale in remove_derived_files(outdir):  # made from the graphs just replaced
            log.info("removed %s (made from the graphs this export replaced)", stale)
    return classifier, head, explain_weights, parity


def graph_records(classifier: Path, head: Path | None, explain_weights: Path) -> Graphs:
    """The sidecar's ``graphs`` section of the exported graphs: files, sha256, input and
    output shapes, what ``dfe explain`` reads, and what the outputs mean."""
    frames_in = {"frames": ("frames", 3, INPUT_SIZE, INPUT_SIZE)}
    features = ("frames", 2048)
    return Graphs(
        classifier=ClassifierGraph(
            file=classifier.name,
            sha256=sha256_file(classifier),
            inputs=frames_in,
            outputs=(
                {"logits": ("frames", 2), "features": features, "fmap": FMAP_SHAPE}
                if head is None
                else {"features": features, "fmap": FMAP_SHAPE}
            ),
            explain=ExplainInfo(
                output="fmap",
                weights=explain_weights.name,
                weights_sha256=sha256_file(explain_weights),
                semantics="last conv feature map (optional output, request it only to "
                "explain); heatmap = fmap^T . linear1.weight[predicted class], as the "
                "original's plot_heat_map",
            ),
            semantics=(
                "per-frame logits: one LSTM step from a zero state per frame (W_hh and the "
                "forget gate folded away), then linear1; reduce per video in the runtime"
                if head is None
                else "per-frame pooled CNN features; the head runs the LSTM over each video"
            ),
        ),
        head=None
        if head is None
        else GraphRecord(
            file=head.name,
            sha256=sha256_file(head),
            inputs={"features": ("videos", "steps", 2048)},
            outputs={"logits": ("videos", "steps", 2)},
            semantics="per-step logits of a batch_first LSTM; pad videos at the end",
        ),
    )


def checkpoint_record(
    ckpt: LoadedCheckpoint, *, seq_len: int | None, crop_style: str | None
) -> tuple[CheckpointInfo, PreprocessingInfo]:
    """The sidecar's ``checkpoint`` section (file, sha256, the N it was trained for: ``seq_len``,
    else its file name's, else its training record's; accuracy, data, training record) and
    ``preprocessing`` section (the crop style: ``crop_style``, else
    :func:`default_crop_style`, and where it came from)."""
    name = ckpt.name
    trained = training_record(ckpt)
    style = crop_style or default_crop_style(ckpt)
    if crop_style:
        style_source = "export option"
    elif trained is not None:
        style_source = "dfe train record"
    else:
        style_source = "from the checkpoint"
    trained_seq_len = seq_len if seq_len is not None else (name.seq_len if name else None)
    if trained_seq_len is None and trained is not None:
        trained_seq_len = trained.get("seq_len")
    checkpoint = CheckpointInfo(
        file=ckpt.path.name,
        path=str(ckpt.path.resolve()),
        sha256=ckpt.sha256,
        size_bytes=ckpt.size_bytes,
        layout=ckpt.layout,
        seq_len=trained_seq_len,
        accuracy=name.accuracy if name else _trained(trained, "accuracy"),
        data=name.data if name else _trained(trained, "data_name"),
        training=None
        if trained is None
        else TrainingInfo(
            record=str(ckpt.path.parent / "train.json"),
            epoch=trained["checkpoint"].get("epoch"),
            accuracy_source=trained.get("accuracy_source"),
            crop_style=trained.get("crop_style"),
            sampling=trained.get("sampling"),
        ),
    )
    preprocessing = PreprocessingInfo(
        sampling="first",
        crop="tight",
        crop_style=style,
        crop_style_source=style_source,
        crop_rounding="nearest, then clipped to the frame",
        no_face="full_frame",
    )
    return checkpoint, preprocessing


def export_checkpoint(
    checkpoint: str | Path,
    outdir: str | Path,
    *,
    reduce: str = "mean",
    variant: str | None = None,
    seq_len: int | None = None,
    parity_seq_lens: tuple[int, ...] = PARITY_SEQ_LENS,
    parity_videos: list[np.ndarray] | None = None,
    tolerance: float = PARITY_TOLERANCE,
    extra: dict[str, Any] | None = None,
    crop_style: str | None = None,
) -> ExportResult:
    """Export ``checkpoint`` into ``outdir`` and verify it. ``parity_videos`` (normalised
    float32 arrays, one per video) default to synthetic crops at ``parity_seq_lens``.
    ``crop_style`` is the model's default crop style recorded in the sidecar; None picks it
    (see :func:`default_crop_style`). ``extra`` adds top-level keys to the sidecar
    (``demo``: True for an untrained model; others are kept as they are).

    The steps: the graphs written and checked (:func:`write_verified_graphs`), then the
    sidecar made of :func:`graph_records` and :func:`checkpoint_record`."""
    if crop_style is not None:
        check_crop_style(crop_style)
    if reduce not in REDUCE_MODES:
        raise InvalidInputError(
            f"unknown reduce mode {reduce!r}; supported values are {', '.join(REDUCE_MODES)}"
        )
    torch = require("torch", purpose="exporting checkpoints")
    t0 = time.perf_counter()
    ckpt = load_checkpoint(checkpoint, variant=variant)
    model = build_model(ckpt)
    torch.manual_seed(0)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if parity_videos is None:
        parity_videos = [
            normalize(synthetic_crops(n, seed=100 + i)) for i, n in enumerate(parity_seq_lens)
        ]
    # Built in a scratch directory next to the target, moved into place only after parity.
    classifier, head, explain_weights, parity = write_verified_graphs(
        ckpt, model, outdir, parity_videos, tolerance
    )
    checkpoint_info, preprocessing = checkpoint_record(ckpt, seq_len=seq_len, crop_style=crop_style)
    extra = dict(extra or {})
    sidecar = Sidecar(
        model=ModelInfo(
            architecture="resnext50_32x4d + LSTM(2048, 2048) + Linear(2048, 2)",
            variant=ckpt.variant,
            variant_source=ckpt.variant_source,
            lstm_bias=ckpt.lstm_bias,
            lstm_batch_first=ckpt.variant == "sequence",
        ),
        reduce=reduce,
        input=InputSpec(),
        preprocessing=preprocessing,
        labels=LABELS,
        checkpoint=checkpoint_info,
        graphs=graph_records(classifier, head, explain_weights),
        opset=OPSET,
        exporter="torch.onnx.export (TorchScript-based, dynamo=False)",
        versions=library_versions(("torch", "torchvision", "onnx", "onnxruntime", "numpy")),
        parity=parity,
        export_seconds=round(time.perf_counter() - t0, 2),
        demo=bool(extra.pop("demo", False)),
        extra=extra,
    )
    path = outdir / SIDECAR_NAME
    write_sidecar(path, sidecar)
    log.info("exported %s to %s (parity %.2g)", ckpt.path, outdir, parity["max_abs_prob_diff"])
    return ExportResult(outdir, classifier, head, path, parity)
