"""SCRFD graph rewrite to batch-dynamic: structure, proof against batch-1 runs, file handling."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from core.errors import ArtifactNotFoundError, EngineError, ModelFormatError
from core.hashing import sha256_file
from preprocess.scrfd_graph import (
    META_REWRITE,
    META_SOURCE_SHA256,
    META_VERIFIED_MAX_ABS_DIFF,
    REWRITE_TAG,
    cpu_detector_model,
    fuse_sibling_convs,
    inspect_scrfd_graph,
    load_detector_graph,
    make_batch_dynamic,
    rewrite_batch_dynamic,
    rewrite_path,
    verify_batched,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"
VIDEOS = SHARED / "videos"

pytestmark = pytest.mark.skipif(
    not (MODELS / "det_500m.onnx").is_file(),
    reason=f"shared test models not found in {MODELS} (set DFE_SHARED)",
)

PACKS = ["det_500m", "det_2.5g"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DFE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def copy_model(name: str, folder: Path) -> Path:
    src = MODELS / f"{name}.onnx"
    if not src.is_file():
        pytest.skip(f"{src} not present")
    dst = folder / src.name
    shutil.copy(src, dst)
    dst.chmod(0o644)
    return dst


@pytest.fixture(scope="module")
def real_frames() -> list[np.ndarray]:
    """Three different real frames: two 1080p clips and a 480p one."""
    av = pytest.importorskip("av")
    picks = [
        ("dfdc_abofeumbvv_fake.mp4", 5),
        ("dfdc_like_real.mp4", 40),
        ("pair480p_fake.mp4", 20),
    ]
    frames = []
    for name, index in picks:
        path = VIDEOS / name
        if not path.is_file():
            pytest.skip(f"{path} not present")
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i == index:
                    frames.append(frame.to_ndarray(format="bgr24"))
                    break
    return frames


def head_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Transpose"]


# ----------------------------------------------------------------------------------- inspection


def test_inspect_recognises_the_three_layouts() -> None:
    assert inspect_scrfd_graph(onnx.load(MODELS / "det_500m.onnx")).kind == "interleaved"
    dyn = MODELS / "scrfd_500m_kps_dynamic.onnx"
    if dyn.is_file():
        assert inspect_scrfd_graph(onnx.load(dyn)).kind == "batched_dynamic"
    fixed = MODELS / "scrfd_500m_kps_640x640.onnx"
    if fixed.is_file():
        layout = inspect_scrfd_graph(onnx.load(fixed))
        assert layout.kind == "batched_fixed" and layout.input_shape == (1, 3, 640, 640)


# -------------------------------------------------------------------------------------- rewrite


@pytest.mark.parametrize("name", PACKS)
def test_rewrite_structure(name: str) -> None:
    path = MODELS / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    original = onnx.load(path)
    before = original.SerializeToString()
    rewritten = rewrite_batch_dynamic(original, source_sha256="abc")
    assert original.SerializeToString() == before, "the input model must not be modified"
    onnx.checker.check_model(rewritten, full_check=True)
    assert all(tuple(n.attribute[0].ints) == (0, 2, 3, 1) for n in head_nodes(rewritten))
    dims = [d.dim_param or d.dim_value for d in rewritten.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    for out in rewritten.graph.output:
        odims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        assert odims[0] == "batch" and len(odims) == 3 and odims[2] in (1, 4, 10)
    meta = {p.key: p.value for p in rewritten.metadata_props}
    assert meta[META_REWRITE] == REWRITE_TAG and meta[META_SOURCE_SHA256] == "abc"
    inspect_scrfd_graph(rewritten)  # now batch-aware
    assert inspect_scrfd_graph(rewritten).kind == "batched_dynamic"


@pytest.mark.parametrize("name", PACKS)
def test_rewrite_batch_of_real_frames_equals_batch_1_runs(
    name: str, real_frames: list[np.ndarray]
) -> None:
    path = MODELS / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    original = onnx.load(path)
    worst = verify_batched(original, rewrite_batch_dynamic(original), frames=real_frames)
    assert worst <= 1e-4
    assert worst < 1e-5  # in practice it is 0 or float32 noise


def test_original_pack_interleaves_a_batch(real_frames: list[np.ndarray]) -> None:
    """Documents the bug the rewrite fixes (InsightFace #2878/#2879): relaxing the batch of the
    shipped graph runs, but rows come out ordered (h, w, n, anchor)."""
    model = onnx.load(MODELS / "det_500m.onnx")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])
    import cv2

    blob = np.stack(
        [
            (cv2.resize(f, (640, 640))[:, :, ::-1].transpose(2, 0, 1) - 127.5) / 128
            for f in real_frames
        ]
    ).astype(np.float32)
    name = session.get_inputs()[0].name
    batched = session.run(None, {name: blob})[0]  # stride-8 scores, (80*80*N*2, 1)
    single = [session.run(None, {name: blob[i : i + 1]})[0] for i in range(3)]
    naive = np.split(batched, 3)
    assert max(np.abs(a - b).max() for a, b in zip(naive, single, strict=True)) > 1e-2
    untangled = batched.reshape(80, 80, 3, 2, 1).transpose(2, 0, 1, 3, 4).reshape(3, -1, 1)
    for i in range(3):
        np.testing.assert_allclose(untangled[i], single[i], atol=1e-5)


def test_verify_batched_catches_a_wrong_rewrite(real_frames: list[np.ndarray]) -> None:
    original = onnx.load(MODELS / "det_500m.onnx")
    wrong = rewrite_batch_dynamic(original)
    for node in head_nodes(wrong):
        del node.attribute[0].ints[:]
        node.attribute[0].ints.extend([0, 3, 2, 1])  # swaps h and w: same shape, wrong order
    with pytest.raises(ModelFormatError, match="differ"):
        verify_batched(original, wrong, frames=real_frames)
    with pytest.raises(ModelFormatError, match="does not run on a batch of 3"):
        verify_batched(original, original, frames=real_frames)  # declared batch 1
    relaxed = onnx.ModelProto()
    relaxed.CopyFrom(original)
    relaxed.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(ModelFormatError, match="does not hold"):
        verify_batched(original, relaxed, frames=real_frames)  # runs, but 2-D interleaved


# ---------------------------------------------------------------------------------- unrecognised


def test_unrecognised_layouts_raise(tmp_path: Path) -> None:
    model = onnx.load(MODELS / "det_500m.onnx")
    bad_perm = onnx.ModelProto()
    bad_perm.CopyFrom(model)
    del head_nodes(bad_perm)[0].attribute[0].ints[:]
    head_nodes(bad_perm)[0].attribute[0].ints.extend([0, 1, 2, 3])
    with pytest.raises(ModelFormatError, match=r"expected perm \[2, 3, 0, 1\]"):
        inspect_scrfd_graph(bad_perm)

    five = onnx.ModelProto()
    five.CopyFrom(model)
    del five.graph.output[5:]
    with pytest.raises(ModelFormatError, match="found 5"):
        inspect_scrfd_graph(five)

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model at all")
    with pytest.raises(ModelFormatError, match="not a readable ONNX model"):
        make_batch_dynamic(garbage)
    with pytest.raises(ArtifactNotFoundError):
        make_batch_dynamic(tmp_path / "missing.onnx")


# ----------------------------------------------------------------------------------------- files


def test_make_batch_dynamic_saves_in_the_cache_and_reuses(workdir: Path, tmp_path: Path) -> None:
    """The rewrite goes to the cache of derived graphs, keyed by the source's sha256 and the
    rewrite version, never next to the user's file; an up-to-date rewrite is reused."""
    src = copy_model("det_500m", workdir)
    out = make_batch_dynamic(src)
    sha = sha256_file(src)
    assert (
        out == rewrite_path(src, sha) == tmp_path / "cache" / f"det_500m.{sha[:16]}.v1.batched.onnx"
    )
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta[META_SOURCE_SHA256] == sha and meta[META_REWRITE] == REWRITE_TAG
    assert float(meta[META_VERIFIED_MAX_ABS_DIFF]) <= 1e-4
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    mtime = out.stat().st_mtime_ns
    assert make_batch_dynamic(src) == out
    assert out.stat().st_mtime_ns == mtime, "an up-to-date rewrite is reused"
    assert [p.name for p in workdir.iterdir()] == ["det_500m.onnx"]


def test_load_detector_graph_reads_the_graph_once(workdir: Path) -> None:
    src = copy_model("det_500m", workdir)
    graph = load_detector_graph(src, verify=False)
    assert graph.source == src and graph.rewritten and graph.layout == "interleaved"
    assert graph.source_sha256 == sha256_file(src) and graph.sha256 == sha256_file(graph.path)
    assert graph.input_dims == (None, 3, None, None) and len(graph.output_names) == 9
    assert graph.output_channels == (1, 1, 1, 4, 4, 4, 10, 10, 10)
    again = load_detector_graph(src)
    assert again == graph  # found in the cache: the same graph, the same digests
    dynamic = load_detector_graph(copy_model("scrfd_500m_kps_dynamic", workdir), verify=False)
    assert not dynamic.rewritten and dynamic.sha256 == dynamic.source_sha256


def test_make_batch_dynamic_never_reuses_a_stale_rewrite(workdir: Path) -> None:
    src = copy_model("det_500m", workdir)
    out = make_batch_dynamic(src, verify=False)
    other = MODELS / "det_2.5g.onnx"
    if not other.is_file():
        pytest.skip("det_2.5g.onnx not present")
    shutil.copy(other, src)  # the source changes under the same name
    again = make_batch_dynamic(src, verify=False)
    assert again != out and again.parent == out.parent
    meta = {p.key: p.value for p in onnx.load(again).metadata_props}
    assert meta[META_SOURCE_SHA256] == sha256_file(other)
    # a rewrite whose metadata names another source is not used, even at the expected path
    shutil.copy(out, again)
    assert make_batch_dynamic(src, verify=False) == again
    meta = {p.key: p.value for p in onnx.load(again).metadata_props}
    assert meta[META_SOURCE_SHA256] == sha256_file(other)


def test_read_only_source_folder_and_a_shipped_rewrite(workdir: Path, tmp_path: Path) -> None:
    """A read-only models folder works (nothing is written there anyway), and a current rewrite
    shipped next to the source (as in the shared test models) is used as it is."""
    src = copy_model("det_500m", workdir)
    shipped = make_batch_dynamic(src, workdir / "det_500m.batched.onnx", verify=False)
    workdir.chmod(0o555)
    try:
        assert make_batch_dynamic(src) == shipped
        assert not (tmp_path / "cache").exists()
        shutil.copy(MODELS / "det_2.5g.onnx", tmp_path / "det_2.5g.onnx")
        out = make_batch_dynamic(tmp_path / "det_2.5g.onnx", verify=False)
        assert out.parent == tmp_path / "cache"
    finally:
        workdir.chmod(0o755)


def test_unwritable_cache_is_an_error_that_says_what_to_set(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = copy_model("det_500m", workdir)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    monkeypatch.setenv("DFE_CACHE", str(locked))
    try:
        with pytest.raises(EngineError, match="DFE_CACHE"):
            make_batch_dynamic(src, verify=False)
    finally:
        locked.chmod(0o755)
    assert [p.name for p in workdir.iterdir()] == ["det_500m.onnx"]


def test_make_batch_dynamic_explicit_destination(workdir: Path, tmp_path: Path) -> None:
    src = copy_model("det_2.5g", workdir)
    dst = tmp_path / "elsewhere" / "b.onnx"
    assert make_batch_dynamic(src, dst) == dst
    assert inspect_scrfd_graph(onnx.load(dst)).kind == "batched_dynamic"


def test_already_dynamic_model_is_used_as_it_is(workdir: Path) -> None:
    src = copy_model("scrfd_500m_kps_dynamic", workdir)
    assert make_batch_dynamic(src) == src
    assert [p.name for p in workdir.iterdir()] == [src.name]


def test_fixed_batch_reexport_gets_its_batch_relaxed(workdir: Path) -> None:
    src = copy_model("scrfd_500m_kps_640x640", workdir)
    out = make_batch_dynamic(src)
    assert out != src
    model = onnx.load(out)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 640, 640]
    # same head nodes as the source: only declarations changed
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in onnx.load(src).graph.node]


# ------------------------------------------------------------------------------ CPU head fusion


def _letterboxed_blob(frames: list[np.ndarray]) -> np.ndarray:
    from preprocess.scrfd import letterbox, to_blob

    return to_blob(np.stack([letterbox(f, (640, 384))[0] for f in frames]))


def _outputs(model: onnx.ModelProto | Path | bytes, blob: np.ndarray) -> list[np.ndarray]:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        source if isinstance(source, bytes) else str(source),
        opts,
        providers=["CPUExecutionProvider"],
    )
    return sess.run(None, {sess.get_inputs()[0].name: blob})


def test_fused_head_convolutions_give_bit_identical_outputs(
    workdir: Path, real_frames: list[np.ndarray]
) -> None:
    batched = make_batch_dynamic(copy_model("det_500m", workdir))
    model = onnx.load(str(batched))
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    fused = fuse_sibling_convs(model)
    # one set per stride (8, 16, 32): scores, boxes, landmarks
    assert len(fused) == 3 and all(len(outputs) == 3 for outputs in fused)
    assert sum(n.op_type == "Conv" for n in model.graph.node) == convs - 6
    assert sum(n.op_type == "Split" for n in model.graph.node) == 3
    onnx.checker.check_model(model)
    blob = _letterboxed_blob(real_frames)
    ref, got = _outputs(batched, blob), _outputs(model, blob)
    assert len(ref) == len(got) == 9
    for r, g in zip(ref, got, strict=True):
        assert r.shape == g.shape and np.array_equal(r, g)
    assert cpu_detector_model(batched) == model.SerializeToString()


def test_cpu_detector_model_keeps_the_graph_when_fusion_is_not_exact(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import preprocess.scrfd_graph as scrfd_graph

    batched = make_batch_dynamic(copy_model("det_500m", workdir))
    real_fuse = scrfd_graph.fuse_sibling_convs

    def off_by_a_little(model: onnx.ModelProto) -> list[list[str]]:
        fused = real_fuse(model)
        w = next(i for i in model.graph.initializer if i.name.endswith("_fused_B"))
        bias = onnx.numpy_helper.to_array(w).copy()
        bias[0] += np.float32(1e-4)  # the box of one anchor moves by ~1e-4 of a stride
        w.CopyFrom(onnx.numpy_helper.from_array(bias, w.name))
        return fused

    monkeypatch.setattr(scrfd_graph, "fuse_sibling_convs", off_by_a_little)
    assert cpu_detector_model(batched) == batched
    # nothing to fuse (det_2.5g's heads): the file as it is
    batched_25 = make_batch_dynamic(copy_model("det_2.5g", workdir))
    assert cpu_detector_model(batched_25) == batched_25
