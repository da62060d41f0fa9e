"""SCRFD detector: pure functions, and parity with InsightFace's own SCRFD on real videos."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.errors import (
    ArtifactNotFoundError,
    BackendUnavailableError,
    InvalidInputError,
    ModelFormatError,
)
from preprocess.scrfd import (
    SCRFD_SPECS,
    Candidates,
    Face,
    SCRFDDetector,
    SCRFDSpec,
    anchor_centers,
    decode_batch,
    distance2bbox,
    distance2kps,
    letterbox,
    nms,
    select_faces,
    spec_for_outputs,
    to_blob,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"
VIDEOS = SHARED / "videos"
VIDEO_FILES = sorted(VIDEOS.glob("*.mp4")) if VIDEOS.is_dir() else []

needs_models = pytest.mark.skipif(
    not (MODELS / "det_500m.onnx").is_file(),
    reason=f"shared test models not found in {MODELS} (set DFE_SHARED)",
)
needs_videos = pytest.mark.skipif(
    not VIDEO_FILES, reason=f"shared test videos not found in {VIDEOS} (set DFE_SHARED)"
)

ACCEPT_FRAMES = 60  # the acceptance criterion: first 60 frames of every video
IOU_MIN = 0.99
SCORE_TOL = 1e-3


# ------------------------------------------------------------------------------------- helpers


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def assert_same_faces(
    got: list[Face],
    want: list[Face],
    *,
    iou_min: float = IOU_MIN,
    score_tol: float = SCORE_TOL,
    kps_tol: float = 0.05,
    where: str = "",
) -> None:
    assert len(got) == len(want), f"{where}: {len(got)} faces, expected {len(want)}"
    unused = list(range(len(got)))
    for w in want:
        best = max(unused, key=lambda i: iou(got[i].box, w.box))
        unused.remove(best)
        g = got[best]
        assert iou(g.box, w.box) >= iou_min, f"{where}: IoU {iou(g.box, w.box)}"
        assert abs(g.score - w.score) <= score_tol, f"{where}: scores {g.score} vs {w.score}"
        if w.kps is not None:
            assert g.kps is not None
            assert np.abs(np.array(g.kps) - np.array(w.kps)).max() <= kps_tol, where


def decode_video(path: Path, count: int, step: int = 1) -> list[np.ndarray]:
    av = pytest.importorskip("av")
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index >= count:
                break
            if index % step == 0:
                frames.append(frame.to_ndarray(format="bgr24"))
    return frames


@pytest.fixture(scope="module")
def model_copies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Copies of the shared models in a temporary folder, and a private rewrite cache, so that
    rewrites land neither in shared/ nor in the user's cache."""
    if not MODELS.is_dir():
        pytest.skip(f"shared test models not found in {MODELS}")
    folder = tmp_path_factory.mktemp("models")
    for name in ("det_500m.onnx", "det_2.5g.onnx"):
        if (MODELS / name).is_file():
            shutil.copy(MODELS / name, folder / name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield folder


@pytest.fixture(scope="module")
def det500(model_copies: Path) -> SCRFDDetector:
    return SCRFDDetector.from_file(model_copies / "det_500m.onnx", batch_size=16)


def insightface_reference(model: Path):
    scrfd = pytest.importorskip("insightface.model_zoo.scrfd")
    from tests.reference.sessions import insightface_session

    ref = scrfd.SCRFD(model_file=str(model), session=insightface_session(model))
    ref.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)

    def run(frame: np.ndarray) -> list[Face]:
        det, kpss = ref.detect(frame, input_size=(640, 640))
        faces = []
        for i in range(det.shape[0]):
            kps = None if kpss is None else tuple((float(x), float(y)) for x, y in kpss[i])
            box = tuple(float(v) for v in det[i, :4])
            faces.append(Face(box=box, score=float(det[i, 4]), kps=kps))
        return faces

    return run


# ----------------------------------------------------------------------------- letterbox / blob


def insightface_letterbox(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The padded image InsightFace's SCRFD feeds its network (captured from its own code)."""
    scrfd = pytest.importorskip("insightface.model_zoo.scrfd")
    captured: list[np.ndarray] = []
    stub = scrfd.SCRFD.__new__(scrfd.SCRFD)
    stub.use_kps = True
    stub.forward = lambda img, threshold: (captured.append(img.copy()), ([], [], []))[1]
    scrfd.SCRFD._detect_candidates(stub, frame, size, 0.5)
    return captured[0]


@pytest.mark.parametrize(
    ("height", "width"),
    [(1080, 1920), (480, 854), (854, 480), (640, 640), (7, 3), (3, 7), (641, 639), (100, 101)],
)
def test_letterbox_matches_insightface(height: int, width: int) -> None:
    rng = np.random.default_rng(height * 10_000 + width)
    frame = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image, scale = letterbox(frame, 640)
    expected = insightface_letterbox(frame, (640, 640))
    np.testing.assert_array_equal(image, expected)
    # scale = new height / height, with the other side truncated by int()
    if height / width > 1:
        assert scale == pytest.approx(640 / height)
    else:
        assert scale == int(640 * (height / width)) / height


def test_letterbox_landscape_pads_bottom_with_zeros() -> None:
    frame = np.full((1080, 1920, 3), 200, dtype=np.uint8)
    image, scale = letterbox(frame, 640)
    assert image.shape == (640, 640, 3) and image.dtype == np.uint8
    assert scale == 360 / 1080
    assert (image[:360] == 200).all()
    assert (image[360:] == 0).all()


def test_letterbox_portrait_pads_right_with_zeros() -> None:
    frame = np.full((854, 480, 3), 77, dtype=np.uint8)
    image, scale = letterbox(frame, 640)
    new_w = int(640 / (854 / 480))
    assert scale == 640 / 854
    assert (image[:, :new_w] == 77).all()
    assert (image[:, new_w:] == 0).all()


def test_letterbox_non_square_target_is_width_height() -> None:
    frame = np.zeros((100, 100, 3), dtype=np.uint8)
    image, scale = letterbox(frame, (640, 480))
    assert image.shape == (480, 640, 3)
    assert scale == 4.8


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
        [[1, 2, 3]],
    ],
)
def test_letterbox_rejects_bad_frames(bad: object) -> None:
    with pytest.raises(InvalidInputError):
        letterbox(bad, 640)  # type: ignore[arg-type]


def test_to_blob_matches_cv2_blob_from_image() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 64, 96, 3), dtype=np.uint8)
    blob = to_blob(images)
    assert blob.shape == (2, 3, 64, 96) and blob.dtype == np.float32 and blob.flags.c_contiguous
    for i in range(2):
        ref = cv2.dnn.blobFromImage(images[i], 1.0 / 128, (96, 64), (127.5,) * 3, swapRB=True)
        np.testing.assert_array_equal(blob[i : i + 1], ref)
    # channel 0 is red (the BGR input's last channel)
    assert blob[0, 0, 0, 0] == (images[0, 0, 0, 2] - 127.5) / 128


def test_to_blob_rejects_non_uint8() -> None:
    with pytest.raises(InvalidInputError):
        to_blob(np.zeros((1, 8, 8, 3), np.float32))


# ------------------------------------------------------------------------------ anchors / decode


def test_anchor_centers_order_and_values() -> None:
    centers = anchor_centers(2, 3, 8, 2)
    expected = [(x * 8, y * 8) for y in range(2) for x in range(3) for _ in range(2)]
    np.testing.assert_array_equal(centers, np.array(expected, dtype=np.float32))
    assert centers.dtype == np.float32


def test_anchor_centers_are_cached_and_read_only() -> None:
    a = anchor_centers(80, 80, 8, 2)
    assert a is anchor_centers(80, 80, 8, 2)
    assert a.shape == (12800, 2)
    with pytest.raises(ValueError):
        a[0, 0] = 1.0


def test_distance2bbox_and_kps() -> None:
    points = np.array([[10, 20], [0, 0]], dtype=np.float32)
    dist = np.array([[1, 2, 3, 4], [5, 5, 5, 5]], dtype=np.float32)
    np.testing.assert_array_equal(distance2bbox(points, dist), [[9, 18, 13, 24], [-5, -5, 5, 5]])
    offsets = np.arange(20, dtype=np.float32).reshape(2, 10)
    kps = distance2kps(points, offsets)
    assert kps.shape == (2, 5, 2)
    np.testing.assert_array_equal(kps[0, 1], [10 + 2, 20 + 3])
    np.testing.assert_array_equal(kps[1, 4], [18, 19])
    assert distance2kps(points[:0], offsets[:0]).shape == (0, 5, 2)


def test_spec_for_outputs_chooses_and_verifies() -> None:
    spec = spec_for_outputs([1, 1, 1, 4, 4, 4, 10, 10, 10])
    assert spec == SCRFDSpec(strides=(8, 16, 32), num_anchors=2, use_kps=True)
    assert spec.bbox_index(2) == 5 and spec.kps_index(0) == 6
    assert spec_for_outputs([1] * 3 + [4] * 3).use_kps is False
    assert spec_for_outputs([None] * 15).strides == (8, 16, 32, 64, 128)
    assert SCRFD_SPECS[10].num_anchors == 1
    with pytest.raises(ModelFormatError, match="output 3: 10"):
        spec_for_outputs([1, 1, 1, 10, 10, 10, 4, 4, 4])
    with pytest.raises(ModelFormatError, match="6, 9, 10 or 15"):
        spec_for_outputs([1] * 7)


SPEC9 = SCRFD_SPECS[9]


def fake_outputs(batch: int, hw: tuple[int, int], spec: SCRFDSpec = SPEC9) -> list[np.ndarray]:
    outs = []
    for c in spec.output_channels():
        level = len(outs) % spec.num_levels
        stride = spec.strides[level]
        rows = (hw[0] // stride) * (hw[1] // stride) * spec.num_anchors
        outs.append(np.zeros((batch, rows, c), dtype=np.float32))
    return outs


def put_face(outs, spec, n, level, row, score, dist, kps=None) -> None:
    outs[spec.score_index(level)][n, row, 0] = score
    outs[spec.bbox_index(level)][n, row] = dist
    if kps is not None:
        outs[spec.kps_index(level)][n, row] = kps


def test_decode_batch_no_faces() -> None:
    outs = fake_outputs(3, (64, 64))
    cands = decode_batch(outs, SPEC9, (64, 64), 0.5)
    assert len(cands) == 3
    assert all(c.scores.shape == (0,) and c.boxes.shape == (0, 4) for c in cands)
    assert all(c.kps is not None and c.kps.shape == (0, 5, 2) for c in cands)
    assert select_faces(cands[0], 1.0, 0.4) == []


def test_decode_batch_keeps_items_apart() -> None:
    outs = fake_outputs(3, (64, 64))
    # image 1 only: stride 16 level, cell (y=1, x=2), anchor 1 -> row (1*4 + 2)*2 + 1
    row = (1 * 4 + 2) * 2 + 1
    put_face(outs, SPEC9, 1, 1, row, 0.9, [1, 1, 2, 2], np.arange(10) / 10)
    cands = decode_batch(outs, SPEC9, (64, 64), 0.5)
    assert [c.scores.size for c in cands] == [0, 1, 0]
    cx, cy = 2 * 16, 1 * 16
    np.testing.assert_allclose(cands[1].boxes[0], [cx - 16, cy - 16, cx + 32, cy + 32])
    np.testing.assert_allclose(cands[1].kps[0, 0], [cx + 0.0, cy + 1.6])
    assert cands[1].scores[0] == np.float32(0.9)


def test_decode_batch_threshold_is_inclusive() -> None:
    outs = fake_outputs(1, (32, 32))
    put_face(outs, SPEC9, 0, 0, 0, 0.5, [1, 1, 1, 1])
    put_face(outs, SPEC9, 0, 0, 5, np.nextafter(np.float32(0.5), np.float32(0)), [1, 1, 1, 1])
    assert decode_batch(outs, SPEC9, (32, 32), 0.5)[0].scores.size == 1


def test_decode_batch_face_at_the_border_is_not_clipped() -> None:
    outs = fake_outputs(1, (64, 64))
    put_face(outs, SPEC9, 0, 2, 0, 0.8, [1, 1, 1, 1])  # stride 32, top-left cell
    faces = select_faces(decode_batch(outs, SPEC9, (64, 64), 0.5)[0], 0.5, 0.4)
    assert len(faces) == 1
    assert faces[0].box == (-64.0, -64.0, 64.0, 64.0)  # (-32, -32, 32, 32) / scale 0.5


def test_decode_batch_many_faces_and_nms() -> None:
    outs = fake_outputs(2, (128, 128))
    rng = np.random.default_rng(1)
    # image 0: 40 well separated faces on the stride-8 grid (4-cell spacing, boxes of 16 px)
    rows = []
    for k in range(40):
        y, x = divmod(k, 8)
        rows.append(((y * 3) * 16 + x * 2) * 2)
    for k, row in enumerate(rows):
        put_face(outs, SPEC9, 0, 0, row, 0.6 + k * 0.005, [1, 1, 1, 1], rng.normal(size=10))
    # image 1: the same face seen by both anchors of one cell and a neighbour -> one face
    put_face(outs, SPEC9, 1, 0, 100, 0.9, [4, 4, 4, 4])
    put_face(outs, SPEC9, 1, 0, 101, 0.8, [4, 4, 4, 4])
    put_face(outs, SPEC9, 1, 0, 102, 0.7, [4, 4, 4, 4])
    cands = decode_batch(outs, SPEC9, (128, 128), 0.5)
    faces0 = select_faces(cands[0], 1.0, 0.4)
    assert len(faces0) == 40
    assert [f.score for f in faces0] == sorted((f.score for f in faces0), reverse=True)
    faces1 = select_faces(cands[1], 1.0, 0.4)
    assert [round(f.score, 3) for f in faces1] == [0.9]
    assert len(select_faces(cands[0], 1.0, 0.4, max_faces=3)) == 3


def test_decode_batch_rejects_wrong_shapes() -> None:
    outs = fake_outputs(2, (64, 64))
    with pytest.raises(ModelFormatError, match="expected"):
        decode_batch(outs, SPEC9, (32, 32), 0.5)
    outs[0] = outs[0][:1]
    with pytest.raises(ModelFormatError):
        decode_batch(outs, SPEC9, (64, 64), 0.5)


def test_select_faces_maps_to_frame_pixels() -> None:
    cands = Candidates(
        scores=np.array([0.7, 0.9], np.float32),
        boxes=np.array([[100, 100, 200, 200], [10, 10, 20, 30]], np.float32),
        kps=np.ones((2, 5, 2), np.float32) * 10,
    )
    faces = select_faces(cands, 0.5, 0.4)
    assert [f.score for f in faces] == [pytest.approx(0.9), pytest.approx(0.7)]
    assert faces[0].box == (20.0, 20.0, 40.0, 60.0)
    assert faces[1].kps == ((20.0, 20.0),) * 5
    assert all(isinstance(v, float) for v in faces[0].box)
    with pytest.raises(dataclasses.FrozenInstanceError):
        faces[0].score = 1.0  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ NMS


def test_nms_empty_and_single() -> None:
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.4).tolist() == []
    assert nms(np.array([[0, 0, 10, 10]]), np.array([0.5]), 0.4).tolist() == [0]


def test_nms_identical_boxes_keep_best_and_ties_are_stable() -> None:
    boxes = np.array([[0, 0, 10, 10]] * 3, np.float32)
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.4).tolist() == [1]
    assert nms(boxes, np.array([0.8, 0.8, 0.8]), 0.4).tolist() == [0]


def test_nms_disjoint_boxes_all_kept_in_score_order() -> None:
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]], np.float32)
    assert nms(boxes, np.array([0.6, 0.9, 0.7]), 0.4).tolist() == [1, 2, 0]


def test_nms_uses_plus_one_areas_and_inclusive_threshold() -> None:
    # Widths with +1: 10 each, overlap 5 -> IoU = 50 / (100 + 100 - 50) = 1/3 exactly-ish.
    a, b = [0, 0, 9, 9], [5, 0, 14, 9]
    boxes = np.array([a, b], np.float32)
    scores = np.array([0.9, 0.8])
    iou_plus_one = 50 / 150
    assert nms(boxes, scores, np.float32(iou_plus_one)).tolist() == [0, 1]  # IoU <= t: kept
    assert nms(boxes, scores, 0.3).tolist() == [0]
    # Without +1 the IoU would be 36 / 126 = 0.286 and the box would survive a 0.3 threshold.


def test_nms_matches_insightface_on_many_random_boxes() -> None:
    scrfd = pytest.importorskip("insightface.model_zoo.scrfd")
    rng = np.random.default_rng(7)
    for trial in range(20):
        n = int(rng.integers(1, 300))
        xy = rng.uniform(0, 500, size=(n, 2))
        wh = rng.uniform(5, 120, size=(n, 2))
        scores = rng.uniform(0.5, 1.0, size=n).round(2)  # many ties
        dets = np.hstack([xy, xy + wh, scores[:, None]]).astype(np.float32)
        stub = scrfd.SCRFD.__new__(scrfd.SCRFD)
        stub.nms_thresh = 0.4
        want = [int(i) for i in scrfd.SCRFD.nms(stub, dets)]
        assert nms(dets[:, :4], dets[:, 4], 0.4).tolist() == want, f"trial {trial}"


# ------------------------------------------------------------------------------------- detector


def test_detector_options_are_validated(model_copies: Path) -> None:
    path = model_copies / "det_500m.onnx"
    with pytest.raises(InvalidInputError, match="multiple of 32"):
        SCRFDDetector.from_file(path, input_size=650)
    with pytest.raises(InvalidInputError, match="score_threshold"):
        SCRFDDetector.from_file(path, score_threshold=1.5)
    with pytest.raises(InvalidInputError, match="batch_size"):
        SCRFDDetector.from_file(path, batch_size=0)
    with pytest.raises(InvalidInputError, match="max_faces"):
        SCRFDDetector.from_file(path, max_faces=0)
    with pytest.raises(ArtifactNotFoundError):
        SCRFDDetector.from_file(model_copies / "missing.onnx")


def test_detector_refuses_unavailable_provider(model_copies: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        SCRFDDetector.from_file(
            model_copies / "det_500m.onnx", providers=("CUDAExecutionProvider",)
        )


def test_detector_refuses_silent_fallback(
    model_copies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even if the provider looks available, a session that fell back to CPU is an error."""
    import onnxruntime as ort

    real = ort.get_available_providers
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real()])
    with (
        pytest.warns(UserWarning),
        pytest.raises(BackendUnavailableError, match=r"Refusing to fall back silently"),
    ):
        SCRFDDetector.from_file(
            model_copies / "det_500m.onnx",
            providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
        )


def test_detector_runs_on_requested_cpu_provider(det500: SCRFDDetector) -> None:
    assert det500.providers == ["CPUExecutionProvider"]
    assert det500.spec == SCRFD_SPECS[9]
    path = det500.graph.path  # the rewrite lives in the cache, not next to the source
    assert path.parent == Path(os.environ["DFE_CACHE"]) and path.name.startswith("det_500m.")
    assert det500.graph.source == det500.model_path and det500.graph.rewritten


def test_detector_bad_input(det500: SCRFDDetector) -> None:
    assert det500.detect([]) == []
    with pytest.raises(InvalidInputError, match="frame 1"):
        det500.detect([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])
    with pytest.raises(InvalidInputError, match="detect_one"):
        det500.detect(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="uint8"):
        det500.detect_one(np.zeros((8, 8, 3), np.float32))


def test_detector_no_faces_in_blank_or_tiny_frames(det500: SCRFDDetector) -> None:
    frames = [
        np.zeros((480, 640, 3), np.uint8),
        np.full((1080, 1920, 3), 255, np.uint8),
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((7, 3, 3), np.uint8),
    ]
    assert det500.detect(frames) == [[], [], [], []]


@needs_videos
def test_detector_is_thread_safe(det500: SCRFDDetector) -> None:
    frames = decode_video(VIDEO_FILES[0], 8) + decode_video(VIDEO_FILES[-1], 8)
    expected = [det500.detect_one(f) for f in frames]
    results: dict[int, list[list[Face]]] = {}

    def work(k: int) -> None:
        results[k] = det500.detect(frames[k::2])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        for got, want in zip(results[k], expected[k::2], strict=True):
            assert_same_faces(got, want, iou_min=0.999, score_tol=1e-5, where=f"thread {k}")


@needs_videos
def test_detector_on_a_compute_pool_gives_the_same_faces_in_order(model_copies: Path) -> None:
    from core.compute import ComputePool

    frames = decode_video(VIDEO_FILES[0], 6) + decode_video(VIDEO_FILES[-1], 6)
    inline = SCRFDDetector.from_file(
        model_copies / "det_500m.onnx", batch_size=1, intra_op_threads=1
    )
    pool = ComputePool(2)
    spread = SCRFDDetector.from_file(
        model_copies / "det_500m.onnx", batch_size=1, intra_op_threads=1, pool=pool
    )
    try:
        assert spread.detect(frames) == inline.detect(frames)  # bit for bit, frame by frame
        images, scales = zip(*(letterbox(f, (640, 384)) for f in frames[:6]), strict=True)
        assert spread.detect_prepared(images, scales) == inline.detect_prepared(images, scales)
    finally:
        pool.close()


# -------------------------------------------------------------------- acceptance: vs InsightFace


@pytest.fixture(scope="module")
def ref500(model_copies: Path):
    return insightface_reference(MODELS / "det_500m.onnx")


@pytest.fixture(scope="module")
def det25(model_copies: Path) -> SCRFDDetector:
    if not (model_copies / "det_2.5g.onnx").is_file():
        pytest.skip("det_2.5g.onnx not in the shared models")
    return SCRFDDetector.from_file(model_copies / "det_2.5g.onnx")


@pytest.fixture(scope="module")
def ref25(det25: SCRFDDetector):
    return insightface_reference(MODELS / "det_2.5g.onnx")


@needs_videos
@pytest.mark.slow
@pytest.mark.parametrize("video", VIDEO_FILES, ids=lambda p: p.stem)
def test_det500m_matches_insightface_on_first_60_frames(
    video: Path, det500: SCRFDDetector, ref500
) -> None:
    frames = decode_video(video, ACCEPT_FRAMES)
    assert len(frames) == ACCEPT_FRAMES
    ours = det500.detect(frames)
    total = 0
    for i, (got, frame) in enumerate(zip(ours, frames, strict=True)):
        want = ref500(frame)
        total += len(want)
        assert_same_faces(got, want, where=f"{video.name} frame {i}")
    assert total >= ACCEPT_FRAMES  # every frame of these clips shows a face


@needs_videos
@pytest.mark.slow
@pytest.mark.parametrize("video", VIDEO_FILES, ids=lambda p: p.stem)
def test_det2_5g_matches_insightface_on_a_subset(video: Path, det25: SCRFDDetector, ref25) -> None:
    frames = decode_video(video, ACCEPT_FRAMES, step=6)  # 10 frames spread over the first 60
    for i, (got, frame) in enumerate(zip(det25.detect(frames), frames, strict=True)):
        assert_same_faces(got, ref25(frame), where=f"{video.name} frame {6 * i}")


@needs_videos
def test_batch_of_32_from_different_videos_equals_single_runs(model_copies: Path) -> None:
    frames: list[np.ndarray] = []
    per_video = -(-32 // len(VIDEO_FILES))
    for video in VIDEO_FILES:
        frames += decode_video(video, per_video * 7, step=7)
    frames = frames[:32]
    # interleave videos so that neighbours in the batch differ (and differ in size)
    frames = frames[0::2] + frames[1::2]
    assert len(frames) == 32 and len({f.shape for f in frames}) > 1
    detector = SCRFDDetector.from_file(model_copies / "det_500m.onnx", batch_size=32)
    batched = detector.detect(frames)
    singles = [detector.detect_one(f) for f in frames]
    assert sum(len(f) for f in batched) >= 32
    for i, (got, want) in enumerate(zip(batched, singles, strict=True)):
        assert_same_faces(got, want, iou_min=0.999, score_tol=1e-5, where=f"frame {i}")


@needs_videos
@pytest.mark.slow
def test_frame_shaped_input_gives_the_square_inputs_faces(model_copies: Path) -> None:
    """Issue 18: the detector input shaped like the frame (640x384 for 16:9; fast mode's since
    issue 33) instead of 640x640 finds the same faces: boxes within floating point noise near
    the padding, and the same integer crop boxes on the first 20 frames of every test clip (at
    N=60, frames 38 and 52 of dfdc_like_fake differ by a pixel: tests/engine/test_exact_boxes.py
    holds exact mode to InsightFace's boxes on every frame)."""
    from preprocess.crop import crop_box

    shaped = SCRFDDetector.from_file(model_copies / "det_500m.onnx", input_shape="frame")
    square = SCRFDDetector.from_file(model_copies / "det_500m.onnx", input_shape="square")
    worst = 0.0
    for video in VIDEO_FILES:
        frames = decode_video(video, 20)
        assert shaped.input_for(frames[0].shape[:2])[1] < 640 <= square.input_for((1, 1))[1]
        for i, (a, b) in enumerate(zip(shaped.detect(frames), square.detect(frames), strict=True)):
            assert len(a) == len(b), f"{video.name} frame {i}"
            for fa, fb in zip(a, b):
                worst = max(worst, float(np.abs(np.subtract(fa.box, fb.box)).max()))
                assert abs(fa.score - fb.score) < 1e-4
                shape = frames[i].shape
                assert crop_box(fa.box, shape) == crop_box(fb.box, shape), f"{video.name} {i}"
    assert worst <= 0.05
