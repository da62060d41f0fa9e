"""Checkpoint loading: accepted layouts, variant recognition, and one-paragraph errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="checkpoints are torch files (the `export` extra)")

from core.errors import ArtifactNotFoundError, CheckpointError  # noqa: E402
from network.checkpoint import load_checkpoint, parse_checkpoint_name  # noqa: E402


@pytest.fixture(scope="module")
def state_dict(original_ckpt):
    return torch.load(original_ckpt[0], weights_only=True)


def test_checkpoint_original_layout_has_322_keys_and_no_lstm_bias(original_ckpt):
    ck = load_checkpoint(original_ckpt[0])
    assert len(ck.state_dict) == 322
    assert "lstm.weight_ih_l0" in ck.state_dict and "lstm.weight_hh_l0" in ck.state_dict
    assert "lstm.bias_ih_l0" not in ck.state_dict
    assert (ck.variant, ck.lstm_bias, ck.variant_source, ck.layout) == (
        "original",
        False,
        "keys",
        "plain",
    )
    assert ck.name.seq_len == 20 and ck.name.accuracy == 87


@pytest.mark.parametrize(
    ("wrap", "layout"),
    [
        (lambda sd: {"module." + k: v for k, v in sd.items()}, "module-prefix"),
        (lambda sd: {"state_dict": sd, "epoch": 7}, "nested:state_dict"),
        (
            lambda sd: {
                "model_state_dict": {"module." + k: v for k, v in sd.items()},
                "optimizer": {"lr": torch.tensor(1e-5)},
            },
            "nested:model_state_dict+module-prefix",
        ),
    ],
)
def test_checkpoint_wrapped_layouts_load_identically(state_dict, tmp_path, wrap, layout):
    path = tmp_path / "wrapped.pt"
    torch.save(wrap(state_dict), path)
    ck = load_checkpoint(path)
    assert ck.layout == layout
    assert ck.state_dict.keys() == state_dict.keys()
    assert torch.equal(ck.state_dict["linear1.weight"], state_dict["linear1.weight"])


def test_checkpoint_sequence_variant_recognised_from_keys_or_flag(sequence_ckpt, original_ckpt):
    ck = load_checkpoint(sequence_ckpt[0])
    assert (ck.variant, ck.lstm_bias, ck.variant_source) == ("sequence", True, "keys")
    # a flag overrides the keys: a biased LSTM run the original way
    ck = load_checkpoint(sequence_ckpt[0], variant="original")
    assert (ck.variant, ck.lstm_bias, ck.variant_source) == ("original", True, "flag")
    ck = load_checkpoint(original_ckpt[0], variant="sequence")
    assert (ck.variant, ck.lstm_bias) == ("sequence", False)


def test_checkpoint_name_parsing():
    n = parse_checkpoint_name("model_93_acc_100_frames_celeb_FF_data.pt")
    assert (n.accuracy, n.seq_len, n.data) == (93, 100, "celeb_FF_data")
    n = parse_checkpoint_name("model_97acc_60_frames_FF_data.pt")  # the notebook's spelling
    assert (n.accuracy, n.seq_len, n.data) == (97, 60, "FF_data")
    assert parse_checkpoint_name("checkpoint.pt") is None


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def _bad_files(tmp: Path, sd: dict) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase the error must contain)."""
    files = {}
    p = tmp / "drive.pt"
    p.write_bytes(b"\xef\xbb\xbf<!DOCTYPE html><html><head><title>Google Drive</title>")
    files["html"] = (p, "HTML")
    p = tmp / "empty.pt"
    p.write_bytes(b"")
    files["empty"] = (p, "empty")
    full = tmp / "full.pt"
    torch.save(sd, full)
    p = tmp / "truncated.pt"
    p.write_bytes(full.read_bytes()[:50_000_000])
    full.unlink()
    files["truncated"] = (p, "truncated")
    p = tmp / "code.pt"
    torch.save({"x": _Evil()}, p)
    files["code"] = (p, "run code")
    p = tmp / "missing.pt"
    torch.save({k: v for k, v in sd.items() if not k.startswith("linear1")}, p)
    files["missing"] = (p, "Missing 2 keys")
    p = tmp / "extra.pt"
    torch.save({**sd, "lstm.weight_ih_l1": sd["lstm.weight_ih_l0"]}, p)
    files["extra"] = (p, "Unexpected 1 keys")
    p = tmp / "shape.pt"
    torch.save({**sd, "linear1.weight": torch.zeros(3, 2048)}, p)
    files["shape"] = (p, "expected [2, 2048], found [3, 2048]")
    p = tmp / "notes.pt"
    p.write_text("just some text\n")
    files["text"] = (p, "does not look like a PyTorch checkpoint")
    return files


@pytest.fixture(scope="module")
def bad_files(state_dict, tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad"), state_dict)


@pytest.mark.parametrize(
    "name", ["html", "empty", "truncated", "code", "missing", "extra", "shape", "text"]
)
def test_checkpoint_bad_file_raises_clear_error(bad_files, name):
    path, phrase = bad_files[name]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and phrase in msg


def test_checkpoint_missing_file_is_not_found(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("name", ["html", "truncated", "code", "shape"])
def test_checkpoint_cli_error_is_one_paragraph(bad_files, name, tmp_path, capfd):
    from engine.cli import main

    path, phrase = bad_files[name]
    code = main(["export", str(path), "-o", str(tmp_path / "o")])
    out, err = capfd.readouterr()
    assert code == 2
    err = err.strip()
    assert err.startswith("error: ") and "Traceback" not in err
    assert "\n\n" not in err and phrase in " ".join(err.split())
    assert not (tmp_path / "o" / "classifier.onnx").exists()
    assert "should-never-run" not in out


def test_training_record_describes_only_the_file_it_recorded(tmp_path):
    """`dfe export` takes the crop style and N of a `dfe train` checkpoint from its train.json,
    but only for the file whose sha256 the record holds."""
    import json

    from export.onnx_export import default_crop_style
    from network.checkpoint import LoadedCheckpoint, training_record

    record = {"crop_style": "scrfd", "seq_len": 4, "checkpoints": {"best.pt": {"sha256": "ab"}}}
    (tmp_path / "train.json").write_text(json.dumps(record))

    def ckpt(name, sha):
        return LoadedCheckpoint(
            path=tmp_path / name, sha256=sha, size_bytes=1, state_dict={}, variant="original",
            lstm_bias=False, variant_source="keys", layout="plain",
            name=parse_checkpoint_name(name),
        )  # fmt: skip

    assert training_record(ckpt("best.pt", "ab"))["seq_len"] == 4
    assert training_record(ckpt("best.pt", "cd")) is None  # overwritten since
    assert training_record(ckpt("other.pt", "ab")) is None
    # a published-style name means dlib crops, unless dfe train recorded otherwise
    named = "model_90_acc_4_frames_x.pt"
    assert default_crop_style(ckpt(named, "ef")) == "dlib"
    record["checkpoints"][named] = {"sha256": "ef"}
    (tmp_path / "train.json").write_text(json.dumps(record))
    assert default_crop_style(ckpt(named, "ef")) == "scrfd"
