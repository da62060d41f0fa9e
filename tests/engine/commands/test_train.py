"""``dfe train``'s command line: every option comes from TrainConfig (and the detector fields of
EngineConfig), and parsing it imports no torch."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

from core.config import TRAIN_DETECTOR_FIELDS, EngineConfig, TrainConfig
from engine.cli import build_parser
from engine.options import config_from_args, flag_of


def _train_parser() -> argparse.ArgumentParser:
    return next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["train"]


def test_train_flags_are_generated_from_the_configs():
    text = _train_parser().format_help()
    for f in dataclasses.fields(TrainConfig):
        assert flag_of(f) in text, f.name
    for name in TRAIN_DETECTOR_FIELDS:
        f = next(f for f in dataclasses.fields(EngineConfig) if f.name == name)
        assert flag_of(f) in text, name


def test_train_arguments_map_to_the_config():
    args = build_parser().parse_args(
        ["train", "labels.csv", "--root", "/videos", "-o", "out", "--seq-len", "4",
         "--epochs", "12", "--lr", "1e-3", "--init", "model.pt", "--variant", "sequence",
         "--freeze-backbone", "--val-fraction", "0", "--no-augment", "--resume",
         "--crop-style", "dlib", "--models", "/m", "--no-download", "--no-size-probe"]
    )  # fmt: skip
    config = config_from_args(TrainConfig, args)
    assert config == TrainConfig(
        seq_len=4, epochs=12, lr=1e-3, init="model.pt", variant="sequence",
        freeze_backbone=True, val_fraction=0.0, augment=False, resume=True, crop_style="dlib",
    )  # fmt: skip
    detector = config_from_args(EngineConfig, args, only=TRAIN_DETECTOR_FIELDS)
    assert detector == EngineConfig(models_dir="/m", download=False, size_probe=False)
    assert str(args.root) == "/videos" and str(args.out_dir) == "out"


def test_train_help_imports_no_torch():
    code = (
        "import sys\n"
        "from engine.cli import build_parser\n"
        "build_parser().parse_args(['train', 'l.csv', '-o', 'o'])\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_train_reports_a_bad_labels_file_as_a_usage_error(tmp_path, capsys):
    from engine.cli import main

    (tmp_path / "labels.csv").write_text("a.mp4,FAKE\nb.mp4,maybe\n")
    code = main(["train", str(tmp_path / "labels.csv"), "-o", str(tmp_path / "out"),
                 "--init", "random", "--no-plots"])  # fmt: skip
    assert code == 2
    assert "supported values are REAL, FAKE" in capsys.readouterr().err
