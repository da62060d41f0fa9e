"""The embeddable API: inputs it accepts, thread safety, backends, and model catalogs."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from engine.api import Engine, Prediction
from engine.errors import BackendUnavailableError, InvalidInputError
from preprocess.video import read_video


@pytest.fixture(scope="module")
def engine(exported_model, shared_dir):
    return Engine.load(exported_model, backend="ort", models_dir=str(shared_dir / "models"))


def test_engine_predict_path_frames_and_crops_agree(engine, video_paths):
    path = video_paths[-1]
    by_path = engine.predict(path, seq_len=10)
    assert isinstance(by_path, Prediction) and by_path.ok
    assert by_path.frames == 10 and by_path.faces == 10 and len(by_path.frame_p_fake) == 10
    assert set(by_path.timings) >= {"decode", "detect", "crop", "classify", "total"}
    frames = read_video(path, 10).frames
    by_frames = engine.predict(frames)
    assert by_frames.p_fake == pytest.approx(by_path.p_fake, abs=1e-6)
    # a product that tracks faces itself passes its own crops, skipping our detector
    crops = [f[y1:y2, x1:x2] for f, (x1, y1, x2, y2) in zip(frames, by_path.boxes)]
    by_crops = engine.predict(crops, crops=True)
    assert by_crops.p_fake == pytest.approx(by_path.p_fake, abs=1e-6)
    # mean reduction: the video's p_fake is the softmax of the mean frame logits, which lies
    # within the range of the per-frame p_fake
    assert min(by_path.frame_p_fake) - 1e-9 <= by_path.p_fake <= max(by_path.frame_p_fake) + 1e-9


def test_engine_concurrent_calls_match_sequential(engine, video_paths):
    paths = video_paths[:4]
    sequential = [engine.predict(p, seq_len=8).p_fake for p in paths]
    results: dict[int, float] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(2):
                results[i] = engine.predict(paths[i], seq_len=8).p_fake
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    np.testing.assert_allclose([results[i] for i in range(len(paths))], sequential, atol=1e-6)


def test_engine_predict_many_ordered_and_streamed(engine, video_paths, tmp_path):
    bad = tmp_path / "empty.mp4"
    bad.write_bytes(b"")
    inputs = [*video_paths[:3], bad, video_paths[3]]
    ordered = list(engine.predict_many(inputs, seq_len=6))
    assert [r.video for r in ordered] == [str(p) for p in inputs]
    assert [r.status for r in ordered] == ["ok", "ok", "ok", "error", "ok"]
    assert "empty" in ordered[3].error or "0 bytes" in ordered[3].error
    single = engine.predict(video_paths[1], seq_len=6)
    assert ordered[1].p_fake == pytest.approx(single.p_fake, abs=1e-6)
    streamed = list(engine.predict_many(inputs, seq_len=6, ordered=False))
    assert sorted(r.video for r in streamed) == sorted(str(p) for p in inputs)
    by_video = {r.video: r.p_fake for r in streamed}
    for r in ordered:
        assert by_video[r.video] == r.p_fake or (r.p_fake is None and by_video[r.video] is None)


def test_engine_bad_inputs_raise_clear_errors(engine):
    with pytest.raises(InvalidInputError, match="HxWx3"):
        engine.predict([np.zeros((4, 4), np.uint8)])
    with pytest.raises(InvalidInputError, match="sampling"):
        engine.predict("x.mp4", sampling="random")
    with pytest.raises(InvalidInputError, match="empty"):
        engine.predict([])


def test_engine_unavailable_backend_raises_never_falls_back(exported_model):
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        Engine.load(exported_model, backend="ort-cuda")
    with pytest.raises(InvalidInputError, match="supported values"):
        Engine.load(exported_model, backend="magic")


def test_engine_torch_backend_matches_ort(engine, exported_model, shared_dir, video_paths):
    ref = Engine.load(exported_model, backend="torch", models_dir=str(shared_dir / "models"))
    a = engine.predict(video_paths[0], seq_len=5)
    b = ref.predict(video_paths[0], seq_len=5)
    assert b.backend == "torch"
    assert b.p_fake == pytest.approx(a.p_fake, abs=1e-4)


def test_engine_model_catalog_picks_model_trained_for_n(exported_model, tmp_path, shared_dir):
    for n in (20, 60):
        d = tmp_path / f"n{n}"
        d.mkdir()
        for f in exported_model.iterdir():
            (d / f.name).symlink_to(f) if f.suffix == ".onnx" else shutil.copy(f, d / f.name)
        sc = json.loads((d / "classifier.json").read_text())
        sc["checkpoint"]["seq_len"] = n
        (d / "classifier.json").write_text(json.dumps(sc))
    eng = Engine.load(tmp_path, backend="ort", models_dir=str(shared_dir / "models"))
    assert eng.catalog.seq_lens() == [20, 60]
    assert eng.spec_for(60).directory == tmp_path / "n60"
    with pytest.raises(InvalidInputError, match=r"available sequence lengths: \[20, 60\]"):
        eng.spec_for(40)
