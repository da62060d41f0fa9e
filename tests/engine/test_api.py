"""The embeddable API: inputs it accepts, thread safety, backends, and model catalogs (on the
tiny torch-free model; the full model's parity is tests/engine/test_predict_parity.py)."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from core.config import EngineConfig
from core.errors import ArtifactNotFoundError, BackendUnavailableError, InvalidInputError
from engine.api import Engine, Prediction
from preprocess.video import read_video


@pytest.fixture(scope="module")
def engine(tiny_engine):
    return tiny_engine


def test_engine_predict_path_frames_and_crops_agree(engine, video_paths):
    path = video_paths[-1]
    by_path = engine.predict(path, seq_len=10)
    assert isinstance(by_path, Prediction) and by_path.ok
    assert by_path.frames == 10 and by_path.faces == 10 and len(by_path.frame_p_fake) == 10
    assert set(by_path.timings) >= {"decode", "detect", "crop", "classify", "total"}
    assert (by_path.backend, by_path.precision) == ("ort", "fp32")
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


def test_predict_many_totals_are_each_videos_own_time(tiny_model, models_dir, video_paths):
    """``timings.total`` is this video's wall time from its first stage to its record, not the
    time since the job started. With one decoding thread the videos decode one after another,
    so a video's first stage starts after every earlier video's decoding: its total is at most
    the job's wall time less their decode times (a total counted from the start of the job, or
    from when the video was queued, breaks this by about their sum). Decoding is slowed so that
    the bound discriminates."""
    import time

    eng = Engine.load(
        tiny_model, models_dir=models_dir, download=False, decode_workers=1, max_in_flight=8
    )
    extractor = eng.pipeline_for(eng.spec_for(6)).extractor
    read = extractor.read

    def slow_read(*args, **kwargs):
        time.sleep(0.25)
        return read(*args, **kwargs)

    extractor.read = slow_read  # this engine only
    paths = [*video_paths, *video_paths][:8]
    t = time.perf_counter()
    preds = list(eng.predict_many(paths, seq_len=6))
    wall = time.perf_counter() - t
    assert [p.status for p in preds] == ["ok"] * len(paths)
    tol = 1e-3  # the rounding of the recorded seconds
    decoded_before = 0.0
    for p in preds:
        timings = p.timings
        stages = sum(v for k, v in timings.items() if k != "total")
        assert timings["decode"] >= 0.25
        assert stages - tol <= timings["total"] <= wall - decoded_before + tol, (p.video, timings)
        decoded_before += timings["decode"]
    totals = [p.timings["total"] for p in preds]
    assert totals[-1] < sum(totals) / 3  # not the running time of the job


def test_predict_many_decodes_as_many_videos_at_once_as_the_budget_says(
    tiny_model, models_dir, monkeypatch
):
    import engine.api as api
    from core.compute import DecodeShare, usable_cores

    seen: list[tuple[int, object]] = []

    def capture(jobs, stages, *, decode_workers, decode_gate, **kwargs):
        seen.append((decode_workers, decode_gate))
        return iter(())

    monkeypatch.setattr(api, "run_overlapped", capture)
    cores = usable_cores()
    # the default (0) on CPU: a thread per core behind a gate that follows decoding's share of
    # the CPU, starting at one decoder per two cores for the first N frames, one per core for
    # uniform sampling (core.compute.default_decode_workers)
    auto = Engine.load(tiny_model, models_dir=models_dir, download=False)
    for sampling, start in (("first", max(1, cores // 2)), ("uniform", cores)):
        list(auto.predict_many([], sampling=sampling))
        threads, gate = seen[-1]
        assert threads == cores
        assert isinstance(gate, DecodeShare) and gate.limit == start
    told = Engine.load(tiny_model, models_dir=models_dir, download=False, decode_workers=3)
    list(told.predict_many([], sampling="uniform"))
    assert seen[-1] == (3, None) and told.threads.to_record("uniform")["decode_workers"] == 3


def test_engine_bad_inputs_raise_clear_errors(engine):
    with pytest.raises(InvalidInputError, match="HxWx3"):
        engine.predict([np.zeros((4, 4), np.uint8)])
    with pytest.raises(InvalidInputError, match="sampling"):
        engine.predict("x.mp4", sampling="random")
    with pytest.raises(InvalidInputError, match="empty"):
        engine.predict([])


def test_engine_unavailable_backend_raises_never_falls_back(tiny_model):
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        Engine.load(tiny_model, backend="ort-cuda")
    with pytest.raises(InvalidInputError, match="supported values"):
        Engine.load(tiny_model, backend="magic")


def test_engine_precision_is_what_was_asked_or_an_error(tiny_model):
    # fp16/bf16 on a CPU backend: an error naming the backends that run it, never fp32 instead
    with pytest.raises(InvalidInputError, match=r"does not run precision fp16.*ort-tensorrt"):
        Engine.load(tiny_model, backend="ort", precision="fp16")
    with pytest.raises(InvalidInputError, match="does not run precision bf16"):
        Engine.load(tiny_model, backend="ort", precision="bf16")
    with pytest.raises(ArtifactNotFoundError, match="dfe build"):  # no INT8 graph built yet
        Engine.load(tiny_model, backend="ort", precision="int8")


def test_engine_load_takes_a_config_object(tiny_model, models_dir):
    config = EngineConfig(backend="ort", models_dir=models_dir, batch_size=3, download=False)
    eng = Engine.load(tiny_model, config=config)
    assert eng.config is config and eng.pipeline_for(eng.spec_for(None)).classifier.batch_size == 3
    changed = Engine.load(tiny_model, config=config, batch_size=5)
    assert changed.config.batch_size == 5 and changed.config.models_dir == models_dir


def test_engine_torch_backend_matches_ort(exported_model, shared_dir, video_paths):
    models = str(shared_dir / "models")
    ort = Engine.load(exported_model, backend="ort", models_dir=models)
    ref = Engine.load(exported_model, backend="torch", models_dir=models)
    a = ort.predict(video_paths[0], seq_len=5)
    b = ref.predict(video_paths[0], seq_len=5)
    assert (b.backend, b.precision) == ("torch", "fp32")
    assert b.p_fake == pytest.approx(a.p_fake, abs=1e-4)


def test_engine_model_catalog_picks_model_trained_for_n(tiny_model, tmp_path, shared_dir):
    for n in (20, 60):
        d = tmp_path / f"n{n}"
        d.mkdir()
        for f in tiny_model.iterdir():
            (d / f.name).symlink_to(f) if f.suffix == ".onnx" else shutil.copy(f, d / f.name)
        sc = json.loads((d / "classifier.json").read_text())
        sc["checkpoint"]["seq_len"] = n
        (d / "classifier.json").write_text(json.dumps(sc))
    eng = Engine.load(tmp_path, backend="ort", models_dir=str(shared_dir / "models"))
    assert eng.catalog.seq_lens() == [20, 60]
    assert eng.spec_for(60).directory == tmp_path / "n60"
    with pytest.raises(InvalidInputError, match=r"available sequence lengths: \[20, 60\]"):
        eng.spec_for(40)


@pytest.fixture(scope="module")
def dlib_model(tmp_path_factory):
    """A tiny model whose sidecar names the dlib crop style (as a published checkpoint's)."""
    from tests.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_dlib") / "m", crop_style="dlib")


def test_engine_uses_sidecar_crop_style_unless_given(dlib_model, models_dir, shared_dir):
    video = shared_dir / "videos" / "pair480p_real.mp4"
    by_default = Engine.load(dlib_model, backend="ort", models_dir=models_dir)
    pinned = Engine.load(dlib_model, backend="ort", models_dir=models_dir, crop_style="scrfd")
    d = by_default.predict(video, seq_len=4)
    s = pinned.predict(video, seq_len=4)
    assert (d.crop_style, s.crop_style) == ("dlib", "scrfd")
    assert d.to_record()["crop_style"] == "dlib"
    assert d.faces == s.faces == 4
    for bd, bs in zip(d.boxes, s.boxes):
        assert abs((bd[2] - bd[0]) - (bd[3] - bd[1])) <= 1  # square, up to rounding
        assert (bs[3] - bs[1]) > (bs[2] - bs[0])  # SCRFD's boxes are taller than wide
    assert d.p_fake != s.p_fake
    frames = read_video(video, 4).frames
    crops = [f[y1:y2, x1:x2] for f, (x1, y1, x2, y2) in zip(frames, d.boxes)]
    mine = by_default.predict(crops, crops=True)
    assert mine.crop_style is None and mine.p_fake == pytest.approx(d.p_fake, abs=1e-6)


def test_engine_face_rule_margin_and_no_face_reach_the_crops(tiny_model, models_dir, shared_dir):
    video = shared_dir / "videos" / "pair480p_real.mp4"
    plain = Engine.load(tiny_model, backend="ort", models_dir=models_dir).predict(video, seq_len=3)
    wide = Engine.load(tiny_model, backend="ort", models_dir=models_dir, margin=0.2).predict(
        video, seq_len=3
    )
    for (x1, y1, x2, y2), (a1, b1, a2, b2) in zip(plain.boxes, wide.boxes):
        assert a1 < x1 and b1 < y1 and a2 > x2 and b2 > y2
    assert wide.p_fake != plain.p_fake
    faceless = [np.full((120, 160, 3), 90, np.uint8)] * 3
    dropping = Engine.load(tiny_model, backend="ort", models_dir=models_dir, no_face="drop")
    with pytest.raises(InvalidInputError, match="no face in any of the 3 frames"):
        dropping.predict(faceless)
    whole = Engine.load(tiny_model, backend="ort", models_dir=models_dir).predict(faceless)
    assert whole.ok and whole.faces == 0 and whole.boxes == [None] * 3


def test_engine_sidecar_input_spec_drives_preprocessing(tmp_path, models_dir, shared_dir):
    """The sidecar's channel order and mean/std are what the runtime feeds the graph."""
    import json

    from tests.tiny_model import make_tiny_model

    video = shared_dir / "videos" / "pair480p_real.mp4"
    base = make_tiny_model(tmp_path / "bgr")
    rgb = make_tiny_model(tmp_path / "rgb")
    sidecar = json.loads((rgb / "classifier.json").read_text())
    sidecar["input"]["channel_order"] = "RGB"
    (rgb / "classifier.json").write_text(json.dumps(sidecar))
    a = Engine.load(base, backend="ort", models_dir=models_dir).predict(video, seq_len=3)
    b = Engine.load(rgb, backend="ort", models_dir=models_dir).predict(video, seq_len=3)
    assert a.boxes == b.boxes and a.p_fake != b.p_fake
    frames = read_video(video, 3).frames
    swapped = [f[y1:y2, x1:x2, ::-1].copy() for f, (x1, y1, x2, y2) in zip(frames, a.boxes)]
    by_hand = Engine.load(base, backend="ort", models_dir=models_dir).predict(swapped, crops=True)
    assert by_hand.p_fake == pytest.approx(b.p_fake, abs=1e-6)


def test_demo_model_records_say_it_is_untrained(tiny_model, models_dir, shared_dir, tmp_path):

    from core.sidecar import SIDECAR_NAME, load_sidecar, write_sidecar

    demo = tmp_path / "demo"
    shutil.copytree(tiny_model, demo)
    assert not load_sidecar(demo).demo
    write_sidecar(
        demo / SIDECAR_NAME, {**json.loads((demo / SIDECAR_NAME).read_text()), "demo": True}
    )
    assert load_sidecar(demo).demo
    video = shared_dir / "videos" / "pair480p_real.mp4"
    common = {"backend": "ort", "models_dir": models_dir, "download": False}
    got = Engine.load(demo, **common).predict(video, seq_len=2)
    assert any(w.startswith("untrained demo model") for w in got.warnings), got.warnings
    plain = Engine.load(tiny_model, **common).predict(video, seq_len=2)
    assert not any("demo" in w for w in plain.warnings)
