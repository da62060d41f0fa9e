"""INT8 Q/DQ on CPU: the graph, its sidecar record, precision selection, the agreement bound
of issue 5 on the shared videos, and the search of issue 16 on checkpoints made hard on purpose.

The test checkpoint is the session's independent reference model (``exported_model``). Its INT8
graph is calibrated with the documented default: frames 100, 104, ..., 224 (32 per clip) of the
shared clips; every check below uses frames 0-59 (what ``dfe predict`` reads for N = 20 and 60),
which calibration never saw. The hard checkpoint (``hard_models``: linear1 in a random
direction) is built with a smaller calibration set (8 crops per clip), held-out frames of three
clips and a shorter search, to keep the suite's time: what is tested there is that the search
goes from the failing whole-graph configurations to nodes kept in fp32 and either writes a
graph within the bound or refuses with the table, not the best configuration (docs/int8-tensorrt.md
table gives the full search on it, the demo checkpoint and a std-4 variant).
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from core.config import EngineConfig
from core.errors import (
    ArtifactNotFoundError,
    BackendUnavailableError,
    InvalidInputError,
    MissingDependencyError,
)
from core.sidecar import INT8_GRAPH, load_sidecar
from engine.api import Engine
from engine.optimize.calibration import (
    CALIB_FRAMES_PER_VIDEO,
    CALIB_START,
    CALIB_STEP,
    FrameSelection,
)
from engine.optimize.int8_search import Int8SearchError, QuantConfig
from engine.optimize.quantize import (
    DECISIVE_MARGIN,
    INT8_FILE,
    MAX_DELTA_P_FAKE,
    REPORT_STEM,
    build_int8,
    qdq_summary,
    tensorrt_qdq,
)


@pytest.fixture(scope="module")
def int8_model(exported_model, shared_dir, tmp_path_factory):
    """A copy of the exported test model (fp32 graph linked, sidecar copied) with its INT8
    graph built by the library call behind ``dfe build --precision int8``."""
    d = tmp_path_factory.mktemp("model_int8")
    (d / "classifier.onnx").symlink_to(exported_model / "classifier.onnx")
    shutil.copy(exported_model / "classifier.json", d / "classifier.json")
    # The default search (the first configuration meets the bound here), 3 speed rounds, not 7,
    # and the speed gate off: on two loaded cores (the other xdist worker running) the measured
    # speed-up sat either side of MIN_SPEEDUP (1.17 in one clean-clone run, where the search then
    # tried five more ranges: 148 s), so the gate made this fixture depend on the load. The gate
    # is tested with fixed bounds in test_int8_search.py; the speed-up is measured by
    # benchmarks/int8_cpu.py (a speed target is a benchmark's, never a unit test's).
    build_int8(
        d, config=EngineConfig(models_dir=str(shared_dir / "models"), download=False),
        speed_rounds=3, min_speedup=0.0,
    )  # fmt: skip
    return d


@pytest.fixture(scope="module")
def engines(int8_model, shared_dir):
    common = {"backend": "ort", "models_dir": str(shared_dir / "models"), "download": False}
    return (
        Engine.load(int8_model, precision="fp32", **common),
        Engine.load(int8_model, precision="int8", **common),
    )


def test_int8_graph_has_uint8_activations_and_per_channel_int8_weights(int8_model):
    model = onnx.load(str(int8_model / INT8_FILE))
    inits = {i.name: i for i in model.graph.initializer}
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 100
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":  # every activation: uint8
            assert inits[n.input[2]].data_type == TensorProto.UINT8
    producer = {o: n for n in model.graph.node for o in n.output}
    weights = 0
    for n in model.graph.node:
        if n.op_type in ("Conv", "MatMul", "Gemm"):
            w = n.input[1]
            dq = producer[w]
            assert dq.op_type == "DequantizeLinear", n.name
            if dq.input[0] in inits:  # a constant weight: int8, one scale per output channel
                assert inits[dq.input[0]].data_type == TensorProto.INT8
                scale = numpy_helper.to_array(inits[dq.input[1]])
                assert scale.size > 1
                weights += 1
    assert weights == 55  # 53 Conv + the LSTM-step MatMul + linear1 (Gemm)
    s = qdq_summary(model)
    assert s["activation_types"] == ["uint8"] and s["weight_types"] == ["int8"]
    assert s["per_channel_weights"] == 55 and s["per_tensor_weights"] == 0


def test_int8_sidecar_records_calibration_set_and_cost(int8_model, video_paths):
    spec = load_sidecar(int8_model)
    assert spec.precisions == ("fp32", "int8")
    assert spec.classifier_for("int8") == int8_model / INT8_FILE
    rec = spec.graphs.get(INT8_GRAPH)
    from core.hashing import sha256_file
    from core.sidecar import FrameRange

    assert rec.sha256 == sha256_file(int8_model / INT8_FILE)
    assert rec.source.sha256 == spec.graphs.classifier.sha256
    cal = rec.calibration
    assert cal.videos == tuple(p.name for p in video_paths)
    assert cal.frames == FrameRange(
        start=CALIB_START, step=CALIB_STEP, count=CALIB_FRAMES_PER_VIDEO
    )
    per_video = CALIB_FRAMES_PER_VIDEO
    assert cal.crops == sum(cal.frames_per_video.values()) == per_video * len(video_paths)
    assert cal.method == cal.first_method == "percentile"
    assert cal.crop_style == spec.crop_style
    # the runtime's face chain: its default face rule (the main person) and detector input
    assert (cal.faces, cal.size_probe, cal.detect_every) == ("main", True, 1)
    acc = rec.accuracy
    assert acc.held_out.frames == FrameRange(start=0, step=1, count=60)
    assert acc.held_out_note == "frames disjoint from the calibration frames"
    assert acc.seq_lens == (20, 60) and len(acc.videos) == 2 * len(video_paths)
    assert 0 < acc.max_abs_delta_p_fake <= MAX_DELTA_P_FAKE and acc.within_bound
    assert acc.label_agreement_decisive == 1.0
    q = rec.quantization
    assert q["activations"].startswith("uint8") and q["weights"].startswith("int8, per channel")


def test_int8_search_record_on_the_test_checkpoint(int8_model):
    """The whole graph in INT8 meets the bound at the first try: chosen, nothing in fp32, and
    the speed-up measured against fp32 during the build recorded with what was tried (its
    value is the benchmark's to judge: see the fixture)."""
    search = load_sidecar(int8_model).graphs.classifier_int8.search
    assert search.fp32_nodes == () and search.chosen["method"] == "percentile"
    assert len(search.trials) == 1 and search.trials[0]["within_bound"]
    assert search.min_speedup == 0.0  # the bound the build ran with is on record
    speed = search.speed
    assert speed["speedup"] == search.trials[0]["speedup"] > 0
    assert speed["int8_frames_per_s"] > 0 and speed["fp32_frames_per_s"] > 0
    assert search.stopped == "the first configuration met the bound"


@pytest.mark.parametrize("n", [20, 60])
def test_int8_agrees_with_fp32_on_shared_videos(engines, video_paths, n):
    """Issue 5's bound, through the Engine (decode, SCRFD, crop, classify) on every clip."""
    fp32, int8 = engines
    ref = list(fp32.predict_many(video_paths, seq_len=n))
    got = list(int8.predict_many(video_paths, seq_len=n))
    for r, g in zip(ref, got):
        assert r.ok and g.ok and r.frames == g.frames == n
        assert r.boxes == g.boxes  # same crops: only the classifier differs
        assert abs(g.p_fake - r.p_fake) <= MAX_DELTA_P_FAKE, (r.video, r.p_fake, g.p_fake)
        if abs(r.p_fake - 0.5) > DECISIVE_MARGIN:
            assert g.label == r.label, (r.video, r.p_fake, g.p_fake)
    worst = max(abs(g.p_fake - r.p_fake) for r, g in zip(ref, got))
    print(f"INT8 agreement N={n}: max |delta p_fake| {worst:.4f} over {len(ref)} videos")


def test_predict_cli_precision_int8_runs_the_qdq_graph(int8_model, engines, shared_dir, capsys):
    from engine.cli import main

    video = shared_dir / "videos" / "pair480p_real.mp4"
    capsys.readouterr()
    code = main(
        ["predict", str(video), "--model", str(int8_model), "--backend", "ort", "--precision",
         "int8", "--seq-len", "20", "--models", str(shared_dir / "models"), "--no-download",
         "--no-progress"]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    (rec,) = [json.loads(line) for line in out.out.splitlines()]
    assert rec["precision"] == "int8"
    fp32, int8 = engines
    assert rec["p_fake"] == pytest.approx(int8.predict(video, seq_len=20).p_fake, abs=1e-6)
    assert rec["p_fake"] != pytest.approx(fp32.predict(video, seq_len=20).p_fake, abs=1e-6)


def test_precision_int8_without_built_graph_names_dfe_build(tiny_model, models_dir, capsys):
    from engine.cli import main

    with pytest.raises(ArtifactNotFoundError, match=r"dfe build .* --precision int8"):
        Engine.load(tiny_model, backend="ort", precision="int8", models_dir=models_dir)
    code = main(["predict", "x.mp4", "--model", str(tiny_model), "--precision", "int8",
                 "--no-progress"])  # fmt: skip
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())  # the CLI wraps long messages
    assert f"dfe build {tiny_model} --precision int8" in err


def test_precision_fp16_without_tensorrt_names_the_gpu_extra(tiny_model, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT
    # auto: no backend for fp16 runs here, and it says so (not only "install tensorrt")
    with pytest.raises(BackendUnavailableError, match=r"fp16: it needs an NVIDIA GPU.*\[gpu\]"):
        Engine.load(tiny_model, precision="fp16")
    with pytest.raises(MissingDependencyError, match=r"deepfake-engine\[gpu\]"):
        Engine.load(tiny_model, backend="tensorrt", precision="fp16")
    with pytest.raises(InvalidInputError, match="tensorrt"):
        Engine.load(tiny_model, backend="ort", precision="fp16")
    from engine.cli import main

    for precision in ("fp16", "fp32"):
        assert main(["build", str(tiny_model), "--precision", precision]) == 2
        err = capsys.readouterr().err
        assert "deepfake-engine[gpu]" in " ".join(err.split())
    assert not (tiny_model / "engines").exists() or not any((tiny_model / "engines").iterdir())


def test_build_int8_without_tensorrt_makes_only_the_qdq_graph(int8_model, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr("engine.commands.build._has_tensorrt", lambda: False)
    from engine.cli import main

    assert main(["build", str(int8_model), "--precision", "int8"]) == 0  # up to date: no redo
    out = capsys.readouterr()
    assert "up to date" in out.out and "within bound" in out.out
    assert "TensorRT is not installed" in out.err


# ------------------------------------------------------------------------------ TensorRT form
# (the conversion itself, on a tiny graph: tests/engine/backends/test_trt_qdq.py)


def test_tensorrt_qdq_of_the_int8_model_runs_and_stays_close(int8_model, real_crops):
    q = onnx.load(str(int8_model / INT8_FILE))
    trt_form = tensorrt_qdq(q)
    s = qdq_summary(trt_form)
    assert s["activation_types"] == ["int8"] and s["per_channel_weights"] == 55
    x = real_crops.videos[1].numpy()[:8]
    from core.reduce import softmax
    from tests.reference.sessions import plain_session

    def p_fake(model):
        sess = plain_session(model.SerializeToString())
        return softmax(sess.run(["logits"], {"frames": x})[0].mean(0))[0]

    assert abs(p_fake(trt_form) - p_fake(q)) < 0.05
    rec = load_sidecar(int8_model).graphs.classifier_int8.tensorrt_form_accuracy
    assert "not measured on TensorRT" in rec.what


# ------------------------------------------------------------------------------ issue 16

SMALL_CALIB = FrameSelection(100, 16, 8)  # 8 crops per clip (48): fewer than the default 32


@pytest.fixture(scope="module")
def hard_builds(hard_models, models_dir, video_paths):
    """``dfe build --precision int8 --report`` on each hard checkpoint, once: the Int8Result,
    or the Int8SearchError of a refusal. A shorter search than the default: one other range
    (Entropy, the most accurate on these checkpoints), then one fp32-fallback group."""
    config = EngineConfig(models_dir=models_dir, download=False)
    held = [p for p in video_paths if p.name.startswith(("dfdc_like", "pair480p_fake"))]
    out = {}
    for name, d in hard_models.items():
        try:
            out[name] = build_int8(
                d, config=config, calib_frames=SMALL_CALIB, eval_videos=held, report=True,
                report_crops=16, speed_rounds=1, fallback_shares=(0.5,),
                variants=[QuantConfig("entropy", symmetric=False, note="the most accurate here")],
            )  # fmt: skip
        except Int8SearchError as exc:
            out[name] = exc
    return out


def _trials(outcome):
    return outcome.result.trials if isinstance(outcome, Int8SearchError) else outcome.search.trials


def test_int8_random_direction_checkpoints_are_hard(hard_builds):
    """Issue 16's premise, on checkpoints made as it describes: the whole graph in INT8 with
    the default ranges misses the bound (the test checkpoint meets it)."""
    for name, outcome in hard_builds.items():
        first = _trials(outcome)[0]
        assert not first.config.fp32_nodes
        assert first.accuracy["max_abs_delta_p_fake"] > MAX_DELTA_P_FAKE, name


def test_int8_hard_build_writes_within_bound_or_refuses_with_the_table(hard_builds, hard_models):
    for name, outcome in hard_builds.items():
        d = hard_models[name]
        if isinstance(outcome, Int8SearchError):
            message = str(outcome)
            assert "Nothing was written" in message and not (d / INT8_FILE).exists()
            trials = outcome.result.trials
            assert len(message.splitlines()) >= len(trials) + 2  # header + one row per trial
            for t in trials:
                assert t.config.label()[:50] in message
                assert f"{t.accuracy['max_abs_delta_p_fake']:.4f}" in message
                assert f"{t.speedup:.2f}x" in message
            # the search went as far as keeping nodes in fp32, or says why it stopped
            assert any(t.config.fp32_nodes for t in trials) or "stopped" in outcome.result.stopped
        else:
            rec = load_sidecar(d).graphs.classifier_int8
            assert rec.accuracy.within_bound and rec.search.speed["speedup"] >= 1.2
            assert rec.search.fp32_nodes == tuple(outcome.search.chosen.config.fp32_nodes)


def test_int8_report_names_nodes_errors_and_contributions(hard_builds, hard_models):
    d = hard_models["random_direction"]
    report = json.loads((d / f"{REPORT_STEM}.json").read_text())
    rows = report["nodes"]
    assert len(rows) == 55  # 53 Conv, the LSTM-step MatMul, linear1's Gemm
    assert {r["op"] for r in rows} == {"Conv", "MatMul", "Gemm"}
    assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-3)
    assert all(r["contribution_p_fake_rms"] >= 0 for r in rows)
    errors = [r["relative_error"] for r in rows if r["relative_error"] is not None]
    assert len(errors) >= 50 and max(errors) > 0
    assert report["contributions"]["check_fp32_max"] < 1e-3  # gates off == fp32 (p_fake)
    assert len(report["trials"]) == len(_trials(hard_builds["random_direction"]))
    md = (d / f"{REPORT_STEM}.md").read_text()
    assert md.count("\n| /") + md.count("\n| ") >= 55 and "## Configurations tried" in md


def test_cpu_runtime_loads_the_int8_graph_with_merged_groups_bit_identically(
    int8_model, real_crops, caplog
):
    """The ORT CPU factory merges layer1-2's grouped convolutions of the INT8 graph at load
    (engine.backends.qdq_rewrite); the classifier's outputs are the stored file's, bit for bit,
    and the file keeps the exported groups (TensorRT and the error report read it)."""
    import logging

    import onnxruntime as ort

    from core.onnx_session import session_options
    from engine.backends import get_factory

    spec = load_sidecar(int8_model)
    x = real_crops.videos[1].numpy()[:6]
    with caplog.at_level(logging.INFO, logger="engine.backends.qdq_rewrite"):
        backend = get_factory("ort", precision="int8")(
            "classifier", spec.onnx_files["int8"], spec=spec
        )
    assert "7 grouped convolutions merged" in caplog.text  # layer1's 3 and layer2's 4
    plain = ort.InferenceSession(  # the stored file with the engine's session options
        str(int8_model / INT8_FILE), session_options(), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in plain.get_outputs()]
    ref = plain.run(names, {"frames": x})
    got = backend.session.run(names, {"frames": x})
    for r, g in zip(ref, got, strict=True):
        assert np.array_equal(r, g)
    groups = [
        a.i
        for n in onnx.load(str(int8_model / INT8_FILE)).graph.node
        if n.op_type == "Conv"
        for a in n.attribute
        if a.name == "group" and a.i > 1
    ]
    assert groups == [32] * 16  # every block's conv2 as exported
