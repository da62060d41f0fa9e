"""One source of options: the config dataclasses own every default and allowed value, and the
command line, the server and Ray are built from them."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from core.config import (
    BACKEND_NAMES,
    CPU_DETECTOR_BATCH,
    GPU_DETECTOR_BATCH,
    PRECISIONS,
    EngineConfig,
    RayConfig,
    SequenceConfig,
    TrainConfig,
    default_of,
    validate,
)
from core.errors import InvalidInputError
from engine.cli import build_parser
from engine.options import add_options, config_from_args, flag_of

CONFIGS = (EngineConfig, SequenceConfig, RayConfig, TrainConfig)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_option_has_help_and_round_trips_through_its_flags(cls):
    parser = argparse.ArgumentParser()
    add_options(parser, cls)
    defaults = config_from_args(cls, parser.parse_args([]))
    assert defaults == cls()  # the parser's defaults are the dataclass's, written once
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
        assert flag_of(f) in parser.format_help()


def test_flags_map_to_fields_in_one_place():
    parser = argparse.ArgumentParser()
    add_options(parser, EngineConfig)
    args = parser.parse_args(
        ["--backend", "ort", "--precision", "int8", "--batch-size", "7", "--models", "/m",
         "--no-download", "--input-size", "320", "--score-threshold", "0.6", "--face", "largest",
         "--margin", "0.1", "--no-face", "drop", "--crop-style", "dlib", "--threads", "2",
         "--detector-batch", "4", "--decode-backend", "opencv"]
    )  # fmt: skip
    config = config_from_args(EngineConfig, args)
    assert config == EngineConfig(
        backend="ort", precision="int8", batch_size=7, models_dir="/m", download=False,
        detector_input=320, score_threshold=0.6, face="largest", margin=0.1, no_face="drop",
        crop_style="dlib", intra_op_threads=2, detector_batch=4, decode_backend="opencv",
    )  # fmt: skip


@pytest.mark.parametrize(
    "command",
    ["predict", "serve", "score", "eval", "explain"],
)
def test_engine_commands_offer_every_engine_option(command):
    """Each command that loads an Engine has a flag for every EngineConfig field."""
    sub = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices[command]
    text = sub.format_help()
    for f in dataclasses.fields(EngineConfig):
        assert flag_of(f) in text, (command, f.name)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"backend": "magic"}, "supported values are auto, tensorrt"),
        ({"precision": "fp8"}, "supported values are fp32, fp16, bf16, int8"),
        ({"batch_size": 0}, "--batch-size must be >= 1"),
        ({"batch_size": True}, "--batch-size must be an integer"),
        ({"detector_input": 650}, "multiple of 32"),
        ({"score_threshold": 1.5}, r"--score-threshold must be in \[0, 1\]"),
        ({"margin": -0.1}, r"--margin must be >= 0.*\(EngineConfig.margin\)"),
        # not finite: refused up front (NaN passed every bound and failed each video later)
        ({"margin": float("nan")}, "--margin must be a finite number, got nan"),
        ({"score_threshold": float("inf")}, "--score-threshold must be a finite number"),
        ({"margin": float("-inf")}, "--margin must be a finite number"),
        ({"crop_style": "hog"}, "supported values are scrfd, dlib"),
        ({"face": "center"}, "supported values are score, largest"),
        ({"detector_batch": 0}, "--detector-batch must be >= 1"),
        # thread options: bounded above (a typo must not start 100000 threads), flag named
        (
            {"intra_op_threads": -1},
            r"--threads must be >= 0, got -1 \(EngineConfig.intra_op_threads\)",
        ),
        ({"intra_op_threads": 100000}, r"--threads must be <= 256, got 100000"),
        ({"compute_workers": 1000}, r"--compute-workers must be <= 256"),
        ({"detector_threads": 300}, r"--detector-threads must be <= 256"),
        ({"decode_threads": 257}, r"--decode-threads must be <= 256"),
    ],
)
def test_engine_config_rejects_bad_values_naming_the_supported_ones(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        EngineConfig(**kwargs)


def test_sequence_and_ray_configs_validate():
    with pytest.raises(InvalidInputError, match="--seq-len must be >= 1"):
        SequenceConfig(seq_len=0)
    with pytest.raises(InvalidInputError, match="sampling='random'"):
        SequenceConfig(sampling="random")
    with pytest.raises(InvalidInputError, match="--cpus-per-worker must be > 0"):
        RayConfig(cpus_per_worker=0)
    validate(RayConfig(cpus_per_worker=0.5, gpus_per_worker=0.5))


def test_detector_batch_default_depends_on_the_device():
    config = EngineConfig()
    assert config.detector_batch_for("ort") == CPU_DETECTOR_BATCH == 1
    assert config.detector_batch_for("torch-cuda") == GPU_DETECTOR_BATCH
    assert EngineConfig(detector_batch=3).detector_batch_for("ort") == 3


def test_detect_preprocess_and_build_run_the_detector_at_the_cpu_default():
    """`dfe detect`, `dfe preprocess` and the INT8 build take the detector batch from the same
    config: batch 1 on CPU, not 16 (issue 13)."""
    from engine.options import detector_config

    parser = build_parser()
    for argv in (["detect", "v.mp4"], ["preprocess", "v.mp4", "-o", "out"], ["build", "m"]):
        args = parser.parse_args(argv)
        assert detector_config(args).detector_batch_for("ort") == 1
    assert default_of(EngineConfig, "batch_size") == parser.parse_args(["build", "m"]).max_batch


def test_allowed_values_are_the_backends_and_precisions_implemented():
    from engine.backends import _REGISTRY, PRECISION_BACKENDS

    assert set(BACKEND_NAMES) == {"auto", *_REGISTRY}
    assert set(PRECISIONS) == set(PRECISION_BACKENDS)


def test_config_is_frozen_and_replace_validates():
    config = EngineConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 3  # type: ignore[misc]
    assert config.replace(batch_size=3).batch_size == 3
    with pytest.raises(InvalidInputError):
        config.replace(batch_size=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"seq_len": 8, "clip_frames": 4}, r"clip_frames \(4\) must be at least seq_len \(8\)"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"val": "v.csv", "val_fraction": 0.3}, "either a validation CSV"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"variant": "lstm"}, "supported values are original, sequence"),
        ({"device": "tpu"}, "supported values are auto, cpu, cuda"),
        ({"init": " "}, "imagenet, random or the path of a checkpoint"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        TrainConfig(**kwargs)


def test_train_config_defaults_are_the_originals_and_validation_share():
    c = TrainConfig()
    assert (c.lr, c.weight_decay, c.batch_size, c.epochs) == (1e-5, 1e-5, 4, 20)
    assert c.validation_share == 0.2 and c.frames_per_video == c.seq_len
    assert TrainConfig(val="v.csv").validation_share == 0.0
    assert TrainConfig(val_fraction=0.0).validation_share == 0.0
    assert TrainConfig(seq_len=4, clip_frames=10).frames_per_video == 10


def test_every_engine_and_sequence_option_says_whether_it_changes_a_score():
    """Provenance and --resume are derived from the ``score`` metadata: a new option that does
    not say is a test failure, not a field silently left out of every record."""
    import dataclasses

    from core.config import SequenceConfig, score_fields

    for cls in (EngineConfig, SequenceConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("score") in (True, False), f"{cls.__name__}.{f.name}"
    assert {"margin", "score_threshold", "detector", "faces", "crop_style", "backend"} <= set(
        score_fields(EngineConfig)
    )
    assert not {"intra_op_threads", "batch_size", "decode_workers", "hash_inputs"} & set(
        score_fields(EngineConfig)
    )
    assert score_fields(SequenceConfig) == ("seq_len", "sampling")
