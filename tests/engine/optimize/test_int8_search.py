"""The INT8 search: ranges from one calibration, the search's steps and its refusal, the error
report, on synthetic histograms, stand-in trials and the tiny torch-free model.

The tiny model's build uses small crop sets (2 clips, 4 calibration frames each, the 60 held-out
frames N = 60 needs): what is tested here is the machinery, not the accuracy of a real model
(that is in ``test_quantize.py``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from core.config import EngineConfig
from core.errors import InvalidInputError, ParityError
from engine.optimize.calibration import FrameSelection
from engine.optimize.int8_search import (
    Calibration,
    Int8SearchError,
    QuantConfig,
    Trial,
    calibration_variants,
    fallback_groups,
    format_trials,
    search,
)

# ------------------------------------------------------------------------------ ranges


def _histogram(values: np.ndarray, bins: int = 2048) -> tuple:
    """A signed histogram as ONNX Runtime's HistogramCollector keeps it."""
    t = float(np.abs(values).max())
    hist, edges = np.histogram(values, bins, range=(-t, t))
    return (hist, edges.astype(np.float32), np.float32(values.min()), np.float32(values.max()), t)


def test_calibration_ranges_follow_each_method():
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.normal(0, 1, 200_000), 0).astype(np.float32)
    relu[0] = 40.0  # one outlier
    signed = rng.normal(0, 1, 200_000).astype(np.float32)
    cal = Calibration({"relu": _histogram(relu), "signed": _histogram(signed)}, 0, 0.0)
    sym = cal.ranges(QuantConfig("percentile", 99.99, True))
    # clamped to the observed range: a ReLU output keeps [0, t] (zero point 0), the outlier
    # is clipped, a signed tensor gets one threshold on both sides
    assert sym["relu"][0] == 0.0 and 3.0 < sym["relu"][1] < 5.0
    assert sym["signed"][0] == -sym["signed"][1] and 3.0 < sym["signed"][1] < 5.0
    mm = cal.ranges(QuantConfig("minmax", symmetric=False))
    assert mm["relu"] == (0.0, 40.0) and mm["signed"][0] == signed.min()
    tails = cal.ranges(QuantConfig("percentile", 99.99, False))
    assert tails["relu"][0] == 0.0 and tails["relu"][1] < 40.0
    ent = cal.ranges(QuantConfig("entropy", symmetric=False))
    for name, (lo, hi) in ent.items():  # ONNX Runtime's KL search, within the observed range
        assert mm[name][0] <= lo < hi <= mm[name][1]
    # per tensor, the candidate with the least expected error: the outlier is clipped
    mse = cal.ranges(QuantConfig("mse"))
    assert mse["relu"][0] == 0.0 and mse["relu"][1] < 40.0


def test_quant_config_rejects_unknown_method():
    with pytest.raises(ValueError, match="supported values are percentile, minmax, entropy, mse"):
        QuantConfig("kl")


def test_calibration_variants_skip_the_first_configuration():
    first = QuantConfig()
    variants = calibration_variants(first)
    assert first.ranges not in [v.ranges for v in variants]
    assert {v.method for v in variants} == {"percentile", "minmax", "entropy", "mse"}


# ------------------------------------------------------------------------------ the search


def _trial(config: QuantConfig, delta: float, speedup: float) -> Trial:
    accuracy = {"max_abs_delta_p_fake": delta, "within_bound": delta <= 0.03}
    speed = {"speedup": speedup, "int8_frames_per_s": speedup * 100, "fp32_frames_per_s": 100}
    return Trial(config, accuracy, speed, {})


NODES = [{"node": f"n{i}", "contribution": c} for i, c in enumerate([0.5, 0.3, 0.2, 0.1, 0.05])]


def test_fallback_groups_take_the_largest_contributions_first():
    groups = fallback_groups(NODES, (0.25, 0.5, 0.75, 0.9))
    # squares: 0.25, 0.09, 0.04, ... of 0.3925: n0 alone covers 64% (25% and 50% alike),
    # n0 + n1 87% (75%), n0 + n1 + n2 97% (90%)
    assert [g for _, g in groups] == [("n0",), ("n0", "n1"), ("n0", "n1", "n2")]
    assert [round(s, 2) for s, _ in groups] == [0.64, 0.87, 0.97]
    assert fallback_groups([{"node": "x", "contribution": 0.0}]) == []


def test_search_keeps_the_first_configuration_when_it_meets_the_bound():
    tried = []

    def try_config(c):
        tried.append(c)
        return _trial(c, 0.01, 1.7)

    result = search(first=QuantConfig(), try_config=try_config, contributions=lambda t: [])
    assert len(tried) == 1 and result.chosen is result.trials[0]
    assert result.stopped == "the first configuration met the bound"


def test_search_falls_back_to_fp32_nodes_and_keeps_the_fastest_within_bound():
    def try_config(c):
        if c.fp32_nodes:  # more fp32: more accurate, slower
            n = len(c.fp32_nodes)
            return _trial(c, 0.05 - 0.01 * n, 1.7 - 0.1 * n)
        return _trial(c, 0.06 if c.method == "entropy" else 0.05, 1.7)

    asked = []

    def contributions(t):
        asked.append(t.config)
        return NODES

    result = search(
        first=QuantConfig(), try_config=try_config, contributions=contributions,
        fallback_shares=(0.25, 0.5, 0.75, 0.95, 0.99),
    )  # fmt: skip
    assert asked and asked[0].method != "entropy"  # measured on the most accurate whole graph
    assert result.chosen is not None and result.chosen.config.fp32_nodes == ("n0", "n1", "n2")
    assert result.chosen.within_bound and result.chosen.speedup == pytest.approx(1.4)
    assert result.stopped == "the bound was met with nodes kept in fp32"


def test_search_refuses_when_fp32_fallback_gets_too_slow():
    def try_config(c):
        return _trial(c, 0.08 - 0.005 * len(c.fp32_nodes), 1.7 - 0.3 * len(c.fp32_nodes))

    result = search(
        first=QuantConfig(), try_config=try_config, contributions=lambda t: NODES,
        fallback_shares=(0.25, 0.5, 0.75, 0.95),
    )  # fmt: skip
    assert result.chosen is None
    assert "slower than 1.2x" in result.stopped
    table = format_trials(result.table(), 0.03)
    assert len(table.splitlines()) == len(result.trials) + 1
    assert "+ 2 nodes fp32" in table and "0.0800" in table


def test_search_respects_max_trials():
    result = search(
        first=QuantConfig(),
        try_config=lambda c: _trial(c, 0.1, 1.7),
        contributions=lambda t: NODES,
        max_trials=3,
    )
    assert len(result.trials) == 3 and result.chosen is None
    assert "max_trials" in result.stopped


def test_int8_search_error_is_a_parity_error():
    assert issubclass(Int8SearchError, ParityError)


# ------------------------------------------------------------------------------ tiny model


@pytest.fixture(scope="module")
def tiny_copy(tiny_model, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny_int8") / "model"
    shutil.copytree(tiny_model, d)
    return d


SMALL = {
    "calib_frames": FrameSelection(100, 8, 4),
    "max_trials": 3,
    "speed_rounds": 1,
    "report_crops": 8,
}


def _videos(shared_dir):
    return [shared_dir / "videos" / n for n in ("pair480p_real.mp4", "dfdc_like_fake.mp4")]


def test_build_int8_refusal_shows_the_table_and_writes_only_the_report(
    tiny_copy, shared_dir, models_dir
):
    from engine.optimize.quantize import build_int8

    with pytest.raises(Int8SearchError) as info:
        build_int8(
            tiny_copy, _videos(shared_dir),
            config=EngineConfig(models_dir=models_dir, download=False),
            min_speedup=1000.0, report=True, **SMALL,
        )  # fmt: skip
    message = str(info.value)
    assert "at least 1000.0x as fast as fp32" in message
    assert "configuration" in message and "speed-up" in message
    result = info.value.result
    assert len(result.trials) == 3 and result.chosen is None
    for trial in result.trials:  # every row of the table is in the message
        assert f"{trial.accuracy['max_abs_delta_p_fake']:.4f}" in message
    assert not (tiny_copy / "classifier.int8.onnx").exists()
    report = json.loads((tiny_copy / "classifier.int8.report.json").read_text())
    assert [r["op"] for r in report["nodes"]] == ["Conv", "Gemm"]  # graph order
    assert len(report["trials"]) == 3
    md = (tiny_copy / "classifier.int8.report.md").read_text()
    assert "| node | op | relative error |" in md and "## Configurations tried" in md


def test_build_int8_records_the_search_in_the_sidecar(tiny_copy, shared_dir, models_dir):
    from core.sidecar import INT8_GRAPH, load_sidecar
    from engine.optimize.quantize import build_int8

    result = build_int8(
        tiny_copy, _videos(shared_dir),
        config=EngineConfig(models_dir=models_dir, download=False),
        min_speedup=0.0, **SMALL,
    )  # fmt: skip
    rec = load_sidecar(tiny_copy).graphs.get(INT8_GRAPH)
    assert rec.to_json() == result.record.to_json()  # what build_int8 returned
    search_rec = rec.search
    assert search_rec.chosen["method"] == "percentile" and search_rec.fp32_nodes == ()
    assert search_rec.trials[0]["configuration"] == QuantConfig().label()
    assert search_rec.speed["speedup"] > 0 and "interleaved" in search_rec.speed_note
    assert (
        rec.accuracy.max_abs_delta_p_fake == result.search.chosen.accuracy["max_abs_delta_p_fake"]
    )
    assert rec.calibration.first_method == "percentile"


def test_node_contributions_gated_graph_reproduces_fp32_and_qdq(tiny_model, tmp_path):
    """Gates off: the fp32 graph; every gate on: close to the Q/DQ graph."""
    from engine.optimize.int8_search import pre_process, quantize_with
    from engine.optimize.qdq_debug import gated_graph, node_contributions, tensor_errors
    from tests.reference.sessions import plain_session

    rng = np.random.default_rng(3)
    crops = rng.normal(0, 1, (16, 3, 112, 112)).astype(np.float32)
    pre = pre_process(tiny_model / "classifier.onnx", tmp_path / "pre.onnx")
    cal = Calibration.collect(pre, crops, batch=8, chunk=1)
    qdq = tmp_path / "qdq.onnx"
    quantize_with(pre, qdq, cal, QuantConfig())
    gated, names = gated_graph(pre, qdq)
    assert len(names) == 2  # the 1x1 Conv and the final Gemm
    sess = plain_session(gated.SerializeToString())
    ref = plain_session(pre)
    q = plain_session(qdq)
    off = sess.run(["logits"], {"frames": crops, "qdq_gates": np.zeros(2, np.float32)})[0]
    on = sess.run(["logits"], {"frames": crops, "qdq_gates": np.ones(2, np.float32)})[0]
    fp32 = ref.run(["logits"], {"frames": crops})[0]
    int8 = q.run(["logits"], {"frames": crops})[0]
    np.testing.assert_allclose(off, fp32, atol=1e-5)
    assert np.abs(on - fp32).max() > 1e-4  # the gates do add the quantization noise
    # the simulated noise is the Q/DQ graph's, up to the output's own rounding
    assert np.abs(on - int8).max() < 0.5 * np.abs(int8 - fp32).max() + 0.05
    contrib = node_contributions(pre, qdq, crops)
    assert contrib["check_fp32_max"] < 1e-5
    assert sum(r["share"] for r in contrib["nodes"]) == pytest.approx(1.0)
    errors = tensor_errors(pre, qdq, crops)
    assert errors and all(v >= 0 for v in errors.values())
    model = onnx.load(str(qdq))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def test_int8_below_the_checked_frames_warns_with_the_per_frame_error(
    tiny_copy, shared_dir, models_dir
):
    """The bound is per video at N = 20 and 60; a video scored on fewer frames says so."""
    from engine.api import Engine

    if not (tiny_copy / "classifier.int8.onnx").exists():
        test_build_int8_records_the_search_in_the_sidecar(tiny_copy, shared_dir, models_dir)
    engine = Engine.load(
        tiny_copy, precision="int8", backend="ort", models_dir=models_dir, download=False
    )
    video = shared_dir / "videos" / "pair480p_real.mp4"
    short = engine.predict(video, seq_len=4)
    assert any("INT8 was checked against fp32 at N=[20, 60]" in w for w in short.warnings)
    assert not any("INT8 was checked" in w for w in engine.predict(video, seq_len=20).warnings)


def test_int8_calibrated_on_the_runtimes_faces_and_says_when_scoring_others(
    tiny_copy, shared_dir, models_dir
):
    """Calibration crops are the runtime's (``--faces main`` by default, recorded); scoring
    with another face rule says the agreement bound was measured for the recorded one."""
    from core.sidecar import load_sidecar
    from engine.api import Engine

    if not (tiny_copy / "classifier.int8.onnx").exists():
        test_build_int8_records_the_search_in_the_sidecar(tiny_copy, shared_dir, models_dir)
    assert load_sidecar(tiny_copy).graphs.classifier_int8.calibration.faces == "main"
    common = {"precision": "int8", "backend": "ort", "models_dir": models_dir, "download": False}
    for faces, said in (("main", False), ("per-frame", True)):
        engine = Engine.load(tiny_copy, faces=faces, **common)
        notes = engine.pipeline_for(load_sidecar(tiny_copy)).notes
        assert any("--faces main, but this run scores" in n for n in notes) is said, notes


def test_int8_outside_bound_is_said_in_every_record(tiny_copy, shared_dir, models_dir):
    """A graph kept with --force (outside the bound), or whose TensorRT form missed the bound,
    is named in the warnings every record of the run carries."""
    from core.sidecar import INT8_GRAPH, SIDECAR_NAME, load_sidecar, write_sidecar
    from engine.api import Engine

    if not (tiny_copy / "classifier.int8.onnx").exists():
        test_build_int8_records_the_search_in_the_sidecar(tiny_copy, shared_dir, models_dir)
    raw = json.loads((tiny_copy / SIDECAR_NAME).read_text())
    common = {"models_dir": models_dir, "download": False}

    def notes(backend: str) -> list[str]:
        engine = Engine.load(tiny_copy, precision="int8", backend="ort", **common)
        pipeline = engine.pipeline_for(load_sidecar(tiny_copy))
        pipeline.backend = backend  # the notes depend on the backend name only
        return pipeline._notes()

    assert not any("outside" in n for n in notes("ort"))
    rec = raw["graphs"][INT8_GRAPH]
    rec["accuracy"] = {**rec["accuracy"], "within_bound": False, "max_abs_delta_p_fake": 0.2}
    rec["tensorrt_form_accuracy"] = {"max_abs_delta_p_fake": 0.1, "within_bound": False}
    write_sidecar(tiny_copy / SIDECAR_NAME, raw)
    ort_notes = notes("ort")
    assert any("outside its agreement bound" in n and "0.2" in n for n in ort_notes)
    assert not any("TensorRT form" in n for n in ort_notes)
    assert any("TensorRT form" in n and "0.1" in n for n in notes("tensorrt"))


def test_build_int8_on_a_sequence_model_times_its_features_and_refuses_a_report(
    tmp_path, shared_dir, models_dir
):
    """The sequence variant's classifier ends at the pooled features (no ``logits`` output):
    the build times that output, and the per-node report, which measures p_fake from per-frame
    logits, is refused with a message naming the model, not an ONNX Runtime error."""
    from core.sidecar import INT8_GRAPH, load_sidecar
    from engine.optimize.quantize import build_int8
    from tests.tiny_model import make_tiny_model

    model = make_tiny_model(tmp_path / "seq", variant="sequence")
    config = EngineConfig(models_dir=models_dir, download=False)
    result = build_int8(model, _videos(shared_dir), config=config, min_speedup=0.0, **SMALL)
    rec = load_sidecar(model).graphs.get(INT8_GRAPH)
    assert rec.to_json() == result.record.to_json()
    assert rec.search.speed["speedup"] > 0
    with pytest.raises(InvalidInputError, match=r"sequence-variant model") as info:
        build_int8(
            model, _videos(shared_dir), config=config, min_speedup=0.0, force=True,
            report=True, **SMALL,
        )  # fmt: skip
    assert str(model) in str(info.value)
