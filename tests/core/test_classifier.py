"""The classifier contract (ClassifierRunner): batching across videos, cutting back per video,
the sequence head, extra outputs; checked against direct ONNX Runtime runs."""

from __future__ import annotations

import numpy as np
import pytest

from core.classifier import ClassifierRunner
from core.errors import InvalidInputError
from core.onnx_session import create_session
from core.reduce import score_video


@pytest.fixture(scope="module")
def sequence_model(tmp_path_factory):
    from tests.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("seq") / "m", variant="sequence")


def _videos(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, (n, 3, 112, 112)).astype(np.float32) for n in lengths]


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_runner_cuts_batches_back_per_video(tiny_model, batch):
    sess = create_session(tiny_model / "classifier.onnx")
    videos = _videos([1, 5, 2])
    out = ClassifierRunner(sess, batch_size=batch).run(videos, ["fmap"])
    for v, logits, fmap in zip(videos, out.logits, out.extra["fmap"]):
        direct_logits, direct_fmap = sess.run(["logits", "fmap"], {"frames": v})
        np.testing.assert_allclose(logits, direct_logits, atol=1e-5)
        np.testing.assert_allclose(fmap, direct_fmap, atol=1e-5)


def test_runner_sequence_head_is_causal_and_per_video(sequence_model):
    cls = create_session(sequence_model / "classifier.onnx")
    head = create_session(sequence_model / "head.onnx")
    videos = _videos([4, 2], seed=1)
    out = ClassifierRunner(cls, head, batch_size=3).run(videos)
    for v, steps in zip(videos, out.logits):
        (feats,) = cls.run(["features"], {"frames": v})
        (alone,) = head.run(["logits"], {"features": feats[None]})
        np.testing.assert_allclose(steps, alone[0], atol=1e-5)  # padding changes nothing
    assert [len(z) for z in out.logits] == [4, 2]


def test_runner_rejects_empty_videos_and_bad_batch(tiny_model):
    sess = create_session(tiny_model / "classifier.onnx")
    with pytest.raises(InvalidInputError, match="batch_size"):
        ClassifierRunner(sess, batch_size=0)
    with pytest.raises(InvalidInputError, match="at least one frame"):
        ClassifierRunner(sess).run([np.zeros((0, 3, 112, 112), np.float32)])
    assert ClassifierRunner(sess).run([]).logits == []


def test_score_video_reduces_and_labels_like_the_original():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    mean = score_video(logits, "mean")
    z = logits.mean(0)
    assert mean.p_fake == pytest.approx(np.exp(z[0]) / np.exp(z).sum())
    assert mean.label == "FAKE" and mean.confidence == pytest.approx(mean.p_fake * 100)
    last = score_video(logits, "last")
    assert last.p_fake == 0.5 and last.label == "FAKE"  # a tie goes to FAKE, like torch.max
    assert len(mean.frame_p_fake) == 3
    swapped = score_video(logits, "mean", {0: "REAL", 1: "FAKE"})  # the sidecar's label map
    assert swapped.p_fake == pytest.approx(1 - mean.p_fake)


def test_runner_spreads_chunks_over_the_pool_with_the_same_outputs(tiny_model):
    from core.compute import ComputePool

    sess = create_session(tiny_model / "classifier.onnx", intra_op_threads=1)
    calls = []

    class Counting:
        def run(self, names, feed):
            calls.append(len(feed["frames"]))
            return sess.run(names, feed)

    videos = _videos([20, 3])
    inline = ClassifierRunner(sess, batch_size=64).run(videos, ["fmap"])
    pool = ComputePool(2)
    spread = ClassifierRunner(Counting(), batch_size=64, pool=pool).run(videos, ["fmap"])
    pool.close()
    assert sorted(calls) == [11, 12]  # 23 frames, one chunk per worker
    for a, b in zip(inline.logits + inline.extra["fmap"], spread.logits + spread.extra["fmap"]):
        np.testing.assert_allclose(a, b, atol=1e-5)
