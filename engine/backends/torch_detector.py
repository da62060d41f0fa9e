"""SCRFD in PyTorch: the detector converted by onnx2torch, batched, decoded on the device.

The batch-dynamic rewrite of the SCRFD graph (:func:`preprocess.scrfd_graph.make_batch_dynamic`)
is converted to a ``torch.nn.Module`` by `onnx2torch <https://github.com/ENOT-AutoDL/onnx2torch>`_
(the ``torch-gpu`` extra), proven equal to ONNX Runtime on that graph, and cached. Frames of any
number of videos run through it in real batches; the anchor decoding, the score threshold and the
NMS run on the device in torch (``torchvision.ops.nms``), and only the kept faces come back to the
host. The results are the :class:`preprocess.scrfd.Face` objects of
:meth:`preprocess.scrfd.SCRFDDetector.detect`, in the same order (highest score first).

What is the same as the ONNX Runtime detector, and why results match it (IoU >= 0.99, scores
within 1e-3, pinned by ``tests/engine/backends/test_torch_detector.py``):

- the letterbox is :func:`preprocess.scrfd.letterbox` itself (OpenCV, on the host), so the network
  sees the same uint8 pixels; the normalisation ``(x - 127.5) / 128`` in float32 on the device is
  exact, as on the host;
- on CUDA the convolutions run in IEEE fp32 (TF32 off, see
  :func:`use_ieee_fp32`);
- decoding follows InsightFace's ``SCRFD.detect`` in float32: anchor centres at ``(x, y) *
  stride``, boxes ``centre -/+ distance * stride``, keypoints ``centre + offset * stride``, then
  division by the letterbox scale;
- NMS keeps InsightFace's ``+1`` pixel convention (width = x2 - x1 + 1): ``torchvision.ops.nms``
  computes IoU without it, so the boxes it sees have 1 added to x2 and y2, which gives the same
  areas and intersections. Images of a batch are kept apart by shifting each image's boxes by a
  multiple of the coordinate range (the "coordinate trick" of ``torchvision.ops.batched_nms``,
  here with the range measured from the minimum too, since SCRFD boxes may start left of or above
  the frame), in float64 so that the shift loses no precision. A box is kept when its IoU with
  every kept box is ``<= nms_threshold``, as in InsightFace.

Caching: the converted module is saved (``torch.save``) in the cache of derived graphs
(:func:`preprocess.scrfd_graph.cache_dir`: ``$DFE_CACHE``, else
``~/.cache/deepfake-engine/graphs``) as ``<stem>.<sha256[:16]>.onnx2torch.pt`` with the source's
sha256, the rewrite and conversion tags and the torch / onnx2torch versions; a file whose record
differs is converted again. The file is a pickle (an FX ``GraphModule`` holds generated code), so
it is only loaded when it is owned by the current user and neither it nor its directory is
writable by others, like a bytecode cache,
and it is never written next to the model (model folders may be shared).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.config import DEFAULT_DETECTOR_INPUT_SHAPE
from core.deps import require
from core.errors import (
    ArtifactNotFoundError,
    BackendUnavailableError,
    InvalidInputError,
    ModelFormatError,
)
from core.hashing import file_sha256
from preprocess.scrfd import (
    BatchedSCRFD,
    DetectorConfig,
    Face,
    SCRFDSpec,
    anchor_centers,
    letterbox,
    spec_for_outputs,
)
from preprocess.scrfd_graph import REWRITE_TAG, cache_dir, inspect_scrfd_graph, make_batch_dynamic

log = logging.getLogger(__name__)

__all__ = [
    "CONVERT_TAG",
    "VERIFY_TOLERANCE",
    "TorchSCRFDDetector",
    "convert_scrfd",
    "converted_path",
    "verify_conversion",
]

#: Bumped whenever the conversion changes, so that older cached modules are converted again.
CONVERT_TAG = "dfe-scrfd-onnx2torch/1"
#: Max |difference| of any raw output between the converted module and ONNX Runtime (CPU, fp32).
VERIFY_TOLERANCE = 1e-4
_INPUT_MEAN = 127.5
_INPUT_STD = 128.0


# --------------------------------------------------------------------------------------------
# Conversion and its cache


def converted_path(source: str | os.PathLike[str], source_sha256: str) -> Path:
    """Where the converted module of ``source`` is cached: ``cache_dir()/<stem>.<sha[:16]>.
    onnx2torch.pt`` (``$DFE_CACHE`` or ``~/.cache/deepfake-engine/graphs``)."""
    return cache_dir() / f"{Path(source).stem}.{source_sha256[:16]}.onnx2torch.pt"


def _onnx2torch_version() -> str:
    try:
        return importlib.metadata.version("onnx2torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _private(path: Path) -> bool:
    """Owned by us and not writable by group or others (the file and its directory)."""
    try:
        for p in (path, path.parent):
            st = p.stat()
            if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return False
    except OSError:
        return False
    return True


def _load_cached(path: Path, key: dict[str, str], torch: Any) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    if not _private(path):
        log.warning(
            "ignoring cached detector module %s: it (or its folder) is not private to this user",
            path,
        )
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: convert again
        log.warning("ignoring unreadable cached detector module %s (%s)", path, exc)
        return None
    if not isinstance(payload, dict) or any(payload.get(k) != v for k, v in key.items()):
        log.info("cached detector module %s is stale; converting again", path)
        return None
    return payload


def _save_cached(path: Path, payload: dict[str, Any], torch: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            torch.save(payload, stream)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _verify_frames(count: int = 3, size: int = 640) -> np.ndarray:
    """Different deterministic letterboxed BGR images, ``(count, size, size, 3)`` uint8."""
    rng = np.random.default_rng(20260607)
    shapes = [(480, 640), (1080, 1920), (640, 480), (360, 360)]
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        h, w = shapes[i % len(shapes)]
        ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        noise = rng.normal(0, 60, size=(h, w, 3)).astype(np.float32)
        frame = np.clip(ramp * (i + 1) / count + noise + 40 * i, 0, 255).astype(np.uint8)
        out[i] = letterbox(frame, size)[0]
    return out


def _host_blob(images: np.ndarray) -> np.ndarray:
    x = images[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    return (x - np.float32(_INPUT_MEAN)) * np.float32(1.0 / _INPUT_STD)


def verify_conversion(
    batched_onnx: str | os.PathLike[str], module: Any, *, atol: float = VERIFY_TOLERANCE
) -> float:
    """Run ``module`` (on CPU) and ONNX Runtime (CPU) on the batch-dynamic graph with one batch
    of three different synthetic images at 640x640; return the largest absolute difference over
    every output, or raise :class:`ModelFormatError` when it exceeds ``atol`` or a shape
    differs."""
    torch = require("torch", purpose="the PyTorch SCRFD detector")
    ort = require("onnxruntime", purpose="checking the converted SCRFD detector")
    from core.onnx_session import session_options  # $DFE_ORT_THREADS threads, no spinning

    session = ort.InferenceSession(
        str(batched_onnx), sess_options=session_options(), providers=["CPUExecutionProvider"]
    )
    blob = _host_blob(_verify_frames())
    ref = session.run(None, {session.get_inputs()[0].name: blob})
    with torch.inference_mode():
        got = module(torch.from_numpy(blob))
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    if len(got) != len(ref):
        raise ModelFormatError(
            f"the converted detector has {len(got)} outputs, ONNX Runtime {len(ref)}"
        )
    worst = 0.0
    for k, (r, g) in enumerate(zip(ref, got, strict=True)):
        g = g.detach().float().numpy()
        if g.shape != r.shape:
            raise ModelFormatError(
                f"converted detector output {k} has shape {list(g.shape)}, ONNX Runtime "
                f"{list(r.shape)}"
            )
        worst = max(worst, float(np.max(np.abs(g - r), initial=0.0)))
    if not worst <= atol:
        raise ModelFormatError(
            f"the onnx2torch conversion differs from ONNX Runtime by up to {worst:.3g} "
            f"(tolerance {atol:g}); this onnx2torch/torch pair cannot run this detector"
        )
    return worst


def convert_scrfd(
    model_path: str | os.PathLike[str], *, reuse: bool = True, verify: bool = True
) -> tuple[Any, dict[str, Any]]:
    """The batch-dynamic SCRFD graph of ``model_path`` as a ``torch.nn.Module`` on the CPU in
    eval mode, and its record (``source_sha256``, versions, ``output_channels``,
    ``verified_max_abs_diff``, ``cache``: the cache file or None when it could not be written).

    Converted with ``onnx2torch.convert`` and checked with :func:`verify_conversion` before it
    is cached (``verify=False`` skips that; only for tests and tooling). A cached conversion of
    the same source, tags and versions is reused when ``reuse``.
    Raises :class:`MissingDependencyError` without torch / onnx2torch / onnxruntime,
    :class:`ArtifactNotFoundError` for a missing file, :class:`ModelFormatError` for a graph
    that is not SCRFD or a conversion that does not match.
    """
    torch = require("torch", purpose="the PyTorch SCRFD detector")
    src = Path(model_path)
    if not src.is_file():
        raise ArtifactNotFoundError(
            f"SCRFD model not found: {src}; pass the path of an .onnx file "
            "(weights.find_model('det_500m') locates or downloads the known ones)"
        )
    sha = file_sha256(src)  # once per file identity: the loader's digest
    key = {
        "tag": CONVERT_TAG,
        "rewrite": REWRITE_TAG,
        "source_sha256": sha,
        "torch": str(torch.__version__),
        "onnx2torch": _onnx2torch_version(),
    }
    target = converted_path(src, sha)
    if reuse:
        payload = _load_cached(target, key, torch)
        if payload is not None:
            log.info("using converted SCRFD detector %s", target)
            record = {k: v for k, v in payload.items() if k != "module"}
            return payload["module"].eval(), {**record, "cache": str(target)}

    onnx2torch = require("onnx2torch", purpose="the PyTorch SCRFD detector (--backend torch-cuda)")
    onnx = require("onnx")
    batched = make_batch_dynamic(src)
    graph = onnx.load(str(batched))
    layout = inspect_scrfd_graph(graph)
    # the loaded graph, not its path: given a path, onnx2torch writes a temporary file beside
    # it (into the user's or a read-only models folder)
    module = onnx2torch.convert(graph).eval()
    worst = verify_conversion(batched, module) if verify else None
    record = {
        **key,
        "output_channels": list(layout.output_channels),
        "verified_max_abs_diff": worst,
    }
    cache: str | None = str(target)
    try:
        _save_cached(target, {**record, "module": module}, torch)
        log.info("converted %s with onnx2torch; cached at %s", src.name, target)
    except OSError as exc:
        log.warning("could not cache the converted detector at %s (%s)", target, exc)
        cache = None
    return module, {**record, "cache": cache}


# --------------------------------------------------------------------------------------------
# The detector


def use_ieee_fp32(torch: Any) -> None:
    """Turn TF32 off for cuDNN convolutions and CUDA matmuls, process-wide, so that fp32 on CUDA
    is IEEE fp32 (torch's default allows TF32 in convolutions, ~1e-3 relative error)."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def _bucket(n: int, limit: int) -> int:
    """The smallest power of two >= ``n``, at most ``limit``."""
    return min(1 << (n - 1).bit_length(), limit)


class TorchSCRFDDetector(BatchedSCRFD):
    """SCRFD in PyTorch on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``), in real batches.

    Same options and results as :class:`preprocess.scrfd.SCRFDDetector` (``providers`` and
    ``intra_op_threads`` aside): :meth:`detect` takes HxWx3 uint8 BGR frames of any sizes and
    returns, per frame, its faces highest score first, in frame pixels. ``channels_last`` runs
    the network in the NHWC memory format. On CUDA, batches are padded to a power of two (at
    most ``batch_size``) so that cuDNN sees few shapes; the padding images are ignored. Safe to
    call from several threads (the host staging buffer is per thread).

    Raises :class:`MissingDependencyError` (the ``torch-gpu`` extra),
    :class:`BackendUnavailableError` when CUDA is asked for and torch cannot use it,
    :class:`ArtifactNotFoundError`,
    :class:`ModelFormatError` or :class:`InvalidInputError` for a bad model or option.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        input_size: int = 640,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        batch_size: int = 16,
        max_faces: int | None = None,
        input_shape: str = DEFAULT_DETECTOR_INPUT_SHAPE,
        device: str = "cpu",
        channels_last: bool = False,
    ) -> None:
        torch = require("torch", purpose="the PyTorch SCRFD detector")
        self._torchvision = require("torchvision", purpose="NMS of the PyTorch SCRFD detector")
        self._torch = torch
        self.config = DetectorConfig(
            input_size=input_size,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            batch_size=batch_size,
            max_faces=max_faces,
            input_shape=input_shape,
        )
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InvalidInputError(
                f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'"
            ) from exc
        if self.device.type not in ("cpu", "cuda"):
            raise InvalidInputError(
                f"device={device!r} is not supported; supported values are cpu, cuda, cuda:N"
            )
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailableError(
                    f"the PyTorch SCRFD detector was asked to run on {device}, but CUDA is not "
                    f"available to torch {torch.__version__} (no NVIDIA GPU or a CPU-only build); "
                    "use device='cpu'"
                )
            use_ieee_fp32(torch)
        self.channels_last = bool(channels_last)
        self.model_path = Path(model_path)
        module, self.record = convert_scrfd(self.model_path)
        channels = self.record.get("output_channels")
        if channels is None:
            raise ModelFormatError(f"the converted detector of {self.model_path} has no record")
        self.spec: SCRFDSpec = spec_for_outputs(channels)
        size = self.config.input_size
        if size % self.spec.max_stride:
            raise InvalidInputError(
                f"input_size must be a multiple of {self.spec.max_stride} for this model "
                f"(strides {list(self.spec.strides)}), got {size}"
            )
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self._anchors: dict[tuple[int, int], tuple[Any, Any, list[int]]] = {}
        self._anchors_lock = threading.Lock()
        self._local = threading.local()
        log.info(
            "SCRFD %s on torch %s (%s), input %dx%d, converted by onnx2torch %s, max |diff| vs "
            "ONNX Runtime %s",
            self.model_path.name,
            self.device,
            "channels_last" if self.channels_last else "NCHW",
            size,
            size,
            self.record.get("onnx2torch"),
            self.record.get("verified_max_abs_diff"),
        )

    @property
    def providers(self) -> list[str]:
        """Where the network runs, in the spirit of ONNX Runtime's provider list."""
        return [f"torch:{self.device}"]

    def describe(self) -> dict[str, object]:
        return {
            "detector": self.model_path.name,
            "runtime": "torch",
            "device": str(self.device),
            "channels_last": self.channels_last,
            "converter": f"onnx2torch {self.record.get('onnx2torch')}",
            "verified_max_abs_diff": self.record.get("verified_max_abs_diff"),
        }

    # ------------------------------------------------------------------ public

    def forward_raw(self, images: Any) -> list[Any]:
        """The network's raw outputs for letterboxed uint8 BGR images ``(N, S, S, 3)`` (a numpy
        array or a torch tensor on any device): a list of ``(N, anchors, C)`` float32 tensors on
        the device, in the graph's output order. For benchmarks and tests."""
        torch = self._torch
        with torch.inference_mode():
            x = torch.as_tensor(images).to(self.device, non_blocking=True)
            return self._forward(x)

    # ------------------------------------------------------------------ internals

    def _anchor_table(self, height: int, width: int) -> tuple[Any, Any, list[int]]:
        """Anchor centres, strides and rows per level of a ``height`` x ``width`` input, on the
        device (cached per shape)."""
        key = (height, width)
        with self._anchors_lock:
            if key not in self._anchors:
                torch = self._torch
                centers, strides = [], []
                for stride in self.spec.strides:
                    c = anchor_centers(
                        height // stride, width // stride, stride, self.spec.num_anchors
                    )
                    centers.append(c)
                    strides.append(np.full((len(c), 1), stride, np.float32))
                rows = [
                    (height // s) * (width // s) * self.spec.num_anchors for s in self.spec.strides
                ]
                self._anchors[key] = (
                    torch.from_numpy(np.concatenate(centers)).to(self.device),
                    torch.from_numpy(np.concatenate(strides)).to(self.device),
                    rows,
                )
            return self._anchors[key]

    def _staging(self, n: int, height: int, width: int) -> Any:
        """A per-thread uint8 host buffer for ``n`` letterboxed images of one shape (pinned on
        CUDA), reused between calls of the same shape."""
        bufs = getattr(self._local, "bufs", None)
        if bufs is None:
            bufs = self._local.bufs = {}
        buf = bufs.get((height, width))
        if buf is None or buf.shape[0] < n:
            shape = (max(n, self.config.batch_size), height, width, 3)
            pin = self.device.type == "cuda"
            buf = self._torch.empty(shape, dtype=self._torch.uint8, pin_memory=pin)
            bufs[(height, width)] = buf
        return buf

    def _forward(self, x: Any) -> list[Any]:
        """uint8 BGR NHWC on the device -> raw outputs (padded to a bucket on CUDA)."""
        torch = self._torch
        n = x.shape[0]
        if self.device.type == "cuda":
            padded = _bucket(n, max(self.config.batch_size, n))
            if padded > n:
                x = torch.cat([x, x.new_zeros((padded - n, *x.shape[1:]))])
        blob = x.permute(0, 3, 1, 2).flip(1).float()  # BGR -> RGB, NCHW
        blob = blob.sub_(_INPUT_MEAN).mul_(1.0 / _INPUT_STD)  # exact, as on the host
        if self.channels_last:
            blob = blob.contiguous(memory_format=torch.channels_last)
        outs = self.module(blob)
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        height, width = int(x.shape[1]), int(x.shape[2])
        _, _, rows = self._anchor_table(height, width)
        if len(outs) != self.spec.num_outputs:
            raise ModelFormatError(f"expected {self.spec.num_outputs} outputs, got {len(outs)}")
        channels = self.spec.output_channels()
        for k, out in enumerate(outs):
            want = (x.shape[0], rows[k % self.spec.num_levels], channels[k])
            if tuple(out.shape) != want:
                raise ModelFormatError(
                    f"output {k} has shape {list(out.shape)}, expected {list(want)} for a "
                    f"{width}x{height} input; the converted model is not a batch-dynamic SCRFD"
                )
        return [o[:n] for o in outs]

    def _run_letterboxed(
        self, images: Sequence[np.ndarray], scales: Sequence[float]
    ) -> list[list[Face]]:
        """Letterboxed images of one shape, staged in a (pinned) host buffer, then
        :meth:`_run`."""
        height, width = images[0].shape[:2]
        host = self._staging(len(images), height, width)
        arr = host.numpy()
        for i, image in enumerate(images):
            arr[i] = image
        return self._run(host[: len(images)], np.asarray(scales, np.float32))

    def _run(self, images: Any, scales: np.ndarray) -> list[list[Face]]:
        """Letterboxed uint8 images ``(n, H, W, 3)`` (a pinned tensor or an array) -> faces."""
        torch = self._torch
        n = len(images)
        with torch.inference_mode():
            x = torch.as_tensor(images).to(self.device, non_blocking=True)
            outs = self._forward(x)
            scale = torch.from_numpy(np.asarray(scales, np.float32)).to(self.device)
            return self._decode(outs, scale, n, (int(x.shape[1]), int(x.shape[2])))

    def _decode(
        self, outs: list[Any], scales: Any, n: int, input_hw: tuple[int, int]
    ) -> list[list[Face]]:
        """Threshold, decode and NMS on the device; only the kept faces go to the host."""
        torch = self._torch
        spec = self.spec
        centers_all, strides_all, _ = self._anchor_table(*input_hw)
        levels = range(spec.num_levels)
        scores = torch.cat([outs[spec.score_index(lv)][:, :, 0] for lv in levels], dim=1)
        img, anchor = torch.nonzero(scores >= self.config.score_threshold, as_tuple=True)
        faces: list[list[Face]] = [[] for _ in range(n)]
        if img.numel() == 0:
            return faces
        # row-major nonzero: per image, by level then anchor (InsightFace's candidate order)
        cand = scores[img, anchor]
        stride = strides_all[anchor]
        centers = centers_all[anchor]
        dist = torch.cat([outs[spec.bbox_index(lv)] for lv in levels], dim=1)[img, anchor]
        dist = dist * stride
        scale = scales[img][:, None]
        boxes = torch.cat([centers - dist[:, :2], centers + dist[:, 2:]], dim=1) / scale
        kps = None
        if spec.use_kps:
            off = torch.cat([outs[spec.kps_index(lv)] for lv in levels], dim=1)[img, anchor]
            off = (off * stride).view(-1, spec.num_keypoints, 2)
            kps = (centers[:, None, :] + off) / scale[:, :, None]
        keep = self._nms(boxes, cand, img)
        rows = [boxes[keep], cand[keep, None]]
        if kps is not None:
            rows.append(kps[keep].flatten(1))
        table = torch.cat(rows, dim=1).cpu().numpy()
        owners = img[keep].cpu().numpy()
        limit = self.config.max_faces
        for row, owner in zip(table, owners):
            if limit is not None and len(faces[owner]) >= limit:
                continue
            points = None
            if kps is not None:
                k = row[5:]
                points = tuple((float(k[2 * j]), float(k[2 * j + 1])) for j in range(len(k) // 2))
            faces[owner].append(
                Face(box=tuple(float(v) for v in row[:4]), score=float(row[4]), kps=points)
            )
        return faces

    def _nms(self, boxes: Any, scores: Any, img: Any) -> Any:
        """Kept indices, grouped by image, highest score first within each image."""
        torch = self._torch
        b = boxes.double()
        b = torch.cat([b[:, :2], b[:, 2:] + 1.0], dim=1)  # InsightFace's +1 pixel convention
        span = b.max() - b.min() + 2.0
        shifted = b + (img.double() * span)[:, None]
        keep = self._torchvision.ops.nms(shifted, scores.double(), float(self.config.nms_threshold))
        return keep[torch.argsort(img[keep], stable=True)]
