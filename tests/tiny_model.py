"""A tiny exported model made without torch: the same graph contract and sidecar as
``dfe export`` writes, so the runtime, the CLI, the server and Ray can be tested in milliseconds
and in an environment without the ``export`` extra.

``classifier.onnx``: frames (N, 3, 112, 112) -> 28x28 average pool -> 1x1 conv to 8 channels
(``fmap``, N x 8 x 4 x 4) -> global average pool (``features``, N x 8) -> linear to ``logits``
(N x 2). Its weights are fixed random numbers, so different faces give different logits. The
sequence variant's ``head.onnx`` is causal: a running sum over steps, then a linear layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from core.hashing import sha256_file
from core.sidecar import SIDECAR_NAME, InputSpec, write_sidecar

CHANNELS = 8


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv_w": rng.normal(0, 1.0, (CHANNELS, 3, 1, 1)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, (CHANNELS,)).astype(np.float32),
        "fc_w": rng.normal(0, 1.0, (2, CHANNELS)).astype(np.float32),
        "fc_b": np.array([0.05, -0.05], np.float32),
    }


def _classifier(path: Path, w: dict[str, np.ndarray], *, logits: bool) -> None:
    nodes = [
        helper.make_node(
            "AveragePool", ["frames"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]
        ),
        helper.make_node("Conv", ["pooled", "conv_w", "conv_b"], ["fmap"]),
        helper.make_node("GlobalAveragePool", ["fmap"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["features"], axis=1),
    ]
    outputs = [
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["frames", CHANNELS]),
        helper.make_tensor_value_info("fmap", TensorProto.FLOAT, ["frames", CHANNELS, 4, 4]),
    ]
    inits = [numpy_helper.from_array(w[k], k) for k in ("conv_w", "conv_b")]
    if logits:
        nodes.append(helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], transB=1))
        outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["frames", 2]))
        inits += [numpy_helper.from_array(w[k], k) for k in ("fc_w", "fc_b")]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["frames", 3, 112, 112])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _head(path: Path, w: dict[str, np.ndarray]) -> None:
    axis = numpy_helper.from_array(np.array(1, np.int64), "axis")
    nodes = [
        helper.make_node("CumSum", ["features", "axis"], ["running"]),
        helper.make_node("MatMul", ["running", "fc_wt"], ["mm"]),
        helper.make_node("Add", ["mm", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_head",
        [
            helper.make_tensor_value_info(
                "features", TensorProto.FLOAT, ["videos", "steps", CHANNELS]
            )
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["videos", "steps", 2])],
        [
            axis,
            numpy_helper.from_array(w["fc_w"].T.copy() / 4, "fc_wt"),
            numpy_helper.from_array(w["fc_b"], "fc_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_tiny_model(
    directory: Path,
    *,
    variant: str = "original",
    reduce: str = "mean",
    seq_len: int | None = 20,
    crop_style: str = "scrfd",
    demo: bool = False,
    seed: int = 0,
    weights: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a tiny exported model (graphs, ``linear1.npy`` and the sidecar) into ``directory``
    and return it. ``weights`` replaces some of the random weights (``conv_w`` (8, 3, 1, 1),
    ``conv_b`` (8,), ``fc_w`` (2, 8), ``fc_b`` (2,)): a model whose score follows a chosen
    property of the crops."""
    directory.mkdir(parents=True, exist_ok=True)
    w = {**_weights(seed), **(weights or {})}
    classifier = directory / "classifier.onnx"
    _classifier(classifier, w, logits=variant == "original")
    np.save(directory / "linear1.npy", w["fc_w"])
    graphs: dict = {
        "classifier": {
            "file": classifier.name,
            "sha256": sha256_file(classifier),
            "inputs": {"frames": ["frames", 3, 112, 112]},
            "outputs": {"logits": ["frames", 2], "features": ["frames", CHANNELS]},
            "explain": {"output": "fmap", "weights": "linear1.npy"},
        }
    }
    if variant == "sequence":
        head = directory / "head.onnx"
        _head(head, w)
        graphs["head"] = {"file": head.name, "sha256": sha256_file(head)}
    write_sidecar(
        directory / SIDECAR_NAME,
        {
            "model": {"architecture": "tiny test graph", "variant": variant},
            "reduce": reduce,
            "input": InputSpec().as_dict(),
            "preprocessing": {"sampling": "first", "crop_style": crop_style},
            "labels": {"0": "FAKE", "1": "REAL"},
            "checkpoint": {"file": "tiny.pt", "seq_len": seq_len, "accuracy": None},
            "graphs": graphs,
            "demo": demo,
        },
    )
    return directory
