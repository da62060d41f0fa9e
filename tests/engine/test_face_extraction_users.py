"""One face chain, one set of crops: the runtime (``Engine.inspect``), ``dfe train``'s cropper,
INT8 calibration's crop collection and ``dfe preprocess`` give identical crops for the same
video and settings, and calibration scores whom the runtime scores (``--faces main``).

The videos: a shared clip, and the issue-14 side-by-side video (two copies of one man, real and
fake, whose highest-scoring face flips between them: the per-frame rule switches person, the
main track does not). The tiny model is enough: these tests are about crops, not weights.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine.core.config import EngineConfig
from preprocess.crop import Preprocessor
from tests.preprocess import _face_videos as fv

pytestmark = pytest.mark.slow

N = 24


@pytest.fixture(scope="module")
def videos(shared_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("users")
    return {
        "side_by_side": fv.side_by_side(d / "sbs.mp4", shared_dir, seconds=1.0),
        "shared": shared_dir / "videos" / "pair480p_fake.mp4",
    }


@pytest.fixture(scope="module")
def detector(models_dir):
    """The detector as ``dfe build`` (INT8 calibration) and ``dfe preprocess`` open it."""
    from engine.api import open_detector

    return open_detector(EngineConfig(models_dir=models_dir, download=False))


def _calibration(video, detector, engine, **options):
    from engine.optimize.calibration import FrameSelection, video_crops

    spec = engine.spec_for(N)
    (got,) = video_crops(
        [video],
        detector,
        FrameSelection(0, 1, N),
        policy=engine.face_policy(spec),
        preprocessor=Preprocessor(spec.input),
        **options,
    )
    return got


@pytest.mark.parametrize("name", ["side_by_side", "shared"])
def test_runtime_training_calibration_and_preprocess_crop_alike(
    name, videos, tiny_engine, detector, models_dir
):
    from export.datasets import FaceCropper, options_for
    from preprocess.face_clips import face_clip_crops
    from preprocess.faces import clip_policy

    video = videos[name]
    seen = tiny_engine.inspect(video, seq_len=N)
    runtime = np.stack(seen.crops)
    pred = seen.prediction
    assert pred.faces_mode == "main" and pred.frames == N
    style = pred.crop_style

    training = FaceCropper(
        options_for(
            N,
            no_face="full_frame",
            crop_style=style,
            detector=EngineConfig(models_dir=models_dir, download=False),
        )
    )(video)
    assert training.frame_indices == pred.frame_indices and training.boxes == pred.boxes
    assert np.array_equal(training.crops, runtime)

    calib = _calibration(video, detector, tiny_engine, keep_faceless=True)
    assert calib.frame_indices == pred.frame_indices and calib.faces == pred.faces
    spec = tiny_engine.spec_for(N)
    assert np.array_equal(calib.crops, Preprocessor(spec.input)(runtime))

    clip = face_clip_crops(
        video, detector, frames=N, policy=clip_policy("full_frame", crop_style=style)
    )
    (seq,) = clip.sequences
    assert seq.frame_indices == pred.frame_indices and [list(b) for b in seq.boxes] == pred.boxes
    assert np.array_equal(np.stack(seq.crops), runtime)
    assert clip.people == pred.people


def test_calibration_follows_the_main_track_as_the_runtime_does(videos, tiny_engine, detector):
    """On the side-by-side video the per-frame rule switches between the two men; calibration
    (default ``--faces main``) keeps the runtime's one person, and the per-frame crops differ."""
    seen = tiny_engine.inspect(videos["side_by_side"], seq_len=N)
    pred = seen.prediction
    assert pred.people == 2 and len({_side(b) for b in pred.boxes}) == 1
    main = _calibration(videos["side_by_side"], detector, tiny_engine)
    assert main.people == 2 and main.frame_indices == pred.frame_indices
    spec = tiny_engine.spec_for(N)
    assert np.array_equal(main.crops, Preprocessor(spec.input)(np.stack(seen.crops)))

    per_frame = _calibration(videos["side_by_side"], detector, tiny_engine, faces="per-frame")
    from preprocess.face_clips import face_clip_crops

    rule = face_clip_crops(videos["side_by_side"], detector, frames=N, faces="per-frame")
    sides = [_side(b) for b in rule.sequences[0].boxes]
    assert sum(a != b for a, b in itertools.pairwise(sides)) >= 3  # the rule switches person
    assert per_frame.crops.shape == main.crops.shape
    assert not np.array_equal(per_frame.crops, main.crops)


def _side(box, width=1280):
    return "left" if (box[0] + box[2]) / 2 < width / 2 else "right"


def test_preprocess_cli_follows_the_main_person_or_the_face_rule(videos, models_dir, tmp_path):
    """``dfe preprocess`` takes ``--faces main`` (default) or ``per-frame``; one clip is one
    person, so ``all`` is refused by argparse."""
    from engine.cli import main

    common = ["--frames", "4", "--models", models_dir, "--no-download"]
    for faces in ("main", "per-frame"):
        out = tmp_path / faces
        assert main(["preprocess", str(videos["side_by_side"]), "-o", str(out), "--faces", faces,
                     *common]) == 0  # fmt: skip
        assert (out / "sbs.mp4").is_file()
    with pytest.raises(SystemExit):
        main(["preprocess", str(videos["side_by_side"]), "-o", str(tmp_path), "--faces", "all"])
