"""Entry point of ``dfe bench`` and ``make bench``: prepare a model and clips, run, render."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
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
        from engine.demo import default_models_dir

        # `dfe build` run as a program: the benchmarks sit below the command line (whose
        # `dfe bench` runs them), so they never import it
        build = [sys.executable, "-m", "engine.cli", "build", str(model), "--precision", "int8"]
        build.append("--onnx-only")
        if default_models_dir():
            build += ["--models", default_models_dir()]
        if subprocess.run(build, check=False).returncode != 0:
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
    p.add_argument(
        "--soak-entries",
        type=int,
        default=None,
        help="entries of each --full soak job (default: predict 10000, serve 2000, ray 5000)",
    )
    p.add_argument("--no-soak", action="store_true", help="--full without the soak jobs")


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
    if args.full and not args.no_soak:
        run_soaks(args.model, videos, args.out, args.soak_entries)
    return 0


def run_soaks(model: Path, videos: list[Path], out: Path, entries: int | None) -> None:
    """The soak jobs of ``benchmarks.soak`` (memory over a long job): ``dfe predict``, then
    ``dfe serve`` and the Ray pool when their extras are installed. Writes ``out/soak.json`` and
    ``out/soak.png``."""
    import importlib.util

    from benchmarks.soak import DEFAULT_ENTRIES, MODES, SoakConfig, default_bad, run_soak
    from engine.demo import default_models_dir

    needs = {"predict": (), "serve": ("fastapi", "uvicorn", "httpx"), "ray": ("ray",)}
    for mode in MODES:
        missing = [m for m in needs[mode] if importlib.util.find_spec(m) is None]
        if missing:
            log.warning("soak %s skipped: %s not installed", mode, ", ".join(missing))
            continue
        n = entries or DEFAULT_ENTRIES[mode]
        cfg = SoakConfig(
            model=model, models=default_models_dir(), videos=videos, entries=n, bad=default_bad(n)
        )
        s = run_soak(mode, cfg, out / "soak.json")["summary"]
        print(
            f"soak {mode}: {s['records']}/{s['inputs']} records (one each: "
            f"{s['one_record_each']}), RSS slope after warm-up {s['slope_mb_per_1000']} MB per "
            f"1,000 videos (bound {s['slope_bound_mb_per_1000']}), peak {s['peak_rss_mb']} MB"
        )
    print(f"soak: {out / 'soak.json'}, {out / 'soak.png'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run")
    add_arguments(p)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
