"""Where the INT8 error comes from: per-tensor error and each node's contribution to p_fake.

Two measurements on held-out crops, reported by ``dfe build --precision int8 --report``:

- **Relative error per tensor** between the fp32 graph and the Q/DQ graph
  (``||x_int8 - x_fp32|| / ||x_fp32||``), with ONNX Runtime's own debugging tools
  (``onnxruntime.quantization.qdq_loss_debug``: both graphs augmented to output every
  activation, run on the same crops, activations matched by name). It grows with depth when
  the error accumulates.
- **Contribution of each quantized node to the p_fake error**: the per-frame p_fake error when
  *only* that node is quantized (its int8 weights and its uint8 input, with the scales and zero
  points of the Q/DQ graph) and everything else stays fp32. One fp32 graph holds every node
  twice behind a gate (an ONNX ``If``: the node as it is, or on the Q/DQ values), so one ONNX
  Runtime session measures every node in turn (gates one-hot). Isolated errors from
  independent rounding add roughly as squares, so a node's ``share`` is its squared
  contribution over the sum. The search keeps the largest contributors in fp32 first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.deps import require
from core.reduce import fake_index, softmax

log = logging.getLogger(__name__)

GATES = "qdq_gates"
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


def _load(model: Any) -> Any:
    onnx = require("onnx")
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def tensor_errors(fp32_path: Path, qdq_path: Path, crops: np.ndarray, *, batch: int = 8) -> dict:
    """Relative L2 error of every activation of the Q/DQ graph against the fp32 graph
    (``qdq_loss_debug``: ``modify_model_output_intermediate_tensors``, ``collect_activations``,
    ``create_activation_matching``, ``compute_activation_error``). ``crops`` ``[n, 3, H, W]``;
    returns ``{tensor: relative error}`` for the activations found in both graphs."""
    require("onnxruntime", purpose="the INT8 error report")
    import tempfile

    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    def reader() -> Any:
        return iter([{"frames": crops[i : i + batch]} for i in range(0, len(crops), batch)])

    def relative(x: Sequence[np.ndarray], y: Sequence[np.ndarray]) -> float:
        a = np.concatenate([np.ravel(v) for v in x]).astype(np.float64)
        b = np.concatenate([np.ravel(v) for v in y]).astype(np.float64)
        return float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-30))

    with tempfile.TemporaryDirectory(prefix="dfe-qdq-debug-") as tmp:
        aug_fp32, aug_qdq = Path(tmp) / "fp32.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(fp32_path), str(aug_fp32))
        modify_model_output_intermediate_tensors(str(qdq_path), str(aug_qdq))
        fp32_acts = collect_activations(str(aug_fp32), reader())
        qdq_acts = collect_activations(str(aug_qdq), reader())
    matched = create_activation_matching(qdq_acts, fp32_acts)
    matched = {k: v for k, v in matched.items() if v.get("float")}
    errors = compute_activation_error(matched, err_func=relative)
    return {k: v["xmodel_err"] for k, v in errors.items() if "xmodel_err" in v}


def _targets(fp32: Any, qdq: Any) -> list[dict[str, Any]]:
    """Quantized nodes of ``qdq`` (by name, as in ``fp32``) with their weight's int8 values and
    scales and their input's scale and zero point."""
    from onnx import numpy_helper

    q_inits = {i.name: i for i in qdq.graph.initializer}
    q_producer = {o: n for n in qdq.graph.node for o in n.output}
    q_nodes = {n.name: n for n in qdq.graph.node}
    f_inits = {i.name for i in fp32.graph.initializer}
    out = []
    for node in fp32.graph.node:
        if node.op_type not in QUANTIZED_OPS or len(node.input) < 2 or node.input[1] not in f_inits:
            continue
        qn = q_nodes.get(node.name)
        if qn is None:
            continue
        w_dq = q_producer.get(qn.input[1])
        x_dq = q_producer.get(qn.input[0])
        if w_dq is None or w_dq.op_type != "DequantizeLinear" or w_dq.input[0] not in q_inits:
            continue  # kept in fp32
        axis = next((a.i for a in w_dq.attribute if a.name == "axis"), 1)
        target = {
            "node": node.name,
            "op": node.op_type,
            "weight": node.input[1],
            "w_int": numpy_helper.to_array(q_inits[w_dq.input[0]]),
            "w_scale": numpy_helper.to_array(q_inits[w_dq.input[1]]),
            "w_zero": numpy_helper.to_array(q_inits[w_dq.input[2]])
            if len(w_dq.input) > 2 and w_dq.input[2] in q_inits
            else None,
            "w_axis": axis,
            "x_scale": None,
            "x_zero": None,
        }
        if (
            x_dq is not None
            and x_dq.op_type == "DequantizeLinear"
            and x_dq.input[1] in q_inits
            and len(x_dq.input) > 2
            and x_dq.input[2] in q_inits
        ):
            target["x_scale"] = q_inits[x_dq.input[1]]
            target["x_zero"] = q_inits[x_dq.input[2]]
        out.append(target)
    return out


def _dequantized(t: dict[str, Any], like: np.ndarray) -> np.ndarray:
    q = t["w_int"].astype(np.float64)
    s = t["w_scale"].astype(np.float64)
    z = t["w_zero"].astype(np.float64) if t["w_zero"] is not None else np.zeros_like(s)
    if s.size > 1:
        shape = [1] * q.ndim
        shape[t["w_axis"] % q.ndim] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    w = (q - z) * s
    return w.reshape(like.shape).astype(np.float32)


def gated_graph(fp32_model: Any, qdq_model: Any) -> tuple[Any, list[str]]:
    """The fp32 graph with every quantized node behind a gate: input ``qdq_gates`` ``[K]``
    float; gate ``k`` = 0 runs node ``k`` in fp32, any other value with the Q/DQ graph's int8
    weight (dequantized) and its input quantized and dequantized with the Q/DQ graph's scale and
    zero point. Returns the model and the node names in gate order.

    Each gated node becomes an ONNX ``If`` on its gate whose two branches are the node as it is
    and the node on the Q/DQ values, so a run computes only the branch a gate picks and every
    weight stays a constant (ONNX Runtime pre-packs it): a run costs about 1.25x the fp32 graph
    on ResNeXt50, against 2.1x with the noise added arithmetically behind every gate
    (``x + g * (DQ(Q(x)) - x)``, ``W + g * (W_int8 - W)``; 16 crops, one thread)."""
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    fp32 = _load(fp32_model)
    qdq = _load(qdq_model)
    targets = _targets(fp32, qdq)
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    g.input.append(helper.make_tensor_value_info(GATES, TensorProto.FLOAT, [len(targets)]))
    by_name = {n.name: n for n in g.node}
    replaced: dict[str, list[Any]] = {}
    new_inits = []

    def branch(name: str, nodes: list[Any], output: str) -> Any:
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
        return helper.make_graph(nodes, name, [], [out])

    for k, t in enumerate(targets):
        node = by_name[t["node"]]
        p = f"gate{k}"
        w = numpy_helper.to_array(inits[t["weight"]])
        new_inits.append(numpy_helper.from_array(_dequantized(t, w), f"{p}_wq"))
        quantized = []
        x = node.input[0]
        if t["x_scale"] is not None:
            for init, name in ((t["x_scale"], f"{p}_xs"), (t["x_zero"], f"{p}_xz")):
                copy = onnx.TensorProto()
                copy.CopyFrom(init)
                copy.name = name
                new_inits.append(copy)
            quantized += [
                helper.make_node("QuantizeLinear", [node.input[0], f"{p}_xs", f"{p}_xz"],
                                 [f"{p}_xq"]),
                helper.make_node("DequantizeLinear", [f"{p}_xq", f"{p}_xs", f"{p}_xz"],
                                 [f"{p}_xdq"]),
            ]  # fmt: skip
            x = f"{p}_xdq"
        int8_node = helper.make_node(
            node.op_type, [x, f"{p}_wq", *node.input[2:]], [f"{p}_y_int8"],
            name=f"{node.name}/int8", domain=node.domain or None,
        )  # fmt: skip
        fp32_node = helper.make_node(
            node.op_type, list(node.input), [f"{p}_y_fp32"],
            name=f"{node.name}/fp32", domain=node.domain or None,
        )  # fmt: skip
        for n in (int8_node, fp32_node):
            n.attribute.extend(node.attribute)
        replaced[node.name] = [
            helper.make_node("Constant", [], [f"{p}_idx"], value=helper.make_tensor(
                f"{p}_idx_v", TensorProto.INT64, [], [k])),
            helper.make_node("Gather", [GATES, f"{p}_idx"], [f"{p}_g"], axis=0),
            helper.make_node("Cast", [f"{p}_g"], [f"{p}_on"], to=TensorProto.BOOL),
            helper.make_node(
                "If", [f"{p}_on"], list(node.output), name=node.name,
                then_branch=branch(f"{p}_int8", [*quantized, int8_node], f"{p}_y_int8"),
                else_branch=branch(f"{p}_fp32", [fp32_node], f"{p}_y_fp32"),
            ),
        ]  # fmt: skip
    ordered = []
    for node in g.node:
        ordered.extend(replaced.get(node.name, [node]))
    del g.node[:]
    g.node.extend(ordered)
    g.initializer.extend(new_inits)
    return model, [t["node"] for t in targets]


def node_contributions(
    fp32_model: Any,
    qdq_model: Any,
    crops: np.ndarray,
    *,
    labels: Mapping[int, str] | None = None,
    batch: int = 32,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Each quantized node's contribution to the per-frame p_fake error (see the module doc).

    ``crops`` ``[n, 3, H, W]`` held-out crops. Returns ``{"nodes": [{node, op, contribution,
    share}], "all_gates_rms", "check_fp32_max"}``: ``contribution`` is the RMS over the crops of
    p_fake(node alone quantized) - p_fake(fp32); ``all_gates_rms`` the same with every gate on
    (the simulated whole graph); ``check_fp32_max`` the largest logit difference with every
    gate off (the gated graph must reproduce fp32)."""
    from core.onnx_session import create_session

    model, names = gated_graph(fp32_model, qdq_model)
    fake = fake_index(labels) if labels else 0
    session = create_session(model.SerializeToString())

    def p_fake(gates: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(crops), batch):
            feeds = {"frames": crops[i : i + batch], GATES: gates}
            out.append(session.run(["logits"], feeds)[0])
        return softmax(np.concatenate(out))[:, fake]

    k = len(names)
    ref = p_fake(np.zeros(k, np.float32))
    ref_onnx = create_session(_load(fp32_model).SerializeToString())
    direct = np.concatenate(
        [ref_onnx.run(["logits"], {"frames": crops[i : i + batch]})[0]
         for i in range(0, len(crops), batch)]
    )  # fmt: skip
    check = float(np.max(np.abs(softmax(direct)[:, fake] - ref)))
    rows = []
    for j, name in enumerate(names):
        gates = np.zeros(k, np.float32)
        gates[j] = 1.0
        d = p_fake(gates) - ref
        rows.append({"node": name, "contribution": float(np.sqrt(np.mean(d**2)))})
        if progress is not None:
            progress(1)
    all_on = p_fake(np.ones(k, np.float32)) - ref
    total = sum(r["contribution"] ** 2 for r in rows) or 1.0
    for r in rows:
        r["share"] = r["contribution"] ** 2 / total
    return {
        "nodes": rows,
        "all_gates_rms": float(np.sqrt(np.mean(all_on**2))),
        "check_fp32_max": check,
        "crops": len(crops),
    }


def node_output_tensor(model: Any, node_name: str) -> str | None:
    """The activation a node hands on: its output, or the output of the Relu right after it
    (ONNX Runtime quantizes after the Relu)."""
    model = _load(model)
    node = next((n for n in model.graph.node if n.name == node_name), None)
    if node is None:
        return None
    out = node.output[0]
    users = [n for n in model.graph.node if out in n.input]
    if len(users) == 1 and users[0].op_type == "Relu":
        return users[0].output[0]
    return out


def report_rows(
    fp32_model: Any, errors: Mapping[str, float], contributions: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The report table: one row per quantized node, in graph order: node, op, relative error
    of the activation it hands on (vs fp32, whole Q/DQ graph), its contribution to the p_fake
    error (node alone quantized) and its share."""
    model = _load(fp32_model)
    ops = {n.name: n.op_type for n in model.graph.node}
    rows = []
    for r in contributions["nodes"]:
        tensor = node_output_tensor(model, r["node"])
        rows.append(
            {
                "node": r["node"],
                "op": ops.get(r["node"], "?"),
                "tensor": tensor,
                "relative_error": None if tensor not in errors else round(errors[tensor], 5),
                "contribution_p_fake_rms": round(r["contribution"], 6),
                "share": round(r["share"], 4),
            }
        )
    return rows


def format_report(rows: Sequence[dict[str, Any]], *, top: int | None = None) -> str:
    """Fixed-width text of the report table (largest contributions first when ``top``)."""
    chosen = sorted(rows, key=lambda r: -r["share"])[:top] if top else list(rows)
    lines = [f"{'node':52s} {'op':6s} {'rel. error':>10s} {'dp_fake rms':>11s} {'share':>6s}"]
    for r in chosen:
        err = "" if r["relative_error"] is None else f"{r['relative_error']:.4f}"
        lines.append(
            f"{r['node'][-52:]:52s} {r['op']:6s} {err:>10s} "
            f"{r['contribution_p_fake_rms']:>11.5f} {r['share']:>6.1%}"
        )
    return "\n".join(lines)


def write_report(directory: Path, stem: str, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report`` as ``STEM.json`` and a Markdown table ``STEM.md`` in ``directory``."""
    directory = Path(directory)
    js, md = directory / f"{stem}.json", directory / f"{stem}.md"
    js.write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# INT8 error report: {report.get('model', '')}", ""]
    if report.get("graph"):
        lines += [f"Q/DQ graph measured: {report['graph']}", ""]
    if report.get("nodes"):
        n = report.get("contributions", {}).get("crops")
        lines += [
            f"Per quantized node, on {n} held-out crops: relative error of the activation it "
            "hands on (whole Q/DQ graph vs fp32, onnxruntime.quantization.qdq_loss_debug), and "
            "its contribution to the per-frame p_fake error (RMS, node alone quantized) with its "
            "share of the sum of squares.",
            "",
            "| node | op | relative error | contribution (p_fake RMS) | share |",
            "|---|---|---|---|---|",
        ]
        for r in report["nodes"]:
            err = "" if r["relative_error"] is None else f"{r['relative_error']:.4f}"
            lines.append(
                f"| {r['node']} | {r['op']} | {err} | {r['contribution_p_fake_rms']:.5f} | "
                f"{r['share']:.1%} |"
            )
        lines.append("")
    if report.get("trials"):
        lines += [
            "## Configurations tried",
            "",
            "| # | configuration | why | max \\|delta p_fake\\| (video) | per frame | speed-up vs "
            "fp32 (CPU time) | (wall time) | within bound |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for i, r in enumerate(report["trials"], 1):
            frame = r.get("max_abs_delta_p_fake_frame")
            lines.append(
                f"| {i} | {r['configuration']} | {r['why']} | {r['max_abs_delta_p_fake']:.4f} | "
                f"{'' if frame is None else f'{frame:.3f}'} | {r['speedup']:.2f}x | "
                f"{r.get('speedup_wall') or 0:.2f}x | {'yes' if r['within_bound'] else 'no'} |"
            )
        lines.append("")
    md.write_text("\n".join(lines))
    return js, md
