"""The one face chain (:class:`preprocess.face_extraction.FaceExtractor`): who is scored
(``main``, ``all``, ``per-frame``), fast mode, the detector input's gate, decoding chosen frames
and the record, on synthetic frames with a scripted detector (no model file needed).
``tests/engine/test_face_extraction_users.py`` checks that its users give identical crops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.config import EngineConfig
from core.errors import InvalidInputError
from preprocess.crop import Preprocessor
from preprocess.face_extraction import DecodeOptions, FaceExtractor, chooses_input
from preprocess.faces import FacePolicy
from preprocess.scrfd import Face

SHAPE = (120, 200, 3)
LEFT = (20.0, 30.0, 60.0, 80.0)
RIGHT = (120.0, 30.0, 160.0, 80.0)


def _frames(n: int) -> list[np.ndarray]:
    """Frame ``i`` is filled with the value ``i`` (the scripted detector reads it back)."""
    return [np.full(SHAPE, i, np.uint8) for i in range(n)]


class Scripted:
    """A detector that returns ``faces[i]`` for the frame filled with ``i``, highest score
    first, and records which frames it saw."""

    def __init__(self, faces: dict[int, list[Face]]) -> None:
        self.faces = faces
        self.seen: list[int] = []

    def detect(self, frames):
        out = []
        for f in frames:
            i = int(f[0, 0, 0])
            self.seen.append(i)
            out.append(sorted(self.faces.get(i, []), key=lambda face: -face.score))
        return out


def _two_people(n: int = 8, *, left_missing: int = 5) -> Scripted:
    """Two people side by side in every frame (the left one missing in ``left_missing``); the
    higher score alternates between them, so the per-frame rule switches person every frame."""
    faces = {}
    for i in range(n):
        left = Face(LEFT, 0.9 if i % 2 == 0 else 0.8)
        right = Face(RIGHT, 0.8 if i % 2 == 0 else 0.9)
        faces[i] = [right] if i == left_missing else [left, right]
    return Scripted(faces)


def _side(box) -> str:
    return "left" if box[0] < SHAPE[1] / 2 else "right"


def test_main_follows_the_person_in_most_frames():
    got = FaceExtractor(_two_people()).extract(_frames(8))
    (seq,) = got.sequences
    assert len(got.tracks) == 2 and got.people == 2
    assert seq.track is not None and {_side(b) for b in seq.boxes} == {"right"}
    assert seq.positions == list(range(8)) and seq.found == 8 and seq.coverage == 1.0
    assert [c.shape for c in seq.crops] == [(112, 112, 3)] * 8
    assert got.record() == {"detector_input": None, "people": 2, "tracks": 2, "found": 8,
                            "reused": 0}  # fmt: skip


def test_per_frame_takes_the_face_rule_in_each_frame():
    got = FaceExtractor(_two_people(), faces="per-frame").extract(_frames(8))
    (seq,) = got.sequences
    sides = [_side(b) for b in seq.boxes]
    assert seq.track is None and sum(a != b for a, b in itertools.pairwise(sides)) >= 5
    assert got.people == 2  # tracks are still made: the record says how many people


def test_all_scores_each_person_on_their_own_frames():
    got = FaceExtractor(_two_people(), faces="all").extract(_frames(8))
    left, right = sorted(got.sequences, key=lambda q: _side(q.boxes[0]))
    assert {_side(b) for b in left.boxes} == {"left"} and 5 not in left.positions
    assert left.dropped == 1 and left.found == 7  # another person's whole frame is no evidence
    assert right.positions == list(range(8))


def test_no_face_rule_applies_when_nobody_is_found():
    empty = Scripted({})
    whole = FaceExtractor(empty).extract(_frames(3))
    (seq,) = whole.sequences
    assert seq.track is None and seq.boxes == [None] * 3 and seq.found == 0
    assert FaceExtractor(empty, FacePolicy(no_face="drop")).extract(_frames(3)).sequences == []
    held = FaceExtractor(Scripted({1: [Face(LEFT, 0.9)]}), FacePolicy(no_face="previous"))
    (seq,) = held.extract(_frames(3)).sequences
    assert seq.positions == [1, 2] and seq.reused == 1 and seq.dropped == 1


def test_the_steps_compose_as_extract_does():
    """What the runtime calls one by one (detection shared between videos) gives what
    ``extract`` gives for one video."""
    frames, indices = _frames(8), [10 + 3 * i for i in range(8)]
    whole = FaceExtractor(_two_people()).extract(frames, indices)
    steps = FaceExtractor(_two_people())
    picks = steps.detected_positions(len(frames))
    default = steps.detect_default([frames[p] for p in picks])
    faces, choice = steps.complete_detection(frames, indices, default, picks)
    shapes = [f.shape for f in frames]
    tracks, people = steps.track(indices, faces, shapes)
    seqs = steps.select(shapes, indices, faces, tracks)
    steps.crop(frames, seqs)
    assert (faces, choice, tracks, people) == (whole.faces, None, whole.tracks, whole.people)
    assert [q.frame_indices for q in seqs] == [q.frame_indices for q in whole.sequences]
    assert whole.sequences[0].frame_indices == indices
    for a, b in zip(seqs, whole.sequences):
        assert a.boxes == b.boxes and all(np.array_equal(x, y) for x, y in zip(a.crops, b.crops))


def test_fast_mode_detects_every_kth_frame_and_fills_between():
    det = Scripted({i: [Face((10.0 + 4 * i, 20.0, 50.0 + 4 * i, 70.0), 0.9)] for i in range(8)})
    got = FaceExtractor(det, detect_every=3).extract(_frames(8))
    assert det.seen == [0, 3, 6, 7]  # every 3rd frame and the last
    (seq,) = got.sequences
    assert seq.found == 8
    assert seq.boxes[1] == (14, 20, 54, 70)  # interpolated between frames 0 and 3
    assert FaceExtractor(det, detect_every=3).detected_positions(2) == [0, 1]


def test_input_choice_only_for_detectors_that_run_other_inputs():
    class Fixed(Scripted):
        fixed_input = True

        def detect_prepared(self, images, scales):  # pragma: no cover - never called
            raise AssertionError

    assert not chooses_input(Scripted({})) and not chooses_input(Fixed({}))
    got = FaceExtractor(Fixed({0: [Face(LEFT, 0.9)]})).extract(_frames(2))
    assert got.detector_input is None and got.sequences[0].found == 1


def test_a_lazy_detector_loads_on_first_use():
    calls = []

    def load():
        calls.append(1)
        return _two_people()

    extractor = FaceExtractor(load)
    assert calls == []
    extractor.extract(_frames(4))
    assert calls


def test_options_are_checked_and_taken_from_the_config():
    with pytest.raises(InvalidInputError, match="faces='everyone'"):
        FaceExtractor(Scripted({}), faces="everyone")
    with pytest.raises(InvalidInputError, match="detect_every"):
        FaceExtractor(Scripted({}), detect_every=0)
    with pytest.raises(InvalidInputError, match="no frames"):
        FaceExtractor(Scripted({})).extract([])
    config = EngineConfig(faces="all", size_probe=False, detect_every=2, colour="keep")
    pre = Preprocessor()
    e = FaceExtractor.from_config(Scripted({}), config, policy=FacePolicy(margin=0.1),
                                  preprocessor=pre)  # fmt: skip
    assert (e.faces, e.size_probe, e.detect_every, e.preprocessor) == ("all", False, 2, pre)
    assert e.decode == DecodeOptions(config.decode_backend, config.decode_threads, "keep", "auto")
    assert e.describe()["policy"]["margin"] == 0.1


def test_read_indices_decodes_the_wanted_frames_in_order(tmp_path):
    from tests.preprocess._synth import encode_video, read_index

    video = encode_video(tmp_path / "v.mp4", codec="h264", frames=40)
    extractor = FaceExtractor(Scripted({}))
    frames, indices = extractor.read_indices(video, [30, 5, 9])
    assert indices == [5, 9, 30] and [read_index(f) for f in frames] == indices
    frames, indices = extractor.read_indices(video, [38, 50])  # past the end: what there is
    assert indices == [38] and len(frames) == 1
    assert extractor.read_indices(video, []) == ([], [])
    clip = extractor.read(video, 4)
    assert clip.indices == [0, 1, 2, 3]


# --------------------------------------------------------------------------- streams


def test_a_stream_in_batches_gives_the_crops_and_people_of_one_pass():
    """:class:`FaceStream` (the timeline's and live streams' face chain): pushed in batches of
    any size, the same faces, boxes, crops and person ids; the ids are the tracks of the whole
    sequence, and each person's crops are those ``extract`` makes for them (``all``)."""
    frames, indices = _frames(8), [10 + 3 * i for i in range(8)]
    extractor = FaceExtractor(_two_people(), faces="all")
    whole = extractor.stream(track_history=64).push(frames, indices)
    stream = extractor.stream(track_history=64)
    parts = [*stream.push(frames[:3], indices[:3]), *stream.push(frames[3:], indices[3:])]
    assert stream.detector_input is None  # a detector without other inputs: no choice
    for a, b in zip(parts, whole, strict=True):
        assert (a.index, a.shape, a.faces) == (b.index, b.shape, b.faces)
        assert [(c.face, c.track, c.box) for c in a.crops] == [
            (c.face, c.track, c.box) for c in b.crops
        ]
        assert all(np.array_equal(x.crop, y.crop) for x, y in zip(a.crops, b.crops, strict=True))
    assert [got.index for got in parts] == indices and len(parts[5].crops) == 1
    ran = extractor.extract(frames, indices)
    assert [got.faces for got in parts] == ran.faces
    for q in ran.sequences:  # the runtime's crops of each person are the stream's
        by_index = {got.index: c for got in parts for c in got.crops if c.track == q.track}
        assert sorted(by_index) == q.frame_indices
        for idx, box, crop in zip(q.frame_indices, q.boxes, q.crops, strict=True):
            assert by_index[idx].box == box and np.array_equal(by_index[idx].crop, crop)
    assert extractor.scored_tracks(ran.tracks, 8) == ran.tracks
    assert FaceExtractor(_two_people()).scored_tracks(ran.tracks, 8) == [ran.tracks[1]]
    with pytest.raises(InvalidInputError, match="per-frame"):
        extractor.replace(faces="per-frame").scored_tracks(ran.tracks, 8)
    # without a track history: no ids (the timeline tracks the whole video at its end)
    untracked = extractor.stream().push(frames, indices)
    assert {c.track for got in untracked for c in got.crops} == {None}
    assert stream.push([], []) == []
    with pytest.raises(InvalidInputError, match="frame indices"):
        stream.push(frames[:2], [0])


def test_a_stream_chooses_the_detector_input_on_its_first_batch(monkeypatch):
    import preprocess.detector_input as di

    class Chooser(Scripted):
        def detect_prepared(self, images, scales):  # pragma: no cover - patched out
            raise AssertionError

    calls = []
    choice = type("Choice", (), {"default": False})()

    def choose(detector, frames, faces, *, frame_indices):
        calls.append(("choose", list(frame_indices)))
        return [[*f, Face(RIGHT, 0.5)] for f in faces], choice

    def again(detector, frames, chosen, *, default_faces):
        calls.append(("again", len(frames)))
        assert chosen is choice
        return [[*f, Face(RIGHT, 0.5)] for f in default_faces]

    monkeypatch.setattr(di, "detect_at_chosen_input", choose)
    monkeypatch.setattr(di, "detect_with_input", again)
    det = Chooser({i: [Face(LEFT, 0.9)] for i in range(6)})
    stream = FaceExtractor(det).stream(track_history=8)
    first = stream.push(_frames(6)[:2], [0, 1])
    later = stream.push(_frames(6)[2:], [2, 3, 4, 5])
    assert calls == [("choose", [0, 1]), ("again", 4)] and stream.detector_input is choice
    assert all(len(got.faces) == 2 for got in [*first, *later])
    assert {c.track for got in [*first, *later] for c in got.crops} == {0, 1}
    calls.clear()  # size_probe off: the default input only
    FaceExtractor(det, size_probe=False).stream().push(_frames(2), [0, 1])
    assert calls == []


def test_replace_keeps_the_detector_and_checks_the_settings():
    calls = []

    def load():
        calls.append(1)
        return _two_people()

    base = FaceExtractor(load, faces="main", size_probe=False)
    other = base.replace(faces="all", detect_every=2)
    assert (other.faces, other.size_probe, other.detect_every) == ("all", False, 2)
    assert other.policy is base.policy and other.preprocessor is base.preprocessor
    assert calls == []  # still lazy
    other.extract(_frames(2))
    assert calls
    with pytest.raises(InvalidInputError, match="no setting colour"):
        base.replace(colour="keep")
    with pytest.raises(InvalidInputError, match="faces="):
        base.replace(faces="everyone")
