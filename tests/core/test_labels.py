"""The ``file,label`` reader shared by ``dfe eval`` and ``dfe train`` (``core.labels``)."""

from __future__ import annotations

import pytest

from core.errors import InvalidInputError
from core.labels import read_labels


def test_read_labels_with_or_without_header_and_root(tmp_path):
    (tmp_path / "h.csv").write_text("file,label\nx.mp4,real\n/abs/y.mp4,FAKE\n")
    (tmp_path / "n.csv").write_text("x.mp4,REAL\n\nsub/y.mp4,FAKE\n")
    assert read_labels(tmp_path / "h.csv") == [
        (str(tmp_path / "x.mp4"), "REAL"),
        ("/abs/y.mp4", "FAKE"),
    ]
    assert read_labels(tmp_path / "n.csv", root="/data") == [
        ("/data/x.mp4", "REAL"),
        ("/data/sub/y.mp4", "FAKE"),
    ]
    (tmp_path / "bad.csv").write_text("x.mp4,REAL\ny.mp4,maybe\n")
    with pytest.raises(InvalidInputError, match=r"line 2.*REAL, FAKE"):
        read_labels(tmp_path / "bad.csv")
