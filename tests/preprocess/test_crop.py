"""Crop convention, resize and normalisation against the original's torchvision transforms."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInputError
from core.sidecar import InputSpec
from preprocess.crop import Preprocessor, crop_box, face_crop, normalize, resize_pil


@pytest.fixture(scope="module")
def transforms():
    """torchvision's transforms, the original's preprocessing (skipped without torchvision)."""
    return pytest.importorskip("torchvision", reason="compares with torchvision").transforms


@pytest.fixture(scope="module")
def original(transforms):
    return transforms.Compose(
        [
            transforms.ToPILImage(),
            transforms.Resize((112, 112)),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


def test_crop_box_rounds_to_nearest_then_clips():
    # .5 rounds up; .49 down
    assert crop_box((10.5, 20.49, 50.51, 80.5), (100, 200)) == (11, 20, 51, 81)
    # clipped to the frame (height 100, width 200)
    assert crop_box((-7.2, -0.6, 250.0, 130.2), (100, 200)) == (0, 0, 200, 100)
    # a box entirely outside the frame or empty after rounding -> None (whole-frame fallback)
    assert crop_box((300, 10, 400, 50), (100, 200)) is None
    assert crop_box((10.2, 10.2, 10.4, 30.0), (100, 200)) is None


def test_crop_box_margin_expands_float_box_before_rounding():
    # 40x60 box, margin 0.25 -> 10 px left/right, 15 px top/bottom
    assert crop_box((50, 40, 90, 100), (480, 640), margin=0.25) == (40, 25, 100, 115)
    with pytest.raises(InvalidInputError):
        crop_box((0, 0, 1, 1), (10, 10), margin=-0.1)
    for bad in (float("nan"), float("inf"), 1e308, 10.5):  # no pixels, or past any frame
        with pytest.raises(InvalidInputError, match="from 0 to 10"):
            crop_box((0, 0, 1, 1), (10, 10), margin=bad)


@pytest.mark.parametrize("shape", [(285, 197), (138, 100), (60, 40), (112, 112), (400, 980)])
def test_resize_matches_torchvision_pil_exactly(shape, transforms):
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    ours = resize_pil(img)
    theirs = np.asarray(transforms.Resize((112, 112))(transforms.ToPILImage()(img)))
    # The measured max pixel difference against torchvision's PIL bilinear resize is 0.
    assert int(np.abs(ours.astype(int) - theirs.astype(int)).max()) == 0


def test_normalize_matches_torchvision_transforms_in_bgr_order(original):
    import torch

    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, size=(150 + i, 120, 3), dtype=np.uint8) for i in range(4)]
    ours = normalize(np.stack([face_crop(c, None) for c in crops]))
    theirs = torch.stack([original(c) for c in crops]).numpy()
    assert ours.shape == (4, 3, 112, 112) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
    # channel 0 stays blue (BGR, never swapped), normalised with the RGB mean's first entry
    blue_only = np.zeros((112, 112, 3), np.uint8)
    blue_only[..., 0] = 255
    x = normalize(blue_only)
    assert x[0, 0].max() == pytest.approx((1 - 0.485) / 0.229, abs=1e-5)
    assert x[0, 2].max() == pytest.approx((0 - 0.406) / 0.225, abs=1e-5)


def test_face_crop_uses_integer_box_slice():
    frame = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8)
    box = crop_box((10.4, 20.6, 122.0, 99.5), frame.shape)
    assert box == (10, 21, 122, 100)
    np.testing.assert_array_equal(face_crop(frame, box), resize_pil(frame[21:100, 10:122]))


def test_bad_image_input_raises():
    with pytest.raises(InvalidInputError):
        resize_pil(np.zeros((10, 10), np.uint8))
    with pytest.raises(InvalidInputError):
        normalize(np.zeros((2, 112, 112, 3), np.float32))


def test_preprocessor_follows_the_sidecar_input_spec():
    rng = np.random.default_rng(5)
    crops = rng.integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
    default = Preprocessor()
    np.testing.assert_array_equal(default(crops), normalize(crops))  # the original's BGR input
    rgb = Preprocessor(InputSpec(channel_order="RGB"))
    np.testing.assert_array_equal(rgb(crops), normalize(crops[..., ::-1]))
    plain = Preprocessor(InputSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size=64))
    x = plain(np.full((1, 64, 64, 3), 255, np.uint8))
    assert x.shape == (1, 3, 64, 64) and np.allclose(x, 1.0)
    assert plain.crop(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8), None).shape == (64, 64, 3)
