"""The SCRFD -> dlib-mmod box map: its accuracy on held-out faces (cached mmod boxes, made by
``benchmarks/fit_dlib_map.py collect``) and its behaviour as a pure function."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fit_dlib_map import FIXTURE, arrays, evaluate, iou_rows, load_pairs
from engine.errors import InvalidInputError
from preprocess.dlib_map import COEFFICIENTS, check_crop_style, dlib_box, face_box, map_boxes
from preprocess.dlib_map_coefficients import FIT
from preprocess.scrfd import Face

# Issue 9 asked for >= 0.85. Not reached: dlib's mmod does not agree with itself that well.
# Run twice on the same face (its region moved by 15% of the face and scaled from 120 to 100 px
# face height) mmod's two boxes average IoU 0.77 (mmod_self_iou): its boxes are fixed 80x80
# windows on a 6/5 image pyramid and an 8-pixel feature grid, so side and position jump with
# the face's alignment. The map reaches mmod's own agreement, far above raw SCRFD boxes.
ISSUE_TARGET = 0.85
HELD_OUT_FLOOR = 0.75


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return load_pairs(FIXTURE)


def test_dlib_map_held_out_mean_iou(pairs, record_property):
    held = set(FIT["held_out_groups"])
    test = [p for p in pairs if p["group"] in held]
    assert not held & set(FIT["train_groups"])
    assert len(test) >= 50
    report = evaluate(COEFFICIENTS, test)
    record_property("dlib_map_held_out", report)
    print(
        f"\nheld out ({report['faces']} faces, {report['mmod_boxes']} mmod boxes, "
        f"{sorted(held)}): mean IoU with dlib mmod: raw SCRFD {report['mean_iou_raw']:.3f}, "
        f"mapped {report['mean_iou_mapped']:.3f} (issue target {ISSUE_TARGET}), box-only "
        f"fallback {report['mean_iou_box_only']:.3f}; mmod vs itself "
        f"{report['mmod_self_iou']:.3f}; mapped vs the mean of mmod's two runs "
        f"{report['mean_iou_mapped_vs_mmod_mean']:.3f}"
    )
    assert report["mean_iou_mapped"] >= HELD_OUT_FLOOR
    assert report["mean_iou_mapped"] >= report["mean_iou_raw"] + 0.1
    assert report["mean_iou_mapped"] >= report["mmod_self_iou"] - 0.02
    assert report == FIT["held_out"]  # the shipped figures are the ones measured here


def test_dlib_map_fallback_without_keypoints_beats_raw_boxes(pairs):
    boxes, _, mmod = arrays(pairs)
    assert iou_rows(map_boxes(boxes), mmod).mean() > iou_rows(boxes, mmod).mean() + 0.05


def test_map_boxes_gives_squares_and_matches_dlib_box(pairs):
    boxes, kps, _ = arrays(pairs[:10])
    mapped = map_boxes(boxes, kps)
    assert mapped.shape == (10, 4)
    np.testing.assert_allclose(mapped[:, 2] - mapped[:, 0], mapped[:, 3] - mapped[:, 1])
    for b, k, m in zip(boxes, kps, mapped):
        face = Face(box=tuple(b), score=0.9, kps=tuple(map(tuple, k)))
        np.testing.assert_allclose(dlib_box(face), m)
        assert face_box(face, "dlib") == dlib_box(face)
        assert face_box(face, "scrfd") == tuple(b)


def test_map_boxes_uses_box_formula_for_missing_keypoints(pairs):
    boxes, kps, _ = arrays(pairs[:3])
    kps[1] = np.nan
    mapped = map_boxes(boxes, kps)
    np.testing.assert_allclose(mapped[1], map_boxes(boxes[1:2])[0])
    np.testing.assert_allclose(mapped[[0, 2]], map_boxes(boxes[[0, 2]], kps[[0, 2]]))
    face = Face(box=tuple(boxes[1]), score=0.9, kps=None)
    np.testing.assert_allclose(dlib_box(face), mapped[1])


def test_map_boxes_empty_and_mismatched_inputs():
    assert map_boxes(np.zeros((0, 4)), np.zeros((0, 5, 2))).shape == (0, 4)
    with pytest.raises(InvalidInputError, match="2 boxes but 1 keypoint"):
        map_boxes(np.zeros((2, 4)), np.zeros((1, 5, 2)))


def test_check_crop_style_names_supported_values():
    assert check_crop_style("dlib") == "dlib"
    with pytest.raises(InvalidInputError, match="supported values are scrfd, dlib"):
        check_crop_style("hog")
