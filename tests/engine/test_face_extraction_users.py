"""One face chain, one set of crops: the runtime (``Engine.inspect``), ``dfe train``'s cropper,
INT8 calibration's crop collection, ``dfe preprocess``, the whole-video timeline and live
streams (``Engine.stream``) give identical crops for the same video (frames) and settings, and
calibration scores whom the runtime scores (``--faces main``).

The videos: a shared clip, and the issue-14 side-by-side video (two copies of one man, real and
fake, whose highest-scoring face flips between them: the per-frame rule switches person, the
main track does not). The tiny model is enough: these tests are about crops, not weights.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.config import EngineConfig
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


class _Enough(Exception):
    """Stops a timeline after its first chunk (the frames compared)."""


class _Pushed:
    """What the face chain's stream step (:meth:`FaceStream.push`, the timeline's and live
    streams') gave, batch by batch; with ``stop``, the stream stops after the first batch."""

    def __init__(self) -> None:
        self.batches: list = []
        self.stop = False


@pytest.fixture
def pushed(monkeypatch):
    from preprocess.face_extraction import FaceStream

    seen = _Pushed()
    push = FaceStream.push

    def spy(self, frames, frame_indices):
        got = push(self, frames, frame_indices)
        seen.batches.append(got)
        if seen.stop:
            raise _Enough
        return got

    monkeypatch.setattr(FaceStream, "push", spy)
    return seen


def _crops_at(frames, indices, boxes, crops):
    """Per runtime frame, the stream's face cropped at the runtime's box (checked equal to the
    runtime's crop); returns the person ids of those faces."""
    by_index = {got.index: got for got in frames}
    ids = []
    for idx, box, crop in zip(indices, boxes, crops, strict=True):
        assert box is not None  # both men are in every frame of these videos
        (face,) = [c for c in by_index[idx].crops if list(c.box) == box]
        assert np.array_equal(face.crop, crop)
        ids.append(face.track)
    return ids


@pytest.mark.parametrize("name", ["side_by_side", "shared"])
def test_timeline_and_live_crop_as_the_runtime_does(name, videos, tiny_engine, pushed):
    """The timeline (every frame sampled; its first chunk: the runtime's N frames) and a live
    stream of the runtime's frames crop the runtime's person exactly as it does, and live
    follows them as one person."""
    from engine.timeline import build_timeline
    from preprocess.video import read_video

    video = videos[name]
    seen = tiny_engine.inspect(video, seq_len=N)
    pred = seen.prediction
    assert pred.frame_indices == list(range(N))

    pipeline = tiny_engine.pipeline_for(tiny_engine.spec_for(None))
    pushed.stop = True  # the first chunk is what is compared: the rest is not needed
    with pytest.raises(_Enough):
        build_timeline(pipeline, str(video), fps=1000.0, chunk=N)
    (chunk,) = pushed.batches
    assert [got.index for got in chunk] == pred.frame_indices
    _crops_at(chunk, pred.frame_indices, pred.boxes, seen.crops)

    pushed.batches.clear()
    pushed.stop = False
    frames = read_video(video, N).frames
    events = list(tiny_engine.stream(((k / 100, f) for k, f in enumerate(frames)), fps=100,
                                     faces="main", window=2, hop=1))  # fmt: skip
    assert events[-1].to_record()["frames_scored"] == N
    live = [got for batch in pushed.batches for got in batch]
    assert [got.index for got in live] == pred.frame_indices
    ids = _crops_at(live, pred.frame_indices, pred.boxes, seen.crops)
    assert len(set(ids)) == 1  # one person, as the runtime's main track


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
