"""Entry point of ``dfe bench`` and ``make bench``: prepare a model and clips, run, render."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmarks.report import render
from benchmarks.suite import SECTIONS, SuiteConfig, run_suite

log = logging.getLogger(__name__)


def _prepare_model(workdir: Path) -> tuple[Path, Path]:
    """The untrained demo checkpoint, exported (speed does not depend on the weights)."""
    from export.demo import make_demo_checkpoint
    from export.onnx_export import export_checkpoint

    ckpt = make_demo_checkpoint(workdir)
    model = workdir / "model"
    if not (model / "classifier.json").is_file():
        export_checkpoint(ckpt, model, seq_len=20, extra={"demo": True})
    if not (model / "classifier.int8.onnx").is_file():
        from engine.cli import main as dfe
        from engine.demo import default_models_dir

        build = ["build", str(model), "--precision", "int8", "--onnx-only"]
        if default_models_dir():
            build += ["--models", default_models_dir()]
        if dfe(build) != 0:
            log.warning("the INT8 graph could not be built; INT8 rows will be missing")
    return model, ckpt


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true", help="the full suite (default: quick)")
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="exported model dir (default: export the demo checkpoint)",
    )
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="its .pt, for the eager PyTorch baselines"
    )
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=None)


def run(args: argparse.Namespace) -> int:
    from engine.demo import default_models_dir, demo_videos, shared_dir
    from weights import find_model

    args.out.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        args.model, args.checkpoint = _prepare_model(args.out)
    videos = demo_videos(args.out)
    big = [v for v in videos if "480p" not in v.name] or videos
    small = [v for v in videos if "480p" in v.name]
    detector = find_model("det_500m", models_dir=default_models_dir())
    cfg = SuiteConfig(
        model_dir=args.model,
        checkpoint=args.checkpoint,
        videos=big,
        videos_480p=small,
        detector=detector,
        out=args.out,
        quick=not args.full,
    )
    log.info("benchmarking on %s (shared assets: %s)", [v.name for v in big], shared_dir())
    run_suite(cfg, args.sections)
    md, plots = render(args.out / "results.json")
    print(md.read_text())
    print(
        f"results: {args.out / 'results.json'}; report: {md}; plots: "
        + ", ".join(str(p) for p in plots)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run")
    add_arguments(p)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
