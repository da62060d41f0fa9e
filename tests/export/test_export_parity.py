"""Done-when of the foundation issue: an independently made checkpoint in the original layout
exports, and ONNX Runtime's probabilities match the separate PyTorch implementation within 1e-4
for N in {1, 20, 60, 100}, frames of all videos sharing one batch, with mean and last."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="export needs torch (the `export` extra)")

from export.onnx_export import export_checkpoint
from tests.reference.original_model import video_probs
from tests.reference.sessions import plain_session

TOL = 1e-4


def _session(path):
    return plain_session(path)


def _onnx_video_probs(outdir, videos, reduce):
    """Independent of engine/: run the graph(s), reduce per video, softmax."""
    cls = _session(outdir / "classifier.onnx")
    frames = np.concatenate([v.numpy() for v in videos])
    lengths = [len(v) for v in videos]
    bounds = np.cumsum([0, *lengths])
    head_path = outdir / "head.onnx"
    if head_path.exists():
        (feats,) = cls.run(["features"], {"frames": frames})
        padded = np.zeros((len(videos), max(lengths), 2048), np.float32)
        for i, n in enumerate(lengths):
            padded[i, :n] = feats[bounds[i] : bounds[i + 1]]
        (steps,) = _session(head_path).run(["logits"], {"features": padded})
        per_video = [steps[i, :n] for i, n in enumerate(lengths)]
    else:
        (logits,) = cls.run(["logits"], {"frames": frames})
        per_video = [logits[bounds[i] : bounds[i + 1]] for i in range(len(videos))]
    out = []
    for z in per_video:
        v = z.astype(np.float64).mean(0) if reduce == "mean" else z[-1].astype(np.float64)
        e = np.exp(v - v.max())
        out.append(e / e.sum())
    return np.stack(out)


def _check(model, outdir, videos, reduce):
    ref = np.stack([video_probs(model, v, reduce) for v in videos])
    got = _onnx_video_probs(outdir, videos, reduce)
    # the outputs must be spread out, or the comparison is blind
    assert ref[:, 0].max() - ref[:, 0].min() > 0.05, ref[:, 0]
    assert np.all((ref > 1e-3) & (ref < 1 - 1e-3)), ref
    np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))
    assert np.max(np.abs(got - ref)) <= TOL
    return float(np.max(np.abs(got - ref)))


@pytest.fixture(scope="module")
def exported_mean(exported_model):
    """(model dir, parity figures recorded by the export itself)."""
    return exported_model, json.loads((exported_model / "classifier.json").read_text())["parity"]


def test_export_original_mean_matches_reference(original_ckpt, real_crops, exported_mean):
    _, model = original_ckpt
    outdir, parity = exported_mean
    assert [len(v) for v in real_crops.videos] == [1, 20, 60, 100]
    _check(model, outdir, real_crops.videos, "mean")
    assert parity["passed"] and parity["max_abs_prob_diff"] <= TOL
    assert parity["seq_lens"] == [1, 20, 60, 100]
    assert not parity["saturated"]


def test_export_original_last_matches_reference(original_ckpt, real_crops, exported_mean):
    """The graph is the same for both reductions (the runtime reduces per video): the last
    frame's probabilities match the reference too, and the export recorded both."""
    _, model = original_ckpt
    outdir, parity = exported_mean
    _check(model, outdir, real_crops.videos, "last")
    assert parity["modes"]["last"]["max_abs_prob_diff"] <= TOL
    print(
        f"export parity: max |delta p| mean {parity['max_abs_prob_diff']:.1e}, "
        f"last {parity['modes']['last']['max_abs_prob_diff']:.1e} (N={parity['seq_lens']})"
    )


def test_export_cli_maps_its_flags(monkeypatch, tmp_path, capsys):
    """`dfe export` passes its flags to export_checkpoint and prints the parity verdict (the
    export itself is the fixture's; this checks the command line alone, in-process)."""
    from types import SimpleNamespace

    import export.onnx_export
    from engine.cli import main

    seen = {}

    def fake(checkpoint, out, **kwargs):
        seen.update(checkpoint=checkpoint, out=out, **kwargs)
        mode = {"max_abs_prob_diff": 1e-6, "labels_equal": True}
        parity = {"seq_lens": [1], "modes": {"mean": mode, "last": mode}, "tolerance_prob": 1e-4,
                  "passed": True}  # fmt: skip
        return SimpleNamespace(directory=out, classifier=out / "classifier.onnx", head=None,
                               sidecar=out / "classifier.json", parity=parity)  # fmt: skip

    monkeypatch.setattr(export.onnx_export, "export_checkpoint", fake)
    ckpt = tmp_path / "model_90_acc_40_frames_x.pt"
    code = main(["export", str(ckpt), "-o", str(tmp_path / "m"), "--reduce", "last",
                 "--seq-len", "40", "--crop-style", "scrfd"])  # fmt: skip
    assert code == 0 and "PASSED" in capsys.readouterr().out
    assert seen == {"checkpoint": ckpt, "out": tmp_path / "m", "reduce": "last", "variant": None,
                    "seq_len": 40, "crop_style": "scrfd"}  # fmt: skip


def test_export_records_crop_style_in_sidecar(exported_model):
    from core.sidecar import load_sidecar

    # the test checkpoint is named like a published one: model_87_acc_20_frames_final_data.pt
    spec = load_sidecar(exported_model)
    assert spec.crop_style == "dlib"
    assert spec.preprocessing.crop_style_source == "from the checkpoint"


def test_exported_sidecar_round_trips_through_the_typed_sections(exported_model):
    """Every section of what ``dfe export`` writes is read into the typed sidecar and written
    back by its ``to_json`` unchanged: the same keys, order and values."""
    from core.sidecar import SIDECAR_NAME, load_sidecar

    text = (exported_model / SIDECAR_NAME).read_text()
    data = {k: v for k, v in json.loads(text).items() if k not in ("schema", "schema_version")}
    spec = load_sidecar(exported_model)
    assert json.dumps(spec.sidecar.to_json()) == json.dumps(data)
    assert spec.sidecar.extra == {} and spec.checkpoint.sha256 and spec.sidecar.parity["passed"]
    assert spec.graphs.classifier.explain.weights_sha256


def test_classifier_fmap_output_pools_to_features(exported_model):
    sess = _session(exported_model / "classifier.onnx")
    x = np.random.default_rng(1).normal(size=(3, 3, 112, 112)).astype(np.float32)
    feats, fmap = sess.run(["features", "fmap"], {"frames": x})
    assert fmap.shape == (3, 2048, 4, 4)
    np.testing.assert_allclose(fmap.mean(axis=(2, 3)), feats, rtol=1e-4, atol=1e-5)
    sidecar = json.loads((exported_model / "classifier.json").read_text())
    info = sidecar["graphs"]["classifier"]
    assert info["outputs"]["fmap"] == ["frames", 2048, 4, 4]
    assert np.load(exported_model / info["explain"]["weights"]).shape == (2, 2048)


def test_export_sidecar_records_model_and_preprocessing(original_ckpt, exported_mean):
    path, _ = original_ckpt
    outdir, _ = exported_mean
    sc = json.loads((outdir / "classifier.json").read_text())
    assert sc["model"]["variant"] == "original" and sc["model"]["lstm_bias"] is False
    assert sc["model"]["variant_source"] == "keys"
    assert sc["reduce"] == "mean"
    assert sc["input"]["size"] == 112 and sc["input"]["channel_order"] == "BGR"
    assert sc["input"]["mean"] == [0.485, 0.456, 0.406]
    assert sc["input"]["std"] == [0.229, 0.224, 0.225]
    assert sc["labels"] == {"0": "FAKE", "1": "REAL"}
    assert sc["opset"] == 17
    import hashlib

    assert sc["checkpoint"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # parsed from model_87_acc_20_frames_final_data.pt
    assert sc["checkpoint"]["seq_len"] == 20 and sc["checkpoint"]["accuracy"] == 87
    assert sc["checkpoint"]["data"] == "final_data"
    for lib in ("torch", "torchvision", "onnx", "onnxruntime"):
        assert lib in sc["versions"]
    for mode in ("mean", "last"):
        assert sc["parity"]["modes"][mode]["max_abs_prob_diff"] <= TOL
    assert (
        sc["graphs"]["classifier"]["sha256"]
        == hashlib.sha256((outdir / "classifier.onnx").read_bytes()).hexdigest()
    )


def test_export_graph_has_no_fixed_batch(exported_mean, real_crops):
    """Neither the number of frames nor of videos is baked in: other batch sizes run and agree
    frame by frame with the big batch."""
    outdir, _ = exported_mean
    sess = _session(outdir / "classifier.onnx")
    frames = real_crops.videos[2].numpy()
    (big,) = sess.run(["logits"], {"frames": frames})
    for n in (1, 7, 33):
        (small,) = sess.run(["logits"], {"frames": frames[:n]})
        np.testing.assert_allclose(small, big[:n], atol=2e-4)


def test_export_sequence_variant_matches_reference(sequence_ckpt, real_crops, tmp_path):
    path, model = sequence_ckpt
    # the export's own parity check on the two short videos (its code is checked in full by
    # the original's export above); every video is checked against the reference below
    videos = [v.numpy() for v in real_crops.videos[:2]]
    result = export_checkpoint(path, tmp_path, parity_videos=videos)
    assert result.head is not None
    sc = json.loads(result.sidecar.read_text())
    assert sc["model"]["variant"] == "sequence" and sc["model"]["lstm_bias"] is True
    assert sc["model"]["lstm_batch_first"] is True
    for reduce in ("mean", "last"):
        _check(model, tmp_path, real_crops.videos, reduce)
