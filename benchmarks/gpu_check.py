"""The prepared check of the PyTorch GPU path (``make gpu-check``): one run on a GPU machine.

Made for a machine that has PyTorch with CUDA but no internet, no PyAV, no onnx2torch and no
TensorRT, and that receives files only as part of a copy of the checkout (64 MiB at most).

Here (a machine with the shared test assets and a package index)::

    python -m benchmarks.gpu_check --prepare      # make gpu-assets: wheels, detector, clips
    python -m benchmarks.gpu_check --dry-run      # the whole run on CPU with tiny sizes

There (from the repository root, with ``gpu_assets/`` carried)::

    python3 -m benchmarks.gpu_check                # make gpu-check

The run, each section in its own process with a hard time limit (a section that does not fit is
killed and recorded, the run goes on; the whole run stays under ``--budget`` seconds):

1. ``install``: the carried wheels (PyAV, onnx2torch) into ``gpu_assets/run/site`` with
   ``pip install --no-deps --no-index --target`` (unzipped when the interpreter has no pip); the
   project itself runs from the checkout (``PYTHONPATH``), nothing is built or downloaded.
2. ``env``: the GPU as CUDA names it, versions, CPU cores.
3. ``model``: a deterministic untrained checkpoint in the original key layout (BatchNorm
   re-estimated on real face crops of the carried clips, :func:`export.demo.make_demo_checkpoint`),
   exported with the project's exporter (its ONNX Runtime parity check included): the reference
   for the classifier's parity.
4. ``tests``: ``REQUIRE_GPU=1 pytest -m gpu`` on the PyTorch GPU tests (detector and classifier
   parity, ``--backend torch-cuda`` end to end); their parity figures are collected.
5. ``classifier``: crops/s per precision (fp32, fp16, bf16) and batch (64-1024), eager and with
   CUDA graphs, channels-last (one NCHW and one TF32 contrast), through ``infer`` (numpy in and out,
   what the engine gets) and on the device alone (CUDA events).
6. ``detector``: frames/s per batch at 640, ``detect()`` on 1080p frames and the network alone.
7. ``end_to_end``: videos/s at N=20 on the 1080p clips through the public ``Engine`` API
   (``--backend torch-cuda``: detection and classification on the GPU, decoding on the CPU
   cores), with the decoding ceiling and the ONNX Runtime CPU engine for contrast.
8. ``compile``: ``torch.compile`` (mode ``default``) of the classifier (fp16, channels-last, one
   batch), alone and under CUDA graphs, if time is left.

Results: ``benchmarks/results/gpu-<name>.json`` (``gpu``, ``classifier``, ``detector``,
``end_to_end``, ``versions``, ``cpu_cores``, ``parity``, ``tests``, ``sections``), a short table
on stdout, and the JSON and logs also under ``$OUT`` when it is set. ``--dry-run`` runs every
section on CPU with tiny sizes (CUDA-only parts skipped) and writes its JSON under ``gpu_run/``,
the working folder of every run (installed wheels, checkpoint, model, logs; never carried).
Timing: warm-up first, ``torch.cuda.synchronize()``/CUDA events around timed regions, medians
and quartiles (:mod:`benchmarks.common`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import Timing, machine_info, time_call, write_json

log = logging.getLogger("gpu_check")

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "gpu_assets"  # carried to the GPU machine: only what --prepare puts there
STATE = REPO / "gpu_run"  # never carried: installed wheels, checkpoint, model, caches, logs
CARRY_LIMIT = 64 * 2**20  # what the device tool carries: checkout + ignored paths
DETECTOR = "det_500m.onnx"
CLIPS_1080P = ("dfdc_abofeumbvv_fake.mp4", "dfdc_abqwwspghj_fake.mp4", "dfdc_like_fake.mp4")
CLIP_480P = "pair480p_real.mp4"
WHEELS = {"av": "18.1.0", "onnx2torch": "1.5.15"}
GPU_TESTS = (
    "tests/engine/backends/test_torch_detector.py",
    "tests/engine/backends/test_torch_backend.py",
    "tests/engine/test_engine_torch_cuda.py",
)
SECTIONS = ("env", "model", "tests", "classifier", "detector", "end_to_end", "compile")
# seconds per section (each also capped by what is left of the whole run's budget)
BUDGETS = {
    "install": 40,
    "env": 30,
    "model": 100,
    "tests": 120,
    "classifier": 130,
    "detector": 45,
    "end_to_end": 75,
    "compile": 100,
}
MIN_COMPILE_S = 45  # torch.compile is only tried with at least this much time left
DEFAULT_BUDGET = 450  # the whole run: under 8 minutes with room for start-up and copying


# ============================================================================================
# helpers


def _dump(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _quartiles(times: list[float]) -> Timing:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Timing(statistics.median(times), q[0], q[2], len(times))


def _rate(t: Timing, items: float) -> dict[str, float]:
    return {**{k: round(v, 1) for k, v in t.rate(items).items()}, **t.as_dict()}


class Deadline:
    """A section's time budget: ``left()`` seconds remain; ``over(need)`` when less than
    ``need`` seconds are left."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def over(self, need: float = 0.0) -> bool:
        return self.left() < need


def _device_timer(torch: Any, cuda: bool) -> Callable[..., Timing]:
    """Times ``fn`` on the device: CUDA events around each call after a synchronised warm-up
    (perf_counter on CPU)."""

    def run(fn: Callable[[], Any], *, warmup: int = 3, runs: int = 10) -> Timing:
        if not cuda:
            return time_call(fn, warmup=warmup, runs=runs)
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(runs):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        return _quartiles(times)

    return run


# ============================================================================================
# --prepare (here)


def _tracked_bytes() -> int:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    total = 0
    for name in out.decode().split("\0"):
        if name and (REPO / name).is_file():
            total += (REPO / name).stat().st_size
    return total


def prepare(
    assets: Path, shared: Path, check_python: str | None, state: Path = STATE
) -> dict[str, Any]:
    """Gather what the GPU machine needs into ``assets`` (git-ignored): the cp312 manylinux
    wheels of PyAV and onnx2torch, the detector and the test clips; write ``manifest.json`` and
    check that checkout + assets fit the 64 MiB the device tool carries."""
    from core.hashing import sha256_file

    wheels = assets / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    sources = [shared / "models" / DETECTOR] + [
        shared / "videos" / name for name in (*CLIPS_1080P, CLIP_480P)
    ]
    wanted = {src.parent.name: set() for src in sources}
    for src in sources:
        wanted[src.parent.name].add(src.name)
    for sub, names in wanted.items():
        folder = assets / sub
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        for stale in folder.iterdir():  # e.g. a batch-dynamic rewrite a run left here
            if stale.name not in names:
                stale.unlink()
    for src in sources:
        if not src.is_file():
            raise SystemExit(f"missing test asset {src} (set --shared or DFE_SHARED)")
        dst = assets / src.parent.name / src.name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)  # a real file: links do not travel
    for sub in wanted:
        # read-only, so that runs write the detector's batch-dynamic rewrite into their cache
        # (DFE_MODELS) instead of into the carried folder
        (assets / sub).chmod(0o555)
    if not all(any(wheels.glob(f"{name}-{v}-*.whl")) for name, v in WHEELS.items()):
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.12", "--implementation", "cp",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "manylinux2014_x86_64", "-d", str(wheels),
            *(f"{name}=={v}" for name, v in WHEELS.items()),
        ]  # fmt: skip
        log.info("downloading wheels: %s", " ".join(cmd))
        subprocess.run(cmd, check=True)
    files = sorted(p for p in assets.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        "files": {
            str(p.relative_to(assets)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in files
            if p.name != "manifest.json"
        }
    }
    assets_bytes = sum(f["bytes"] for f in manifest["files"].values())
    tracked = _tracked_bytes()
    manifest["assets_bytes"] = assets_bytes
    manifest["checkout_tracked_bytes"] = tracked
    manifest["total_bytes"] = assets_bytes + tracked
    manifest["limit_bytes"] = CARRY_LIMIT
    if check_python:
        manifest["wheel_check"] = _check_wheels(wheels, check_python, state)
    _dump(assets / "manifest.json", manifest)
    mib = manifest["total_bytes"] / 2**20
    print(f"gpu assets in {assets}: {len(files)} files, {assets_bytes / 2**20:.1f} MiB")
    print(f"what travels (tracked files + {assets.name}/): {mib:.1f} MiB of 64 MiB")
    if manifest["total_bytes"] > CARRY_LIMIT:
        raise SystemExit("over the 64 MiB the device tool carries: drop a clip")
    return manifest


def _check_wheels(wheels: Path, python: str, state: Path) -> dict[str, Any]:
    """Install the wheels with another interpreter (e.g. a Python 3.12 venv) into a scratch
    target and import PyAV there: proves the cp312 wheels install and load."""
    target = state / "wheel-check"
    shutil.rmtree(target, ignore_errors=True)
    cmd = [python, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target)]
    cmd += [str(p) for p in sorted(wheels.glob("*.whl"))]
    res = subprocess.run(cmd, capture_output=True, text=True)
    probe = (
        f"import sys; sys.path.insert(0, {str(target)!r}); import av, platform; "
        "print(platform.python_version(), av.__version__)"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    result = {
        "python": python,
        "pip_rc": res.returncode,
        "import_av": out.stdout.strip() or out.stderr.strip()[-300:],
        "onnx2torch_files": sorted(p.name for p in target.glob("onnx2torch*")),
    }
    print(f"wheel check with {python}: {result}")
    if res.returncode or out.returncode:
        raise SystemExit(f"the wheels do not install/load with {python}: {res.stderr[-2000:]}")
    return result


# ============================================================================================
# install (parent process)


def install(assets: Path, state: Path, deadline: Deadline) -> dict[str, Any]:
    """The carried wheels into ``state/site`` (pip ``--target``; unzipped without pip)."""
    site = state / "site"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    wheels = sorted((assets / "wheels").glob("*.whl"))
    result: dict[str, Any] = {"site": str(site), "wheels": [w.name for w in wheels]}
    if not wheels:
        raise RuntimeError(f"no wheels in {assets / 'wheels'}; run --prepare first")
    has_pip = (
        subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode
        == 0
    )
    if has_pip:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
        cmd += ["--disable-pip-version-check", "--target", str(site), *map(str, wheels)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=max(deadline.left(), 1))
        result["method"] = "pip install --no-deps --no-index --target"
        if res.returncode:
            raise RuntimeError(f"pip install failed: {res.stderr[-2000:]}")
    else:  # wheels are zip files; PyAV's bundled libraries are found through its RPATH
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
        result["method"] = "unzipped (this interpreter has no pip)"
    for lib in site.rglob("*.so*"):
        lib.chmod(lib.stat().st_mode | 0o111)
    result["project"] = f"PYTHONPATH={REPO} (run from the checkout, not installed)"
    return result


# ============================================================================================
# sections (each in its own process)


def section_env(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    info = machine_info()
    cuda = torch.cuda.is_available()
    versions = dict(info["versions"])
    for mod in ("onnx2torch",):
        try:
            import importlib.metadata

            versions[mod] = importlib.metadata.version(mod)
        except Exception:
            versions[mod] = None
    try:
        import av

        versions["av"] = av.__version__
        versions["av_path"] = str(Path(av.__file__).parent)
    except ImportError as exc:
        versions["av"] = f"not importable: {exc}"
    versions["python"] = info["python"]
    versions["cuda"] = torch.version.cuda
    versions["cudnn"] = torch.backends.cudnn.version() if cuda else None
    gpu = None
    extra: dict[str, Any] = {}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        gpu = torch.cuda.get_device_name(0)
        extra = {
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "device_count": torch.cuda.device_count(),
        }
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                 "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            extra["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    elif not ctx["dry_run"]:
        raise RuntimeError(f"CUDA is not available to torch {torch.__version__}")
    return {
        "gpu": gpu,
        "gpu_info": extra,
        "cpu": info["cpu"],
        "cpu_cores": os.cpu_count(),
        "memory_gb": info["memory_gb"],
        "versions": versions,
        "c_compiler": shutil.which("gcc") or shutil.which("cc"),
        "platform": info["platform"],
    }


def _real_crops(assets: Path, per_clip: int, clips: list[str]) -> Any:
    """BGR uint8 112x112 face crops of the carried clips (ONNX Runtime CPU detector)."""
    import numpy as np

    from preprocess.crop import crop_box, face_crop
    from preprocess.scrfd import SCRFDDetector
    from preprocess.video import read_video

    det = SCRFDDetector.from_file(assets / "models" / DETECTOR, batch_size=1)
    crops = []
    for name in clips:
        frames = read_video(assets / "videos" / name, per_clip * 5).frames[::5]
        for frame, faces in zip(frames, det.detect(frames)):
            box = crop_box(faces[0].box, frame.shape) if faces else None
            crops.append(face_crop(frame, box))
    return np.stack(crops)


def section_model(ctx: dict[str, Any]) -> dict[str, Any]:
    """A deterministic untrained checkpoint (BatchNorm on real crops), exported with parity."""
    from export.demo import make_demo_checkpoint
    from export.onnx_export import export_checkpoint

    assets, state, dry = ctx["assets"], ctx["state"], ctx["dry_run"]
    t0 = time.perf_counter()
    # 48 crops, as the test fixtures use: fewer leave BatchNorm statistics that make the model
    # oddly sensitive to rounding (bf16 parity failed with 4)
    crops = _real_crops(assets, 12, [*CLIPS_1080P, CLIP_480P])
    out: dict[str, Any] = {"calibration_crops": len(crops)}
    ckpt = make_demo_checkpoint(state / "checkpoint", seq_len=20, seed=0, calib=crops)
    out["checkpoint_s"] = round(time.perf_counter() - t0, 1)
    model = state / "model"
    shutil.rmtree(model, ignore_errors=True)
    t1 = time.perf_counter()
    result = export_checkpoint(
        ckpt,
        model,
        seq_len=20,
        parity_seq_lens=(1, 4) if dry else (1, 20, 60, 100),
        extra={"demo": True},
    )
    out["export_s"] = round(time.perf_counter() - t1, 1)
    out["model_dir"] = str(model)
    out["checkpoint"] = str(ckpt)
    parity = getattr(result, "parity", None)
    from core.sidecar import load_sidecar

    out["export_parity"] = parity if parity is not None else load_sidecar(model).sidecar.parity
    return out


def section_tests(ctx: dict[str, Any]) -> dict[str, Any]:
    """The GPU tests (CPU variants in a dry run), with their PARITY lines collected."""
    state, dry = ctx["state"], ctx["dry_run"]
    model = _load(state / "model.json").get("result", {}).get("model_dir")
    env = dict(os.environ)
    env.update(
        DFE_SHARED=str(ctx["assets"]),
        DFE_MODELS=str(state / "cache"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    if model:
        env["DFE_TEST_MODEL"] = model
    if dry:
        marker = "not gpu"
        env.pop("REQUIRE_GPU", None)
    else:
        marker = "gpu"
        env["REQUIRE_GPU"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-m", marker, "-q", "-s", "-rfEs",
           "-p", "no:cacheprovider", *GPU_TESTS]  # fmt: skip
    t0 = time.perf_counter()
    log_path = state / "logs" / "pytest.log"
    with log_path.open("w") as out:  # streamed, so a killed run still leaves what it printed
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    return {
        "command": " ".join(cmd),
        "marker": marker,
        "returncode": proc.returncode,
        **parse_pytest(log_path.read_text(errors="replace")),
        "seconds": round(time.perf_counter() - t0, 1),
        "model": model,
    }


def parse_pytest(text: str) -> dict[str, Any]:
    """Summary line, failures and the tests' ``PARITY {json}`` lines from pytest's output."""
    lines = text.splitlines()
    summary = [ln for ln in lines if re.search(r"\d+ (passed|failed|error|skipped)", ln)]
    parity = []
    for ln in lines:
        if ln.startswith("PARITY "):
            try:
                parity.append(json.loads(ln[7:]))
            except ValueError:
                continue
    return {
        "summary": summary[-1].strip("= ") if summary else (lines[-1] if lines else ""),
        "failures": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))],
        "parity": parity,
    }


def section_classifier(ctx: dict[str, Any]) -> dict[str, Any]:
    """Crops/s per precision, batch, memory format and CUDA graphs."""
    import numpy as np
    import torch

    from core.sidecar import load_sidecar
    from engine.backends import get_factory

    dry, deadline, save = ctx["dry_run"], ctx["deadline"], ctx["save"]
    cuda = torch.cuda.is_available() and not dry
    backend = "torch-cuda" if cuda else "torch"
    model = Path(_load(ctx["state"] / "model.json")["result"]["model_dir"])
    spec = load_sidecar(model)
    batches = [2, 4] if dry else [64, 128, 256, 512, 1024]
    precisions = ["fp32", "bf16"] if dry else ["fp16", "bf16", "fp32"]
    variants: list[tuple[str, dict[str, Any], list[int]]] = []
    for p in precisions:
        variants.append((p, {"cuda_graphs": False}, batches))
        if cuda:
            variants.append((p, {"cuda_graphs": True}, batches))
            variants.append((p, {"channels_last": False}, [256]))
    if cuda:
        variants.append(("fp32", {"tf32": True}, [256]))
    rng = np.random.default_rng(0)
    top = max(batches)
    crops = rng.normal(size=(top, 3, 112, 112)).astype(np.float32)
    timer = _device_timer(torch, cuda)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    runs = 3 if dry else 10
    for precision, options, sizes in variants:
        label = f"{precision} {options}"
        if deadline.over(8):
            skipped.append(label)
            continue
        opts = {"channels_last": True, **options} if cuda else dict(options)
        runner = get_factory(backend, precision=precision, max_batch=top, **opts)(
            "classifier", spec.classifier_file, spec=spec
        )
        for bs in sizes:
            if deadline.over(4):
                skipped.append(f"{label} batch {bs}")
                continue
            x = crops[:bs]
            t0 = time.perf_counter()
            host = time_call(lambda x=x, r=runner: r.infer({"frames": x}, ["logits"]), warmup=2,
                             runs=runs)  # fmt: skip
            t = runner.prepare(x)
            dev = timer(lambda t=t, r=runner: r.forward(t), warmup=3, runs=runs)
            row = {
                "precision": precision,
                "batch": bs,
                **runner.describe(),
                "infer_crops_per_s": _rate(host, bs),
                "device_crops_per_s": _rate(dev, bs),
                "seconds": round(time.perf_counter() - t0, 2),
            }
            rows.append(row)
            log.info(
                "classifier %s batch %d: infer %.0f crops/s, device %.0f crops/s",
                label, bs, row["infer_crops_per_s"]["median"], row["device_crops_per_s"]["median"],
            )  # fmt: skip
            save({"rows": rows, "skipped": skipped, "partial": True})
        del runner
        if cuda:
            torch.cuda.empty_cache()
    best = max(rows, key=lambda r: r["device_crops_per_s"]["median"], default=None)
    return {
        "backend": backend,
        "rows": rows,
        "skipped": skipped,
        "input": "random float32 crops (speed does not depend on content)",
        "best": None
        if best is None
        else {k: best[k] for k in ("precision", "batch", "channels_last", "cuda_graphs")}
        | {"device_crops_per_s": best["device_crops_per_s"]["median"]},
    }


def _frames_1080p(assets: Path, count: int) -> list[Any]:
    from preprocess.video import read_video

    frames: list[Any] = []
    per = max(1, count // len(CLIPS_1080P)) + 1
    for name in CLIPS_1080P:
        frames += read_video(assets / "videos" / name, per).frames
    return frames[:count]


def section_detector(ctx: dict[str, Any]) -> dict[str, Any]:
    """Frames/s of the PyTorch SCRFD at 640 per batch: detect() on 1080p frames, and the
    network alone on letterboxed frames already on the device."""
    import numpy as np
    import torch

    from engine.backends.torch_detector import TorchSCRFDDetector
    from preprocess.scrfd import SCRFDDetector, letterbox

    assets, dry, deadline, save = ctx["assets"], ctx["dry_run"], ctx["deadline"], ctx["save"]
    cuda = torch.cuda.is_available() and not dry
    device = "cuda" if cuda else "cpu"
    batches = [1, 2] if dry else [1, 8, 32, 64, 128, 256]
    frames = _frames_1080p(assets, max(batches))
    boxed = np.stack([letterbox(f, 640)[0] for f in frames])
    timer = _device_timer(torch, cuda)
    runs = 3 if dry else 7
    rows, skipped = [], []
    for channels_last in (False, True):
        sizes = batches if not channels_last else ([2] if dry else [64])
        for bs in sizes:
            if deadline.over(5):
                skipped.append(f"batch {bs} channels_last={channels_last}")
                continue
            det = TorchSCRFDDetector(
                assets / "models" / DETECTOR, batch_size=bs, device=device,
                channels_last=channels_last,
            )  # fmt: skip
            batch = frames[:bs]
            full = time_call(lambda b=batch, d=det: d.detect(b), warmup=2, runs=runs)
            x = torch.from_numpy(boxed[:bs]).to(device)
            net = timer(lambda x=x, d=det: d.forward_raw(x), warmup=3, runs=runs)
            rows.append(
                {
                    "batch": bs,
                    "device": device,
                    "channels_last": channels_last,
                    "detect_1080p_frames_per_s": _rate(full, bs),
                    "network_frames_per_s": _rate(net, bs),
                }
            )
            log.info(
                "detector batch %d%s: detect() %.0f frames/s, network %.0f frames/s",
                bs, " channels_last" if channels_last else "",
                rows[-1]["detect_1080p_frames_per_s"]["median"],
                rows[-1]["network_frames_per_s"]["median"],
            )  # fmt: skip
            save({"rows": rows, "skipped": skipped, "partial": True})
    ort_row = None
    if not deadline.over(10):
        ref = SCRFDDetector.from_file(assets / "models" / DETECTOR, batch_size=1)
        few = frames[: min(len(frames), 16)]
        t = time_call(lambda: ref.detect(few), warmup=1, runs=3)
        ort_row = {"batch": 1, "frames": len(few), "detect_1080p_frames_per_s": _rate(t, len(few))}
    return {
        "model": DETECTOR,
        "input_size": 640,
        "rows": rows,
        "skipped": skipped,
        "onnxruntime_cpu": ort_row,
        "note": "detect(): letterbox on the host (OpenCV), upload, network, decoding and NMS on "
        "the device, faces to the host; network: letterboxed uint8 frames already on the device",
    }


def section_end_to_end(ctx: dict[str, Any]) -> dict[str, Any]:
    """Videos/s at N=20 through Engine.predict_many: torch-cuda (GPU detector + classifier),
    the decoding ceiling, and ONNX Runtime CPU for contrast."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from engine.api import Engine
    from preprocess.video import read_video

    assets, state, dry = ctx["assets"], ctx["state"], ctx["dry_run"]
    deadline, save = ctx["deadline"], ctx["save"]
    cuda = torch.cuda.is_available() and not dry
    model = _load(state / "model.json")["result"]["model_dir"]
    n = 4 if dry else 20
    copies = 1 if dry else 16
    videos = [assets / "videos" / c for c in (CLIPS_1080P[:2] if dry else CLIPS_1080P)] * copies
    cores = os.cpu_count() or 2
    workers = 2 if dry else max(2, cores - 2)
    out: dict[str, Any] = {
        "n": n,
        "videos": len(videos),
        "clips": sorted({v.name for v in videos}),
        "decode_workers": workers,
        "cpu_cores": cores,
    }

    def decode_all() -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda v: read_video(v, n), videos))

    t = time_call(decode_all, warmup=1, runs=2 if dry else 3)
    out["decode_only_videos_per_s"] = _rate(t, len(videos))
    save({**out, "partial": True})

    configs = []
    if cuda:
        configs += [("torch-cuda", "fp16"), ("torch-cuda", "bf16"), ("torch-cuda", "fp32")]
    else:
        configs += [("torch", "fp32")]
    configs.append(("ort", "fp32"))
    runs = []
    for backend, precision in configs:
        if deadline.over(15):
            runs.append({"backend": backend, "precision": precision, "skipped": "out of time"})
            continue
        eng = Engine.load(
            model,
            backend=backend,
            precision=precision,
            models_dir=str(assets / "models"),
            download=False,
            batch_size=8 if dry else 256,
            detector_batch=(4 if dry else 64) if backend != "ort" else None,
            decode_workers=workers,
            max_in_flight=2 * workers,
        )
        t0 = time.perf_counter()
        warm = list(eng.predict_many(videos[: min(len(videos), 2 * len(CLIPS_1080P))], seq_len=n))
        warm_s = time.perf_counter() - t0
        preds: list[Any] = []

        def go(eng: Engine = eng, preds: list[Any] = preds) -> None:
            preds[:] = list(eng.predict_many(videos, seq_len=n))

        repeat = 1 if (dry or backend == "ort") else 3
        t = time_call(go, warmup=0, runs=repeat)
        ok = sum(p.ok for p in preds)
        stages = {
            k: round(statistics.mean(p.timings.get(k, 0.0) for p in preds if p.ok), 4)
            for k in ("decode", "detect", "crop", "classify", "total")
        }
        row = {
            "backend": backend,
            "precision": precision,
            "detector": type(eng.detector).__name__,
            "detector_device": str(getattr(eng.detector, "device", "cpu (onnxruntime)")),
            "batch_size": eng.config.batch_size,
            "detector_batch": eng.detector_batch,
            "videos_per_s": _rate(t, len(videos)),
            "frames_per_s": round(len(videos) * n / t.median, 1),
            "ok": ok,
            "warmup_s": round(warm_s, 2),
            "mean_stage_s_per_video": stages,
            "p_fake_first": [round(p.p_fake, 6) for p in preds[: len(CLIPS_1080P)] if p.ok],
            "warmup_ok": sum(p.ok for p in warm),
        }
        runs.append(row)
        log.info(
            "end to end %s %s: %.2f videos/s (%d/%d ok)",
            backend, precision, row["videos_per_s"]["median"], ok, len(videos),
        )  # fmt: skip
        save({**out, "runs": runs, "partial": True})
        del eng
        if cuda:
            torch.cuda.empty_cache()
    out["runs"] = runs
    return out


def section_compile(ctx: dict[str, Any]) -> dict[str, Any]:
    """torch.compile of the classifier (fp16, channels-last, one batch): compile time and
    crops/s, eager for contrast; then with CUDA graphs on top if time is left."""
    import numpy as np
    import torch

    from core.sidecar import load_sidecar
    from engine.backends import get_factory

    dry, deadline, save = ctx["dry_run"], ctx["deadline"], ctx["save"]
    cuda = torch.cuda.is_available() and not dry
    model = Path(_load(ctx["state"] / "model.json")["result"]["model_dir"])
    spec = load_sidecar(model)
    backend, precision = ("torch-cuda", "fp16") if cuda else ("torch", "fp32")
    bs = 2 if dry else 256
    x = np.random.default_rng(0).normal(size=(bs, 3, 112, 112)).astype(np.float32)
    timer = _device_timer(torch, cuda)
    rows = []
    # "default": inductor without autotuning; max-autotune compiles for minutes. A dry run
    # times eager only (inductor took 86 s for this model on the 2-core CPU).
    cases: list[dict[str, Any]] = [{"compile": None}]
    if cuda:
        cases += [{"compile": "default"}, {"compile": "default", "cuda_graphs": True}]
    for options in cases:
        if deadline.over(10):
            rows.append({**options, "skipped": "out of time"})
            continue
        runner = get_factory(backend, precision=precision, max_batch=bs, **options)(
            "classifier", spec.classifier_file, spec=spec
        )
        t = runner.prepare(x)
        t0 = time.perf_counter()
        runner.forward(t)
        if cuda:
            torch.cuda.synchronize()
        first = time.perf_counter() - t0
        dev = timer(lambda t=t, r=runner: r.forward(t), warmup=3, runs=10)
        rows.append(
            {
                **runner.describe(),
                "batch": bs,
                "first_call_s": round(first, 1),
                "device_crops_per_s": _rate(dev, bs),
            }
        )
        log.info("compile %s: first call %.1f s, %.0f crops/s", options, first,
                 rows[-1]["device_crops_per_s"]["median"])  # fmt: skip
        save({"rows": rows, "partial": True})
    return {"rows": rows}


RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "env": section_env,
    "model": section_model,
    "tests": section_tests,
    "classifier": section_classifier,
    "detector": section_detector,
    "end_to_end": section_end_to_end,
    "compile": section_compile,
}


def run_section(name: str, assets: Path, state: Path, dry_run: bool, seconds: float) -> int:
    """Child process: run one section, writing ``state/<name>.json`` as it goes."""
    path = state / f"{name}.json"

    def save(partial: dict[str, Any]) -> None:
        _dump(path, {"status": "running", "result": partial})

    ctx = {
        "assets": assets,
        "state": state,
        "dry_run": dry_run,
        "deadline": Deadline(seconds),
        "save": save,
    }
    t0 = time.perf_counter()
    try:
        result = RUNNERS[name](ctx)
    except BaseException as exc:
        import traceback

        _dump(
            path,
            {
                "status": "error",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-4000:],
                "result": _load(path).get("result"),
                "seconds": round(time.perf_counter() - t0, 1),
            },
        )
        raise
    _dump(path, {"status": "ok", "result": result, "seconds": round(time.perf_counter() - t0, 1)})
    return 0


# ============================================================================================
# the orchestrating parent


def _child_env(state: Path, assets: Path, site: Path | None, dry_run: bool) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(site)] if site else []
    paths.append(str(REPO))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["DFE_MODELS"] = str(state / "cache")
    env["DFE_SHARED"] = str(assets)
    env["PYTHONUNBUFFERED"] = "1"
    if dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU only, even where a GPU exists
        # one OpenMP thread: on a small shared CPU, spinning OpenMP threads slowed torch ~10x
        env["OMP_NUM_THREADS"] = "1"
    return env


def _run_child(name: str, seconds: float, env: dict[str, str], args: list[str], log_path: Path):
    """Run a section in a new process group; kill the group when it overruns."""
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--section", name, *args]
    with log_path.open("w") as logf:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=max(seconds, 1))
            return rc, False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None, True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _name_for(gpu: str | None, dry_run: bool) -> str:
    if dry_run or not gpu:
        return "dryrun-cpu"
    name = re.sub(r"^nvidia\s+", "", gpu.strip(), flags=re.I).lower()
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "gpu"


def orchestrate(args: argparse.Namespace) -> int:
    started = time.monotonic()
    total = Deadline(args.budget)
    assets: Path = args.assets.resolve()
    state: Path = args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    for name in SECTIONS:  # a skipped section's last result stays (e.g. the model, reused)
        if name not in args.skip:
            (state / f"{name}.json").unlink(missing_ok=True)
    out_env = os.environ.get("OUT")
    logs = state / "logs"
    logs.mkdir(exist_ok=True)
    handler = logging.FileHandler(logs / "gpu_check.log", mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger().addHandler(handler)
    sections: dict[str, dict[str, Any]] = {}

    def say(msg: str) -> None:
        log.info("[%5.0fs] %s", time.monotonic() - started, msg)

    say(f"gpu_check {'DRY RUN (CPU) ' if args.dry_run else ''}budget {args.budget:.0f}s")
    # 1. install
    site = None
    t0 = time.monotonic()
    try:
        inst = install(assets, state, Deadline(min(BUDGETS["install"], total.left())))
        site = Path(inst["site"])
        sections["install"] = {"status": "ok", "result": inst}
    except Exception as exc:
        sections["install"] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    sections["install"]["seconds"] = round(time.monotonic() - t0, 1)
    say(f"install: {sections['install']['status']} ({sections['install']['seconds']}s)")

    env = _child_env(state, assets, site, args.dry_run)
    child_args = ["--state", str(state), "--assets", str(assets)]
    if args.dry_run:
        child_args.append("--dry-run")
    wanted = [s for s in SECTIONS if s not in args.skip]
    for name in wanted:
        budget = min(BUDGETS[name], total.left() - 5)
        if args.dry_run and name == "compile":
            budget = min(budget, 45)
        if name == "compile" and not args.dry_run and budget < MIN_COMPILE_S:
            sections[name] = {"status": "skipped", "reason": f"only {budget:.0f}s left"}
            say(f"{name}: skipped ({budget:.0f}s left)")
            continue
        if budget < 5:
            sections[name] = {"status": "skipped", "reason": "the run's budget is spent"}
            say(f"{name}: skipped (budget spent)")
            continue
        needs_model = name not in ("env", "model", "detector")
        model_ok = sections.get("model", {}).get("status") == "ok" or (
            "model" in args.skip and _load(state / "model.json").get("status") == "ok"
        )
        if needs_model and not model_ok:
            sections[name] = {"status": "skipped", "reason": "no model (the model section failed)"}
            say(f"{name}: skipped (no model)")
            continue
        t0 = time.monotonic()
        # the child's own deadline is a little shorter than the kill, so it stops cleanly
        inner = ["--seconds", f"{max(budget - 8, 3):.0f}"]
        rc, killed = _run_child(name, budget, env, child_args + inner, logs / f"{name}.log")
        record = _load(state / f"{name}.json")
        if killed:
            partial = record.get("result")
            if name == "tests" and (logs / "pytest.log").is_file():  # what finished in time
                partial = parse_pytest((logs / "pytest.log").read_text(errors="replace"))
            record = {
                "status": "timeout",
                "error": f"killed after {budget:.0f}s (its hard limit)",
                "result": partial,
            }
        elif rc != 0 and record.get("status") != "error":
            record = {"status": "error", "error": f"exit code {rc}", "result": record.get("result")}
        elif name == "tests" and (record.get("result") or {}).get("returncode") != 0:
            result = record.get("result") or {}
            record["status"] = "failed"
            record["error"] = f"{result.get('summary')}: {'; '.join(result.get('failures', []))}"
        record["seconds"] = round(time.monotonic() - t0, 1)
        record["budget_s"] = round(budget)
        sections[name] = record
        say(f"{name}: {record['status']} ({record['seconds']}s of {budget:.0f}s)")
        if record["status"] != "ok":
            print(_tail(logs / f"{name}.log"), flush=True)

    results = assemble(sections, args)
    results["wall_s"] = round(time.monotonic() - started, 1)
    name = args.name or _name_for(results.get("gpu"), args.dry_run)
    out_dir = args.out if args.out else (state if args.dry_run else REPO / "benchmarks/results")
    path = Path(out_dir) / f"gpu-{name}.json"
    write_json(path, results)
    say(f"wrote {path}")
    if out_env:
        dest = Path(out_env)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / path.name)
        shutil.copytree(logs, dest / "gpu_check_logs", dirs_exist_ok=True)
        say(f"copied the JSON and logs to {dest}")
    print(table(results), flush=True)
    failed = [s for s, r in sections.items() if r.get("status") in ("error", "timeout", "failed")]
    return 1 if failed else 0


def assemble(sections: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    env = sections.get("env", {}).get("result") or {}
    res = lambda name: sections.get(name, {}).get("result")  # noqa: E731
    tests = res("tests") or {}
    return {
        "gpu": env.get("gpu"),
        "dry_run": bool(args.dry_run),
        "classifier": res("classifier"),
        "detector": res("detector"),
        "end_to_end": res("end_to_end"),
        "compile": res("compile"),
        "versions": env.get("versions"),
        "cpu_cores": env.get("cpu_cores"),
        "machine": {k: env.get(k) for k in ("gpu_info", "cpu", "memory_gb", "platform")},
        "parity": {
            "tests": tests.get("parity"),
            "export": (res("model") or {}).get("export_parity"),
        },
        "tests": {k: tests.get(k) for k in ("summary", "returncode", "failures", "marker")},
        "model": res("model"),
        "install": res("install"),
        "sections": {
            k: {kk: v.get(kk) for kk in ("status", "seconds", "budget_s", "error", "reason")}
            for k, v in sections.items()
        },
        "not_run": "TensorRT and ONNX Runtime CUDA were not run (not installable on this machine)",
    }


def _med(d: dict[str, Any] | None, key: str) -> str:
    if not d or key not in d:
        return "-"
    return f"{d[key]['median']:.0f}"


def _gains(rows: list[dict[str, Any]]) -> list[str]:
    """What the options buy (device crops/s), to choose the defaults from: CUDA graphs over eager
    at the engine's batch sizes, channels-last over NCHW at 256."""

    def rate(precision: str, batch: int, **opts: Any) -> float | None:
        for row in rows:
            if (
                row["precision"] == precision
                and row["batch"] == batch
                and all(row.get(k) == v for k, v in opts.items())
                and not row.get("tf32")
            ):
                return row["device_crops_per_s"]["median"]
        return None

    out = []
    for precision in ("fp16", "bf16", "fp32"):
        parts = []
        for batch in (64, 256):
            g = rate(precision, batch, cuda_graphs=True, channels_last=True)
            e = rate(precision, batch, cuda_graphs=False, channels_last=True)
            if g and e:
                parts.append(f"graphs b{batch} {100 * (g / e - 1):+.0f}%")
        cl = rate(precision, 256, cuda_graphs=False, channels_last=True)
        nchw = rate(precision, 256, cuda_graphs=False, channels_last=False)
        if cl and nchw:
            parts.append(f"channels_last b256 {100 * (cl / nchw - 1):+.0f}%")
        if parts:
            out.append(f"  {precision} gains: " + ", ".join(parts))
    return out


def table(r: dict[str, Any]) -> str:
    """The short table printed at the end."""
    lines = [f"== gpu_check: {r.get('gpu') or 'no GPU (dry run)'}  wall {r.get('wall_s')}s =="]
    for name, s in r["sections"].items():
        extra = s.get("error") or s.get("reason") or ""
        lines.append(f"  {name:<11} {s.get('status'):<8} {s.get('seconds')}s  {extra[:90]}")
    t = r.get("tests") or {}
    lines.append(f"tests: {t.get('summary')}")
    for p in (r.get("parity") or {}).get("tests") or []:
        if p.get("what") == "classifier":
            opts = "".join(f" {k}" for k in ("channels_last", "cuda_graphs") if p.get(k))
            lines.append(
                f"  parity classifier {p.get('device')} {p.get('precision')}{opts}: clip "
                f"{p['clip_max_delta']:.2g} frame {p['frame_max_delta']:.2g}"
            )
        else:
            lines.append(
                f"  parity detector {p.get('device')} batch {p.get('batch')}: IoU>= "
                f"{p['iou']:.4f} score<= {p['score']:.1e}"
            )
    c = r.get("classifier") or {}
    if c.get("rows"):
        lines.append("classifier crops/s (device | infer), channels_last unless noted:")
        for row in c["rows"]:
            tag = " graphs" if row.get("cuda_graphs") else ""
            tag += "" if row.get("channels_last") else " nchw"
            tag += " tf32" if row.get("tf32") else ""
            lines.append(
                f"  {row['precision']}{tag:<13} b{row['batch']:<5} "
                f"{_med(row, 'device_crops_per_s'):>7} | {_med(row, 'infer_crops_per_s'):>7}"
            )
        lines += _gains(c["rows"])
    d = r.get("detector") or {}
    if d.get("rows"):
        lines.append("detector frames/s at 640 (detect() on 1080p | network):")
        for row in d["rows"]:
            cl = " cl" if row["channels_last"] else ""
            lines.append(
                f"  b{row['batch']:<4}{cl:<3} {_med(row, 'detect_1080p_frames_per_s'):>7} | "
                f"{_med(row, 'network_frames_per_s'):>7}"
            )
    e = r.get("end_to_end") or {}
    if e:
        lines.append(
            f"end to end N={e.get('n')}, {e.get('videos')} videos, {e.get('decode_workers')} "
            f"decoders: decode only {_med(e, 'decode_only_videos_per_s')} videos/s"
        )
        for row in e.get("runs") or []:
            if "skipped" in row:
                lines.append(f"  {row['backend']} {row['precision']}: skipped")
                continue
            v = row["videos_per_s"]["median"]
            lines.append(
                f"  {row['backend']} {row['precision']}: {v:.2f} videos/s "
                f"({row['frames_per_s']:.0f} frames/s), {row['ok']}/{e.get('videos')} ok"
            )
    for row in (r.get("compile") or {}).get("rows") or []:
        if "skipped" in row:
            lines.append(f"compile {row.get('compile')}: skipped")
        else:
            lines.append(
                f"compile {row.get('compile')} graphs={row.get('cuda_graphs')}: first call "
                f"{row['first_call_s']}s, {_med(row, 'device_crops_per_s')} crops/s"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--prepare", action="store_true", help="gather wheels, detector, clips here")
    p.add_argument("--dry-run", action="store_true", help="everything on CPU with tiny sizes")
    p.add_argument("--assets", type=Path, default=ASSETS, help="the carried folder (gpu_assets)")
    p.add_argument("--shared", type=Path, default=Path(os.environ.get("DFE_SHARED", REPO.parent /
                   "shared")), help="test assets to copy from (--prepare)")  # fmt: skip
    p.add_argument("--check-python", help="--prepare: also install the wheels with this Python")
    p.add_argument("--name", help="results name (default: from the GPU name, e.g. h200)")
    p.add_argument("--out", type=Path, help="results folder (default: benchmarks/results)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds for the run")
    p.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to skip")
    p.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    p.add_argument("--state", type=Path, default=STATE, help="working folder (gpu_run)")
    p.add_argument("--seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("engine", "preprocess", "export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.prepare:
        prepare(args.assets.resolve(), args.shared.resolve(), args.check_python, args.state)
        return 0
    if args.section:
        return run_section(
            args.section, args.assets.resolve(), args.state.resolve(), args.dry_run, args.seconds
        )
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
