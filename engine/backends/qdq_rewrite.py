"""Exact rewrites of a Q/DQ graph for ONNX Runtime's CPU kernels (MLAS), applied at load.

**Grouped convolutions with few channels per group are merged into fewer, wider groups.**
ResNeXt50_32x4d's 3x3 convolutions have 32 groups of 4 (layer1) and 8 (layer2) input channels.
ONNX Runtime's ``QLinearConv`` runs one small GEMM per group, which wastes the VNNI kernels: in a
per-node profile of the INT8 classifier (``SessionOptions.enable_profiling``, one thread, batch
10, 2-core AMD EPYC with AVX-512 VNNI), layer1's three grouped convolutions took 30% of the
graph's time for 3% of its multiply-adds (~3.4 G multiply-adds/s, where the 1x1 convolutions
ran at ~200 G/s), layer2's another 11%.

``m`` neighbouring groups are merged into one group whose weight is block-diagonal: output
channel ``o`` of old group ``j`` keeps its ``C_in/g`` weights at input offset
``(j mod m) * C_in/g`` and gets the weight's **zero point** everywhere else, so those terms
dequantize to exactly 0. The int8 x uint8 products are accumulated in int32, which is exact in
any order, and the per-channel scales are untouched: the outputs are **bit-identical**
(``tests/engine/backends/test_qdq_rewrite.py`` checks it on ONNX Runtime). It does ``m`` times the
multiply-adds of those layers in far fewer, larger GEMMs. Measured with the same profile
setup (``merge_grouped_convs`` defaults: groups of <= 8 input channels merged up to 32): the
INT8 classifier went from 10.5 to 7.7 ms per frame at batch 10 (12.9 to 9.7 at batch 1, 10.5 to
7.7 at batch 20). Merging to 16 channels gave 8.1 ms, one dense convolution 9.0 ms, and also
merging layer3 (16 channels per group) no gain.

Only convolutions ONNX Runtime fuses into ``QLinearConv`` (quantized input, int8 constant
weight, output quantized again) are merged. An fp32 convolution (an fp32 weight, or a float
output) would give the same sum in another order, which is not bit-identical, and on the fp32 graph
(NCHWc kernels) the same merge measured at most 2-4% faster, within noise. The stored INT8 file
keeps the exported groups: TensorRT and the per-node error report read it as it is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.deps import require

log = logging.getLogger(__name__)

MAX_GROUP_CHANNELS = 8  # merge grouped convolutions with at most this many input channels/group
MERGED_GROUP_CHANNELS = 32  # ... into groups of this many (measured best, module docstring)


def merge_grouped_convs(
    model: Any,
    *,
    max_group_channels: int = MAX_GROUP_CHANNELS,
    merged_group_channels: int = MERGED_GROUP_CHANNELS,
) -> list[dict[str, Any]]:
    """Merge the groups of every grouped ``Conv`` of the ``onnx.ModelProto`` ``model`` (changed
    in place) that ONNX Runtime runs as a ``QLinearConv`` (its input behind a
    ``DequantizeLinear``, its output into ``QuantizeLinear`` only), whose weight is an
    int8/uint8 initializer behind a ``DequantizeLinear`` and whose groups have at most
    ``max_group_channels`` input channels, into groups of
    ``merged_group_channels`` input channels (fewer when the group count does not divide).

    Weight ``[C_out, C_in/g, kh, kw]`` becomes ``[C_out, C_in/g * m, kh, kw]`` (block-diagonal,
    padded with the zero point of each output channel), ``group`` becomes ``g / m``. Returns one
    ``{"node", "groups", "merged_groups", "group_channels", "merged_group_channels"}`` per merged
    node. A weight shared by another node is left alone. Raises nothing for graphs without
    such convolutions (the list is empty)."""
    require("onnx")
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    uses: dict[str, int] = {}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
            consumers.setdefault(name, []).append(node)
    changes = []
    stale: set[str] = set()  # the dequantized weights, whose recorded shapes changed
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        group = next((a for a in node.attribute if a.name == "group"), None)
        if group is None or group.i <= 1:
            continue
        if not _fused_by_ort(node, producers, consumers):
            continue
        dq = producers.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or uses.get(node.input[1], 0) != 1:
            continue
        weight = inits.get(dq.input[0])
        if weight is None or weight.data_type not in (TensorProto.INT8, TensorProto.UINT8):
            continue
        if uses.get(dq.input[0], 0) != 1:
            continue
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        w = numpy_helper.to_array(weight)
        groups, cin_g = group.i, w.shape[1]
        if w.ndim < 3 or cin_g > max_group_channels or w.shape[0] % groups:
            continue
        m = max(1, merged_group_channels // cin_g)
        while m > 1 and groups % m:
            m -= 1
        if m == 1:
            continue
        zero = np.zeros(w.shape[0], w.dtype)
        if len(dq.input) > 2 and dq.input[2] in inits:
            zp = numpy_helper.to_array(inits[dq.input[2]]).reshape(-1)
            if zp.size not in (1, w.shape[0]) or (zp.size > 1 and axis != 0):
                continue  # a zero point along another axis: not a per-output-channel weight
            zero = np.broadcast_to(zp, w.shape[:1]).astype(w.dtype)
        cout_g = w.shape[0] // groups
        merged = np.empty((w.shape[0], cin_g * m, *w.shape[2:]), w.dtype)
        merged[...] = zero.reshape(-1, *([1] * (w.ndim - 1)))
        offset = (np.arange(w.shape[0]) // cout_g) % m * cin_g
        for k in range(cin_g):
            merged[np.arange(w.shape[0]), offset + k] = w[:, k]
        weight.CopyFrom(numpy_helper.from_array(merged, weight.name))
        group.i = groups // m
        stale.add(node.input[1])
        changes.append(
            {
                "node": node.name,
                "groups": groups,
                "merged_groups": groups // m,
                "group_channels": cin_g,
                "merged_group_channels": cin_g * m,
            }
        )
    if stale:  # shapes recorded for the old weights would contradict the new ones
        keep = [v for v in graph.value_info if v.name not in stale]
        del graph.value_info[:]
        graph.value_info.extend(keep)
    return changes


def _fused_by_ort(node: Any, producers: dict[str, Any], consumers: dict[str, list[Any]]) -> bool:
    """Whether ONNX Runtime fuses ``DQ(x), DQ(w) -> Conv -> Q`` into one ``QLinearConv``
    (integer accumulation: exact in any order). A Conv whose output stays float runs in fp32
    after dequantization, where another summation order changes the last bits."""
    x = producers.get(node.input[0])
    after = consumers.get(node.output[0], [])
    return (
        x is not None
        and x.op_type == "DequantizeLinear"
        and bool(after)
        and all(n.op_type == "QuantizeLinear" for n in after)
    )


def cpu_qdq_model(path: str | Path) -> tuple[bytes, list[dict[str, Any]]]:
    """The Q/DQ graph at ``path``, serialized after :func:`merge_grouped_convs`, for an
    ONNX Runtime CPU session; and the merges made (empty: the file's own bytes, unchanged).
    Raises what ``onnx.load`` raises for an unreadable file."""
    onnx = require("onnx")
    model = onnx.load(str(path))
    changes = merge_grouped_convs(model)
    if changes:
        log.info(
            "%s: %d grouped convolutions merged for the CPU kernels (%s)",
            Path(path).name,
            len(changes),
            ", ".join(
                f"{c['groups']}x{c['group_channels']} -> {c['merged_groups']}x"
                f"{c['merged_group_channels']}"
                for c in changes[:1]
            )
            + (" ..." if len(changes) > 1 else ""),
        )
    return model.SerializeToString(), changes
