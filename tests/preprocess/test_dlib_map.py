"""The SCRFD -> dlib-mmod box map: its accuracy on held-out faces (cached mmod boxes, made by
``benchmarks/fit_dlib_map.py collect``), the analysis of mmod's boxes behind it, and the map's
behaviour as a pure function."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fit_dlib_map import (
    FIXTURE,
    arrays,
    evaluate,
    iou_rows,
    load_pairs,
    mmod_consistency,
    mmod_lattice,
    on_lattice,
    snap_to_lattice,
)
from core.errors import InvalidInputError
from preprocess.dlib_map import COEFFICIENTS, check_crop_style, dlib_box, face_box, map_boxes
from preprocess.dlib_map_coefficients import FIT
from preprocess.scrfd import Face

# Issue 9 asked for a mean IoU >= 0.85 with mmod on held-out faces. Not reached, and not
# reachable by a map of SCRFD's geometry: mmod does not agree with itself that well on the same
# face (test_mmod_agrees_with_itself_less_than_scrfd), and no coefficients reach it even on the
# faces they were fitted on (FIT["fitted_on_all_faces"]).
ISSUE_TARGET = 0.85
HELD_OUT_FLOOR = 0.72


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
        f"\nheld out ({report['faces']} faces of {sorted(held)}): mean IoU with dlib mmod: "
        f"raw SCRFD {report['mean_iou_raw']:.3f}, mapped {report['mean_iou_mapped']:.3f} "
        f"(issue target {ISSUE_TARGET}), snapped to mmod's lattice "
        f"{report['mean_iou_snapped']:.3f}, box-only fallback {report['mean_iou_box_only']:.3f}"
    )
    assert report["mean_iou_mapped"] >= HELD_OUT_FLOOR
    assert report["mean_iou_mapped"] >= report["mean_iou_raw"] + 0.1
    assert report == FIT["held_out"]  # the shipped figures are the ones measured here


def test_dlib_map_beats_raw_boxes_on_every_left_out_group():
    for group, r in FIT["leave_one_group_out"].items():
        assert r["mean_iou_mapped"] > r["mean_iou_raw"] + 0.05, group


def test_mmod_boxes_are_points_of_dlibs_pyramid_lattice(pairs):
    for p in pairs:
        assert on_lattice(p["mmod"], *p["frame_wh"]) is not None, p["image"]
        moved = np.asarray(p["mmod"], dtype=np.float64) + np.array([1, 0, 1, 0])
        assert on_lattice(moved, *p["frame_wh"]) is None, p["image"]


def test_mmod_lattice_steps_are_a_fifth_in_side_and_a_tenth_in_position():
    levels = mmod_lattice(1920, 1080)
    sides = np.array([np.median(xs[:, 1] - xs[:, 0]) for xs, _ in levels])
    np.testing.assert_allclose(sides[1:] / sides[:-1], 1.2, atol=0.03)
    for xs, _ in levels[3:12]:
        steps = np.diff(xs[:, 0])
        side = np.median(xs[:, 1] - xs[:, 0])
        assert 0.08 < np.median(steps) / side < 0.12


def test_snap_to_lattice_gives_a_box_mmod_could_report(pairs):
    boxes, kps, _ = arrays(pairs[:20])
    for p, box in zip(pairs, map_boxes(boxes, kps)):
        snapped = snap_to_lattice(box, *p["frame_wh"])
        assert on_lattice(snapped, *p["frame_wh"]) is not None
        assert iou_rows(snapped[None], box[None])[0] > 0.6


def test_mmod_agrees_with_itself_less_than_scrfd(pairs):
    consistency = mmod_consistency(pairs)
    assert consistency == FIT["mmod_consistency"]
    for kind in ("mirrored", "fake_vs_real"):
        c = consistency[kind]
        print(
            f"\n{kind} ({c['faces']} faces): mmod {c['mmod_iou']:.3f}, SCRFD {c['scrfd_iou']:.3f}"
        )
        assert c["faces"] >= 10
        assert c["mmod_iou"] < ISSUE_TARGET
        assert c["scrfd_iou"] > c["mmod_iou"] + 0.1


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
