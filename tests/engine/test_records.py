"""One record schema: JSONL, CSV and Arrow/Parquet all derive from Prediction's fields."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from engine.batch import RecordWriter
from engine.records import (
    JSON_COLUMNS,
    RECORD_FIELDS,
    Prediction,
    decode_json_columns,
    encode_json_columns,
    error_record,
)

RECORD = Prediction(
    video="v.mp4",
    status="ok",
    label="FAKE",
    confidence=71.5,
    p_fake=0.715,
    frames=2,
    faces=1,
    frame_p_fake=[0.7, 0.73],
    frame_indices=[0, 1],
    boxes=[[1, 2, 3, 4], None],
    crop_style="dlib",
    timings={"decode": 0.1, "total": 0.5},
    seq_len=2,
    sampling="first",
    reduce="mean",
    backend="ort",
    precision="fp32",
    model="/m",
    warnings=["1 frame(s) had no face"],
).to_record()


def test_record_fields_are_the_prediction_fields_in_order():
    assert tuple(f.name for f in dataclasses.fields(Prediction)) == RECORD_FIELDS
    assert tuple(RECORD) == RECORD_FIELDS


def test_csv_writes_every_field(tmp_path):
    out = tmp_path / "r.csv"
    with RecordWriter(out, mode="append") as w:
        w.write(RECORD)
        w.write(error_record("bad.mp4", "not a video"))
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == RECORD_FIELDS  # nothing dropped (crop_style was, once)
    assert rows[0]["crop_style"] == "dlib" and json.loads(rows[0]["boxes"]) == [[1, 2, 3, 4], None]
    assert json.loads(rows[0]["warnings"]) == RECORD["warnings"]
    assert rows[1]["status"] == "error" and rows[1]["error"] == "not a video"


def test_jsonl_writes_the_record_as_it_is(tmp_path):
    out = tmp_path / "r.jsonl"
    with RecordWriter(out, mode="append") as w:
        w.write(RECORD)
    assert json.loads(out.read_text()) == RECORD


def test_arrow_schema_covers_every_field_and_round_trips():
    pa = pytest.importorskip("pyarrow")
    from engine.records import arrow_schema

    schema = arrow_schema()
    assert schema.names == list(RECORD_FIELDS)
    assert set(JSON_COLUMNS) == {
        "boxes",
        "timings",
        "tracks",
        "detector_input",
        "colour",
        "decode",
        "timeline",
        "segments",
        "quality",
        "calibration",
        "provenance",
    }
    table = pa.Table.from_pylist([encode_json_columns(RECORD)], schema)
    assert decode_json_columns(table.to_pylist()[0]) == RECORD
