"""The TensorRT form of an INT8 Q/DQ graph (:mod:`engine.backends.trt_qdq`) on a tiny graph
with the patterns ONNX Runtime's quantizer writes, run by ONNX Runtime on CPU. The form of the
INT8 model ``dfe build`` writes is checked in ``tests/engine/optimize/test_quantize.py``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from engine.backends.trt_qdq import tensorrt_qdq
from tests.engine.backends._qdq_models import tiny_qdq_model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """``model`` on ONNX Runtime CPU with the engine's session options (on CPUs without VNNI
    they keep uint8 x int8 products from saturating: core.onnx_session)."""
    from core.onnx_session import create_session

    return create_session(model.SerializeToString()).run(None, {"x": x})[0]


def test_tensorrt_qdq_is_signed_symmetric_and_keeps_the_maths():
    model = tiny_qdq_model()
    trt_form = tensorrt_qdq(model)
    onnx.checker.check_model(trt_form)
    inits = {i.name: i for i in trt_form.graph.initializer}
    ops = [n.op_type for n in trt_form.graph.node]
    assert "Relu" in ops  # the uint8 zero-point-0 clamp made explicit
    for n in trt_form.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[n.input[2]]
            assert zp.data_type == TensorProto.INT8
            assert not numpy_helper.to_array(zp).any()  # zero point 0
    assert inits["b"].data_type == TensorProto.FLOAT  # bias folded to a float constant
    x = np.random.default_rng(1).normal(0, 1, size=(2, 3, 8, 8)).astype(np.float32)
    ref, got = _run(model, x), _run(trt_form, x)
    assert (got >= 0).all()
    # same clamp at 0 and range; the output step doubles (255 / 127): at most one new step
    assert np.abs(got - ref).max() <= 0.01 * 255 / 127 + 1e-6
