"""The TensorRT form of the INT8 Q/DQ graph, derived at build time from the file
``dfe build --precision int8`` writes (:mod:`engine.optimize.quantize`).

TensorRT accepts only signed, symmetric (zero point 0) INT8 Q/DQ and float biases:
:func:`tensorrt_qdq` turns a uint8 tensor with zero point 128 into int8 with the same scale
(exact), gives one with zero point 0 (a clamp at 0) an explicit Relu and the symmetric scale
covering its range, and folds int32 bias DequantizeLinear nodes into float constants. Used by
the TensorRT build (:mod:`engine.backends.trt_build`) and by the INT8 search, which checks that
this form runs; a module of its own so that the build does not import the search.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.deps import require
from core.errors import ModelFormatError

__all__ = ["tensorrt_qdq"]


def tensorrt_qdq(model: Any) -> Any:
    """The TensorRT-readable form of a U8S8 Q/DQ graph (returns a new ``ModelProto``).

    TensorRT takes INT8 Q/DQ only as signed, symmetric (zero point 0) tensors, and float biases:
    - uint8 with zero point 128: int8 with zero point 0 and the same scale (the same numbers);
    - uint8 with zero point 0 (values clamped at 0): a Relu before the QuantizeLinear keeps the
      clamp, and int8 with scale ``255 * s / 127`` covers the same range (one bit fewer);
    - other zero points: int8 with the symmetric scale covering the calibrated range;
    - ``DequantizeLinear(int32 bias)`` is folded into a float32 constant.
    """
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    converted: dict[tuple[str, str], tuple[str, str]] = {}  # (scale, zp) -> new (scale, zp)
    new_inits: list[Any] = []
    drop: set[str] = set()

    def _convert(scale_name: str, zp_name: str) -> tuple[str, str, bool]:
        """New (scale, zero point) names and whether a clamp at 0 is implied."""
        zp = numpy_helper.to_array(inits[zp_name])
        scale = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
        z = int(zp.reshape(-1)[0])
        if zp.size != 1:
            raise ModelFormatError("per-channel activation quantization is not supported here")
        key = (scale_name, zp_name)
        if key not in converted:
            if z == 128:
                new_scale = scale
            else:
                lo, hi = (0 - z) * scale, (255 - z) * scale
                new_scale = (np.maximum(np.abs(lo), np.abs(hi)) / 127.0).astype(np.float32)
            s_name, z_name = f"{scale_name}_trt", f"{zp_name}_trt"
            new_inits.append(numpy_helper.from_array(new_scale.reshape(scale.shape), s_name))
            new_inits.append(numpy_helper.from_array(np.zeros(zp.shape, np.int8), z_name))
            converted[key] = (s_name, z_name)
        s_name, z_name = converted[key]
        return s_name, z_name, z == 0

    nodes = []
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            data = inits[node.input[0]]
            if data.data_type == TensorProto.INT32:  # a bias: fold into a float constant
                q = numpy_helper.to_array(data).astype(np.float64)
                s = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
                bias = (q * s).astype(np.float32)
                new_inits.append(numpy_helper.from_array(bias, node.output[0]))
                drop.update(node.input)
                continue
            nodes.append(node)  # int8 weights: symmetric already
            continue
        zp_name = node.input[2] if len(node.input) > 2 else ""
        is_u8 = zp_name in inits and inits[zp_name].data_type == TensorProto.UINT8
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or not is_u8:
            nodes.append(node)
            continue
        s_name, z_name, clamp = _convert(node.input[1], zp_name)
        data_in = node.input[0]
        src = producer.get(data_in)
        if node.op_type == "QuantizeLinear" and clamp and (src is None or src.op_type != "Relu"):
            relu_out = f"{data_in}_relu_trt"
            nodes.append(helper.make_node("Relu", [data_in], [relu_out], name=f"{relu_out}_node"))
            data_in = relu_out
        drop.update((node.input[1], zp_name))
        nodes.append(_with_inputs(node, [data_in, s_name, z_name]))
    still_used = {i for n in nodes for i in n.input}
    kept = [i for i in g.initializer if i.name not in drop or i.name in still_used]
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    del g.node[:]
    g.node.extend(nodes)
    return out


def _with_inputs(node: Any, inputs: Sequence[str]) -> Any:
    from onnx import NodeProto

    new = NodeProto()
    new.CopyFrom(node)
    del new.input[:]
    new.input.extend(inputs)
    return new
