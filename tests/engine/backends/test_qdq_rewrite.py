"""The CPU rewrite of Q/DQ graphs (engine.backends.qdq_rewrite): grouped convolutions merged into
wider groups give bit-identical outputs on ONNX Runtime, and only where that is exact."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.backends.qdq_rewrite import cpu_qdq_model, merge_grouped_convs


def _grouped_qdq(
    *,
    channels: int = 128,
    groups: int = 32,
    weight_type: int = TensorProto.INT8,
    weight_zero_point: int = 0,
    float_weight: bool = False,
    shared_weight: bool = False,
    float_output: bool = False,
    seed: int = 0,
) -> onnx.ModelProto:
    """x [2, C, 9, 9] -> Q/DQ (uint8) -> Conv 3x3 (groups, per-channel quantized weight) -> Q/DQ
    (uint8) -> y, as quantize_static writes a quantized Conv (``float_output``: no Q/DQ after
    the Conv, which ONNX Runtime then runs in fp32)."""
    rng = np.random.default_rng(seed)
    cin_g = channels // groups
    dtype = np.int8 if weight_type == TensorProto.INT8 else np.uint8
    lo, hi = (-127, 128) if dtype == np.int8 else (0, 256)
    w = rng.integers(lo, hi, size=(channels, cin_g, 3, 3)).astype(dtype)
    scale = rng.uniform(0.001, 0.01, channels).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.float32(0.02), "xs"),
        numpy_helper.from_array(np.uint8(128), "xz"),
        numpy_helper.from_array(rng.normal(0, 0.1, channels).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
    ]
    if float_weight:
        w_f = ((w.astype(np.float32) - weight_zero_point) * scale[:, None, None, None]).astype(
            np.float32
        )
        inits.append(numpy_helper.from_array(w_f, "w"))
    else:
        inits += [
            numpy_helper.from_array(w, "wq"),
            numpy_helper.from_array(scale, "ws"),
            numpy_helper.from_array(np.full(channels, weight_zero_point, dtype), "wz"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0))
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=groups)
    conv_out = "y" if float_output else "yc"
    nodes.append(helper.make_node("Conv", ["xd", "w", "b"], [conv_out], name="grouped", **conv))
    if not float_output:
        inits += [
            numpy_helper.from_array(np.float32(0.05), "ys"),
            numpy_helper.from_array(np.uint8(128), "yz"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["yc", "ys", "yz"], ["yq"]),
            helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
        ]
    shape = [2, channels, 9, 9]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    if shared_weight:
        nodes.append(helper.make_node("Conv", ["xd", "w", "b"], ["y2c"], name="twin", **conv))
        nodes += [
            helper.make_node("QuantizeLinear", ["y2c", "ys", "yz"], ["y2q"]),
            helper.make_node("DequantizeLinear", ["y2q", "ys", "yz"], ["y2"]),
        ]
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, shape))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _group(model: onnx.ModelProto, name: str = "grouped") -> int:
    node = next(n for n in model.graph.node if n.name == name)
    return next(a.i for a in node.attribute if a.name == "group")


def _x(channels: int = 128) -> np.ndarray:
    return np.random.default_rng(7).normal(0, 1, (2, channels, 9, 9)).astype(np.float32)


@pytest.mark.parametrize(
    ("channels", "groups", "merged_groups"),
    [(128, 32, 4), (256, 32, 8), (24, 6, 1)],  # 4 and 8 channels per group; 6 groups of 4 -> 1
)
def test_merged_groups_give_bit_identical_outputs(channels, groups, merged_groups):
    model = _grouped_qdq(channels=channels, groups=groups)
    ref = _run(model, _x(channels))
    changes = merge_grouped_convs(model)
    assert changes == [
        {
            "node": "grouped",
            "groups": groups,
            "merged_groups": merged_groups,
            "group_channels": channels // groups,
            "merged_group_channels": channels // merged_groups,
        }
    ]
    assert _group(model) == merged_groups
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "wq"))
    assert w.shape == (channels, channels // merged_groups, 3, 3)
    onnx.checker.check_model(model)
    got = _run(model, _x(channels))
    assert np.array_equal(got[0], ref[0])
    assert len(np.unique(ref[0])) > 100  # not a constant output


def test_padding_takes_each_channels_zero_point():
    """uint8 weights with zero point 100: the padding must dequantize to 0, not to -100*s."""
    model = _grouped_qdq(weight_type=TensorProto.UINT8, weight_zero_point=100)
    ref = _run(model, _x())
    assert merge_grouped_convs(model)
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "wq"))
    assert (w[0, 4:] == 100).all() and (w[0, :4] != 100).any()
    assert np.array_equal(_run(model, _x())[0], ref[0])


def test_leaves_what_would_not_be_exact_or_is_not_worth_it():
    fp32 = _grouped_qdq(float_weight=True)  # another summation order: not bit-identical
    wide = _grouped_qdq(channels=512, groups=32)  # 16 channels per group: no gain measured
    shared = _grouped_qdq(shared_weight=True)  # one weight, two nodes
    float_out = _grouped_qdq(float_output=True)  # not fused into QLinearConv: runs in fp32
    for model in (fp32, wide, shared, float_out):
        before = model.SerializeToString()
        assert merge_grouped_convs(model) == []
        assert model.SerializeToString() == before


def test_cpu_qdq_model_serializes_the_merged_graph(tmp_path):
    path = tmp_path / "g.onnx"
    onnx.save(_grouped_qdq(), str(path))
    data, changes = cpu_qdq_model(path)
    assert len(changes) == 1
    merged = onnx.load_from_string(data)
    assert _group(merged) == 4
    assert _group(onnx.load(str(path))) == 32  # the file itself is untouched
    assert np.array_equal(_run(merged, _x())[0], _run(onnx.load(str(path)), _x())[0])
