"""The typed sidecar: every section read once at load, errors naming the file and the field,
the writers' JSON unchanged (a loaded sidecar writes back what it read), and section updates
keeping the rest of the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import ModelFormatError
from core.sidecar import (
    SIDECAR_NAME,
    CheckpointInfo,
    ClassifierGraph,
    FrameRange,
    Graphs,
    InputSpec,
    Int8Calibration,
    Int8Graph,
    ModelInfo,
    Sidecar,
    load_sidecar,
    update_sidecar,
    write_sidecar,
)
from core.verdict import Calibration
from tests.tiny_model import make_tiny_model


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_tiny_model(tmp_path / "model")


def _edit(model: Path, change) -> None:
    path = model / SIDECAR_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_sections_are_typed_attributes(tiny):
    spec = load_sidecar(tiny)
    assert isinstance(spec.checkpoint, CheckpointInfo) and spec.checkpoint.file == "tiny.pt"
    assert spec.seq_len == spec.checkpoint.seq_len == 20
    assert spec.graphs.classifier.explain.weights == "linear1.npy"
    assert spec.graphs.head is None and spec.graphs.classifier_int8 is None
    assert spec.graphs.classifier.inputs == {"frames": ("frames", 3, 112, 112)}
    assert spec.model.variant == spec.variant == "original"
    assert spec.crop_style == spec.preprocessing.crop_style == "scrfd"
    assert spec.demo is False and spec.sidecar.calibration is None
    assert not spec.calibration.calibrated and spec.calibration_sha256 is None


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda d: d["graphs"]["classifier"].pop("file"),
         "lacks the required field graphs.classifier.file"),
        (lambda d: d["model"].update(variant=3), "field model.variant is 3, expected a string"),
        (lambda d: d["checkpoint"].update(seq_len="20"),
         'field checkpoint.seq_len is "20", expected an integer'),
        (lambda d: d["checkpoint"].update(seq_len=True), "field checkpoint.seq_len is true"),
        (lambda d: d.update(demo="yes"), 'field demo is "yes", expected true or false'),
        (lambda d: d["graphs"]["classifier"].update(explain=[]),
         "field graphs.classifier.explain is []"),
        (lambda d: d["graphs"]["classifier"]["inputs"].update(frames=["frames", 3.5]),
         "field graphs.classifier.inputs.frames[1] is 3.5, expected an integer or a string"),
        (lambda d: d["input"].update(mean="grey"), 'field input.mean is "grey", expected a list'),
        (lambda d: d.update(reduce="median"), "reduce 'median'; supported values are"),
        (lambda d: d.update(labels={"x": "FAKE", "1": "REAL"}), "field labels has the key 'x'"),
        (lambda d: d["graphs"].update(classifier_int8={"file": 1}),
         "graphs.classifier_int8.file is 1"),
    ],
)  # fmt: skip
def test_a_damaged_field_is_named_with_the_file(tiny, change, said):
    _edit(tiny, change)
    with pytest.raises(ModelFormatError) as info:
        load_sidecar(tiny)
    message = str(info.value)
    assert str(tiny / SIDECAR_NAME) in message and said in message, message


def test_a_damaged_int8_record_says_how_to_rebuild_it(tiny):
    _edit(tiny, lambda d: d["graphs"].update(classifier_int8={"file": "x.onnx", "accuracy": 1}))
    with pytest.raises(ModelFormatError, match=r"accuracy is 1.*dfe build .*--precision int8"):
        load_sidecar(tiny)


def test_a_damaged_calibration_fails_on_use_and_can_be_replaced(tiny):
    """Read at load, raised on use (the engine refuses the model), and ``dfe calibrate`` can
    still write a new section."""
    _edit(tiny, lambda d: d.update(calibration={"temperature": "hot"}))
    spec = load_sidecar(tiny)
    with pytest.raises(ModelFormatError, match=rf"{SIDECAR_NAME}.*calibration"):
        _ = spec.calibration
    update_sidecar(tiny, calibration=Calibration(temperature=2.0, calibrated=True))
    assert load_sidecar(tiny).calibration.temperature == 2.0


def test_a_loaded_sidecar_writes_back_what_it_read(tiny):
    """``Sidecar.to_json`` is the file's content: written and read again it gives the same
    sections, key for key and in order, unknown top-level keys included (``dfe export``'s own
    file round-trips exactly: tests/export/test_export_parity.py)."""
    _edit(tiny, lambda d: d.update(note="kept", demo=True))
    first = load_sidecar(tiny).sidecar
    assert first.extra == {"note": "kept"} and first.demo
    write_sidecar(tiny / SIDECAR_NAME, first)
    text = (tiny / SIDECAR_NAME).read_text()
    second = load_sidecar(tiny).sidecar
    assert second == first
    assert list(json.loads(text))[:2] == ["schema", "schema_version"]
    assert json.dumps(second.to_json()) == json.dumps(
        {k: v for k, v in json.loads(text).items() if not k.startswith("schema")}
    )


def test_update_sidecar_patches_one_section_and_keeps_the_rest(tiny):
    _edit(tiny, lambda d: d.update(note="kept"))
    _edit(tiny, lambda d: d["checkpoint"].update(unknown_field=[1, 2]))
    spec = load_sidecar(tiny)
    record = Int8Graph(
        file="classifier.int8.onnx",
        sha256="0" * 64,
        calibration=Int8Calibration(videos=("a.mp4",), frames=FrameRange(start=1, step=2, count=3)),
    )
    path = update_sidecar(tiny, int8=record)
    data = json.loads(path.read_text())
    assert data["note"] == "kept" and data["checkpoint"]["unknown_field"] == [1, 2]
    assert data["graphs"]["classifier_int8"]["calibration"]["frames"] == {
        "start": 1,
        "step": 2,
        "count": 3,
    }
    again = load_sidecar(tiny)
    assert again.graphs.classifier_int8 == record
    assert "int8" not in again.precisions  # no such file: recorded, not runnable
    assert again.spec_sha256 == spec.spec_sha256  # a new graph is no change of the scoring


def test_spec_sha256_follows_the_scoring_sections_as_written(tiny):
    before = load_sidecar(tiny).spec_sha256
    _edit(tiny, lambda d: d["preprocessing"].update(crop_style="dlib"))
    assert load_sidecar(tiny).spec_sha256 != before


def test_sidecar_checks_its_values():
    graphs = Graphs(classifier=ClassifierGraph(file="c.onnx"))
    common = {"input": InputSpec(), "labels": {0: "FAKE", 1: "REAL"}, "graphs": graphs}
    Sidecar(model=ModelInfo(variant="original"), reduce="mean", **common)
    with pytest.raises(ModelFormatError, match=r"model\.variant 'other'"):
        Sidecar(model=ModelInfo(variant="other"), reduce="mean", **common)
    with pytest.raises(ModelFormatError, match="reduce 'max'"):
        Sidecar(model=ModelInfo(variant="original"), reduce="max", **common)
