"""A tiny U8S8 Q/DQ graph with the patterns ONNX Runtime's quantizer writes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_qdq_model() -> onnx.ModelProto:
    """x -Q(u8, zp 128)-> DQ -> Conv(int8 per-channel W, int32 bias) -Q(u8, zp 0)-> DQ -> y."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(4, 3, 3, 3), dtype=np.int8)
    w_scale = np.array([0.01, 0.02, 0.015, 0.005], np.float32)
    b = rng.integers(-500, 500, size=(4,), dtype=np.int32)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "x_s"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_z"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(w_scale, "w_s"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_z"),
        numpy_helper.from_array(b, "b_q"),
        numpy_helper.from_array(w_scale * np.float32(0.02), "b_s"),
        numpy_helper.from_array(np.zeros(4, np.int32), "b_z"),
        numpy_helper.from_array(np.array(0.01, np.float32), "y_s"),
        numpy_helper.from_array(np.array(0, np.uint8), "y_z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["b"], axis=0),
        helper.make_node("Conv", ["xd", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "y_s", "y_z"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "y_s", "y_z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model
