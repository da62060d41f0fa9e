"""``dfe train``: fine-tune or train the ResNeXt50 + LSTM classifier on labelled videos.

The original's training notebook, redone so that what is trained is what is served:

- **Semantics.** ``variant="original"`` trains the published architecture (``nn.LSTM(2048,
  2048, bias=False)``) with the semantics the engine runs (``network.model.FrameClassifier``):
  every frame is one LSTM step from a zero state, the video's logits are ``linear1`` of the
  mean over its frames. The notebook instead fed its (batch, seq, 2048) tensor to a
  ``batch_first=False`` LSTM, so in training the recurrence ran across the four *videos* of a
  mini-batch while inference ran one step per frame; here a mini-batch's frames are all the
  LSTM's batch axis, so a video's logits never depend on the other videos. ``W_hh`` and the
  forget gate cannot act from a zero state; ``W_hh`` is not trained (it keeps its initial value
  and is folded away at export). ``variant="sequence"`` trains the corrected model (LSTM with
  bias, ``batch_first=True``, a real recurrence over each video's frames), again reduced by the
  mean over frames, as ``dfe export``'s ``head.onnx`` and the runtime's ``reduce=mean`` do.
- **Defaults of the original where sound**: Adam (lr 1e-5, weight decay 1e-5; PyTorch's fused
  implementation, the same update up to float rounding and ten times faster per step), unweighted
  cross-entropy, batch 4, 20 epochs, label 1 = REAL, BGR crops normalised with ImageNet's RGB
  statistics (:class:`preprocess.crop.Preprocessor`). Dropout 0.4 (the model's ``dp``) is
  applied to the pooled LSTM output before ``linear1`` rather than to the logits as the
  notebook did (dropping one of two logits is label noise, not regularisation); it changes no
  weight and nothing at inference.
- **Added**: a fixed seed (initialisation, split, data order, windows, augmentation, dropout),
  light augmentation that keeps the tight crop (:func:`export.datasets.augment_video`),
  mixed precision on CUDA, validation by video with the metrics of ``dfe eval``
  (:mod:`core.metrics`), the best checkpoint by validation AUC, and ``resume`` from the
  last finished epoch with bitwise-equal results.
- **Frozen backbone.** With ``freeze_backbone`` the CNN (BatchNorm statistics included) stays
  as initialised and runs without gradients; without augmentation its features are computed
  once per crop and reused every epoch, which is exact for a frozen CNN (validation crops are
  never augmented, so their features are always computed once).

Output directory (``out_dir``): ``history.json`` and ``curves.png`` (every epoch), ``last.pt``,
``best.pt`` and ``model_<acc>_acc_<N>_frames_<data>.pt`` (plain state_dicts in the original key
layout, hard links to files under ``checkpoints/`` where the file system allows), ``train.json``
(options, data, crop style; ``dfe export`` reads the crop style and N from it), ``resume.pt``
(optimizer, gradient scaler and RNG states, history; the weights are the epoch file it names)
and ``crops/`` (the face crop cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.config import TRAIN_DETECTOR_FIELDS, TRAIN_INITS, EngineConfig, TrainConfig
from core.deps import require
from core.errors import (
    ArtifactNotFoundError,
    BackendUnavailableError,
    CheckpointError,
    InvalidInputError,
    MissingDependencyError,
)
from core.hashing import sha256_file
from core.labels import CLASSES, read_labels
from core.metrics import accuracy, confusion_matrix, roc_auc
from engine.provenance import library_versions
from export.datasets import (
    CropCache,
    CropOptions,
    FaceCropper,
    LabelledVideo,
    PreparedSet,
    VideoCrops,
    augment_video,
    options_for,
    prepare_crops,
    split_by_video,
    unique_videos,
)
from network.checkpoint import TRAINING_RECORD, load_checkpoint
from preprocess.crop import Preprocessor

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"
RESUME_FILE = "resume.pt"
LAST_FILE = "last.pt"
BEST_FILE = "best.pt"
CHECKPOINT_DIR = "checkpoints"
CROPS_DIR = "crops"
RESUME_FORMAT = 1
#: TrainConfig fields that may differ between a run and its ``resume``.
RESUMABLE_CHANGES = ("epochs", "resume", "device", "amp", "plots", "cache_dir")

StepCallback = Callable[[int, int, float], None]
EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` left in ``out_dir``: the checkpoint files, the per-epoch history
    (the ``epochs`` list of ``history.json``), the best epoch (1-based; by validation AUC, the
    last epoch without validation) and the training record ``train.json``."""

    out_dir: Path
    last: Path
    best: Path
    named: Path
    history: list[dict[str, Any]]
    best_epoch: int
    record: Path


# ------------------------------------------------------------------------------ the model


def frame_features(model: Any, frames: Any) -> Any:
    """Pooled CNN features: frames (B, T, 3, 112, 112) float32 -> (B, T, 2048), as
    ``DeepfakeModel.lstm_outputs`` computes them (trunk, adaptive average pool)."""
    b, t = frames.shape[:2]
    fmap = model.model(frames.flatten(0, 1))
    return model.avgpool(fmap).flatten(1).view(b, t, -1)


def sequence_logits(model: Any, features: Any, variant: str) -> Any:
    """Video logits (B, 2) from features (B, T, F), with the engine's semantics.

    ``original``: all B*T frames are the batch of one LSTM step from a zero state (the LSTM is
    ``batch_first=False``, so the input is shaped (1, B*T, F)); ``sequence``: the
    ``batch_first=True`` LSTM runs over each video's T frames. Then the mean over frames,
    dropout (training only) and ``linear1``; because ``linear1`` is affine this equals the mean
    of per-frame logits that the runtime's ``reduce=mean`` takes."""
    b, t, f = features.shape
    if variant == "original":
        out = lstm_step_from_zero(model.lstm, features.reshape(b * t, f)).view(b, t, -1)
    else:
        out, _ = model.lstm(features)
    return model.linear1(model.dp(out.mean(dim=1)))


def lstm_step_from_zero(lstm: Any, x: Any) -> Any:
    """One step of a one-layer ``torch.nn.LSTM`` from a zero state, (N, F) -> (N, H): with
    ``h0 = c0 = 0``, ``W_hh`` and the forget gate act on zeros, so (PyTorch's gate order i, f, g,
    o; ``torch.nn.LSTM``'s equations) ``gates = x W_ih^T + b_ih + b_hh``, ``c = sigmoid(i) *
    tanh(g)``, ``h = sigmoid(o) * tanh(c)``: what ``lstm`` gives on a length-1 sequence, up to
    float rounding, and the graph ``dfe export`` writes. Its backward is one matrix product for
    ``W_ih`` where the LSTM kernel's also computes ``W_hh``'s (zero) gradient: with a frozen
    backbone, forward and backward over 16 frames took 66 ms instead of 718 (one core, AVX2 EPYC).
    Raises :class:`InvalidInputError` for an LSTM that is not one unidirectional layer without
    projection."""
    torch = require("torch")
    if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size:
        raise InvalidInputError(
            f"the original variant's LSTM is one unidirectional layer without projection; got "
            f"num_layers={lstm.num_layers}, bidirectional={lstm.bidirectional}, "
            f"proj_size={lstm.proj_size}"
        )
    bias = lstm.bias_ih_l0 + lstm.bias_hh_l0 if lstm.bias else None
    i, _f, g, o = torch.nn.functional.linear(x, lstm.weight_ih_l0, bias).chunk(4, dim=-1)
    return torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))


def imagenet_weights_path(*, download: bool = True) -> Path:
    """torchvision's ImageNet weights of ResNeXt50_32x4d (``IMAGENET1K_V1``, what the
    original's ``pretrained=True`` loaded) in the local torch hub cache
    (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``).

    Missing: downloaded there when ``download`` (hash-checked by torch.hub), else, or when the
    download fails, :class:`ArtifactNotFoundError` saying which file to place where."""
    torch = require("torch", purpose="dfe train")
    torchvision = require("torchvision", purpose="dfe train")
    url = torchvision.models.ResNeXt50_32X4D_Weights.IMAGENET1K_V1.url
    name = url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if path.is_file():
        return path
    hint = (
        f"place {name} (from {url}) at {path} (torch's hub cache: $TORCH_HOME/hub/checkpoints), "
        "or start from a checkpoint (--init CHECKPOINT) or random weights (--init random)"
    )
    if not download:
        raise ArtifactNotFoundError(f"ImageNet weights not found and downloads are off: {hint}")
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = _hash_prefix(name)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=False)
    except Exception as exc:  # URLError, HTTPError, RuntimeError (hash), OSError
        raise ArtifactNotFoundError(
            f"ImageNet weights could not be downloaded ({exc}): {hint}"
        ) from exc
    return path


def _hash_prefix(file_name: str) -> str | None:
    """torchvision's weight files carry the first hex digits of their sha256 in the name."""
    m = re.search(r"-([0-9a-f]{6,})\.", file_name)
    return m.group(1) if m else None


def load_torchvision_trunk(model: Any, path: str | os.PathLike[str]) -> None:
    """Load a torchvision ResNeXt50_32x4d state_dict file (keys ``conv1.*``, ``layer1.*``, ...,
    ``fc.*``) into ``model.model`` (the trunk, keys ``0.*``..``7.*``); ``fc`` is dropped, as the
    original dropped avgpool and fc. Files named with a hash prefix are checked against it.
    Raises :class:`CheckpointError` for a corrupt file or other keys."""
    torch = require("torch")
    torchvision = require("torchvision")
    path = Path(path)
    prefix = _hash_prefix(path.name)
    if prefix is not None and not sha256_file(path).startswith(prefix):
        raise CheckpointError(
            f"{path}: its sha256 does not start with {prefix} as its name says; the file is "
            "corrupt or truncated, delete it and fetch it again"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        backbone = torchvision.models.resnext50_32x4d(weights=None)
        backbone.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path} is not torchvision's resnext50_32x4d state_dict: {str(exc).splitlines()[0]}"
        ) from exc
    trunk = torch.nn.Sequential(*list(backbone.children())[:-2])
    model.model.load_state_dict(trunk.state_dict(), strict=True)


@dataclass(frozen=True)
class Initialised:
    """The model :func:`initial_model` built, its variant, and where its weights came from."""

    model: Any
    variant: str
    record: dict[str, Any]
    crop_style: str  # the default crop style for these weights


def initial_model(
    init: str, variant: str | None, *, seed: int, download: bool = True
) -> Initialised:
    """Build the :class:`~network.model.DeepfakeModel` to train.

    ``init``: ``imagenet`` (torchvision's ImageNet CNN, see :func:`imagenet_weights_path`;
    LSTM and ``linear1`` at PyTorch's default initialisation), ``random`` (everything at
    PyTorch's default, seeded), or the path of a checkpoint (loaded strictly by
    :func:`network.checkpoint.load_checkpoint`). ``variant`` None takes the checkpoint's (else
    ``original``). An ``original`` checkpoint may start a ``sequence`` model (its LSTM biases
    start at zero); a ``sequence`` checkpoint cannot become ``original`` (its biases would be
    lost), which raises :class:`InvalidInputError`."""
    torch = require("torch", purpose="dfe train")
    from export.onnx_export import default_crop_style
    from network.model import Architecture, DeepfakeModel

    torch.manual_seed(seed)
    if init in TRAIN_INITS:
        variant = variant or "original"
        model = DeepfakeModel(Architecture(variant, lstm_bias=variant == "sequence"))
        record: dict[str, Any] = {"init": init}
        if init == "imagenet":
            path = imagenet_weights_path(download=download)
            load_torchvision_trunk(model, path)
            record.update(weights=str(path), sha256=sha256_file(path))
        return Initialised(model, variant, record, "scrfd")
    if not Path(init).is_file():
        raise ArtifactNotFoundError(
            f"init {init!r} is not imagenet, random or an existing checkpoint file; supported "
            "values are imagenet, random or the path of a .pt checkpoint"
        )
    ckpt = load_checkpoint(init)
    variant = variant or ckpt.variant
    record = {"init": "checkpoint", "checkpoint": str(ckpt.path), "sha256": ckpt.sha256}
    if variant == ckpt.variant:
        model = DeepfakeModel(Architecture(variant, lstm_bias=ckpt.lstm_bias))
        model.load_state_dict(ckpt.state_dict, strict=True)
    elif variant == "sequence":
        model = DeepfakeModel(Architecture("sequence", lstm_bias=True))
        missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
        if unexpected or sorted(missing) != ["lstm.bias_hh_l0", "lstm.bias_ih_l0"]:
            raise CheckpointError(f"{ckpt.path}: unexpected keys for a sequence model")
        with torch.no_grad():
            model.lstm.bias_ih_l0.zero_()
            model.lstm.bias_hh_l0.zero_()
        record["note"] = "original checkpoint started as a sequence model, LSTM biases at zero"
    else:
        raise InvalidInputError(
            f"{ckpt.path} is a sequence model (LSTM with bias); it cannot be trained as the "
            "original variant without losing its biases. Use variant=sequence"
        )
    return Initialised(model, variant, record, default_crop_style(ckpt))


def _select_device(name: str) -> Any:
    torch = require("torch")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"device cuda was asked for but torch {torch.__version__} sees no CUDA device; "
            "install a CUDA build of torch on a machine with an NVIDIA GPU, or use --device cpu"
        )
    return torch.device(name)


def _trainable(model: Any, *, freeze_backbone: bool, variant: str) -> list[Any]:
    """Set ``requires_grad`` and return the parameters the optimizer updates."""
    for p in model.parameters():
        p.requires_grad_(True)
    if freeze_backbone:
        for p in model.model.parameters():
            p.requires_grad_(False)
    if variant == "original":
        # one step from a zero state: W_hh never acts (folded away at export), no gradient
        model.lstm.weight_hh_l0.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


# ------------------------------------------------------------------------------ the data


def _check_plots() -> None:
    try:
        require("matplotlib", purpose="the training curves (curves.png)")
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            f"{exc} (or pass --no-plots / plots=False to train without curves.png)"
        ) from exc


def _data_name(config: TrainConfig, labels: Path) -> str:
    name = config.data_name or labels.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "data"


def _load_sets(
    labels: Path, root: Path | None, config: TrainConfig
) -> tuple[list[LabelledVideo], list[LabelledVideo]]:
    videos = unique_videos(read_labels(labels, root=root), source=str(labels))
    if config.val is not None:
        val_path = Path(config.val)
        val = unique_videos(read_labels(val_path, root=root), source=str(val_path))
        both = sorted({v.path for v in videos} & {v.path for v in val})
        if both:
            more = f" and {len(both) - 5} more" if len(both) > 5 else ""
            raise InvalidInputError(
                f"{len(both)} video(s) are in both {labels} and {val_path}: "
                f"{', '.join(both[:5])}{more}; a video must be on one side only"
            )
        return videos, val
    return split_by_video(videos, config.validation_share, seed=config.seed)


def _window(item: VideoCrops, seq_len: int, rng: np.random.Generator | None) -> slice:
    """``seq_len`` consecutive crops: a random start (training, ``rng``) or the first ones."""
    spare = len(item) - seq_len
    start = int(rng.integers(0, spare + 1)) if rng is not None and spare > 0 else 0
    return slice(start, start + seq_len)


def _counts(videos: Sequence[LabelledVideo]) -> dict[str, int]:
    return {c: sum(v.label == c for v in videos) for c in CLASSES}


# ------------------------------------------------------------------------------ outputs


def plot_history(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """``curves.png``: loss (train and validation) and validation AUC / accuracies per epoch."""
    require("matplotlib", purpose="the training curves (curves.png)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]

    def series(key: str) -> list[float]:
        return [math.nan if h[key] is None else h[key] for h in history]

    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    ax_l.plot(epochs, series("train_loss"), marker=".", label="train")
    if any(h["val_loss"] is not None for h in history):
        ax_l.plot(epochs, series("val_loss"), marker=".", label="validation")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("cross-entropy loss")
    ax_l.set_title("loss")
    ax_l.legend()
    ax_a.plot(epochs, series("train_acc"), marker=".", label="train accuracy")
    if any(h["val_acc"] is not None for h in history):
        ax_a.plot(epochs, series("val_acc"), marker=".", label="validation accuracy")
    if any(h["val_auc"] is not None for h in history):
        ax_a.plot(epochs, series("val_auc"), marker="o", label="validation ROC AUC")
    ax_a.set_ylim(-0.02, 1.02)
    ax_a.set_xlabel("epoch")
    ax_a.set_title("accuracy and AUC (FAKE positive)")
    ax_a.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".part.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


class _HashingWriter:
    """A file wrapper that hashes what ``torch.save`` writes (no second read of the file)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _save(obj: Any, path: Path) -> str:
    """``torch.save`` to ``path`` atomically; returns the file's sha256."""
    torch = require("torch")
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        writer = _HashingWriter(f)
        torch.save(obj, writer)
    tmp.replace(path)
    return writer.digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _link(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src`` atomically: a hard link, or a copy where links are refused."""
    tmp = dst.with_name(dst.name + ".part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dst)


# ------------------------------------------------------------------------------ training


class _Trainer:
    """One run: the model, the data, the optimizer, and the epoch loop (see :func:`train`)."""

    def __init__(
        self,
        config: TrainConfig,
        init: Initialised,
        train_set: PreparedSet,
        val_set: PreparedSet,
        device: Any,
        *,
        progress: bool,
        on_step: StepCallback | None,
    ) -> None:
        torch = require("torch")
        self.torch = torch
        self.config = config
        self.variant = init.variant
        self.model = init.model.to(device)
        self.train_set = train_set
        self.val_set = val_set
        self.device = device
        self.progress = progress
        self.on_step = on_step
        self.amp = bool(config.amp and device.type == "cuda")
        self.params = _trainable(
            self.model, freeze_backbone=config.freeze_backbone, variant=self.variant
        )
        # fused: one kernel per step over all parameters (PyTorch >= 2.4, CPU and CUDA). The same
        # update up to float rounding; on one core of an AVX2 EPYC a step over the LSTM's input
        # weights (8192 x 2048) and linear1 took 17 ms instead of 173 with the per-tensor loop.
        self.optimizer = torch.optim.Adam(
            self.params, lr=config.lr, weight_decay=config.weight_decay, fused=True
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.preprocessor = Preprocessor()
        self.frozen = config.freeze_backbone
        # frozen CNN: features of unaugmented crops, computed once (index -> (N, F) tensor)
        self._train_features: dict[int, Any] = {}
        self._val_features: dict[int, Any] = {}

    # -------------------------------------------------------------- batches

    def _frames(self, crops: Sequence[np.ndarray]) -> Any:
        """(B, T, 112, 112, 3) uint8 crops -> (B, T, 3, 112, 112) float32 on the device."""
        b, t = len(crops), crops[0].shape[0]
        x = self.preprocessor(np.concatenate(crops))
        return self.torch.from_numpy(x).view(b, t, *x.shape[1:]).to(self.device)

    def _features_once(self, item: VideoCrops, cache: dict[int, Any], key: int) -> Any:
        if key not in cache:
            with self.torch.no_grad(), self._autocast():
                f = frame_features(self.model, self._frames([np.asarray(item.crops)]))
            cache[key] = f[0].float()
        return cache[key]

    def _autocast(self) -> Any:
        return self.torch.autocast(
            device_type=self.device.type, dtype=self.torch.float16, enabled=self.amp
        )

    def _features(
        self,
        indices: Sequence[int],
        dataset: PreparedSet,
        cache: dict[int, Any],
        rng: np.random.Generator | None,
    ) -> Any:
        """(B, T, F) features of videos ``indices`` (a random window and augmentation with
        ``rng``), with gradients through the CNN unless it is frozen."""
        seq_len = self.config.seq_len
        augment = rng is not None and self.config.augment
        if self.frozen and not augment:
            windows = [
                self._features_once(dataset.crops[i], cache, i)[
                    _window(dataset.crops[i], seq_len, rng)
                ]
                for i in indices
            ]
            return self.torch.stack(windows)
        crops = []
        for i in indices:
            item = dataset.crops[i]
            window = np.asarray(item.crops[_window(item, seq_len, rng)])
            crops.append(augment_video(window, rng) if augment else window)
        frames = self._frames(crops)
        if self.frozen:
            with self.torch.no_grad():
                return frame_features(self.model, frames)
        return frame_features(self.model, frames)

    def _targets(self, dataset: PreparedSet, indices: Sequence[int]) -> Any:
        y = [dataset.videos[i].target for i in indices]
        return self.torch.tensor(y, dtype=self.torch.long, device=self.device)

    def _set_mode(self, training: bool) -> None:
        self.model.train(training)
        if self.frozen:
            self.model.model.eval()  # BatchNorm statistics stay as initialised

    # -------------------------------------------------------------- epochs

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(self.train_set.videos))
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        self._set_mode(True)
        total_loss, y_true, y_pred = 0.0, [], []
        from tqdm import tqdm

        bar = tqdm(
            batches,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="batch",
            disable=not self.progress,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
        for step, idx in enumerate(bar):
            targets = self._targets(self.train_set, idx)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                feats = self._features(idx, self.train_set, self._train_features, rng)
                logits = sequence_logits(self.model, feats, self.variant).float()
                loss = self.loss_fn(logits, targets)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            value = float(loss.detach())
            total_loss += value * len(idx)
            y_true += [CLASSES[int(t)] for t in targets.tolist()]
            y_pred += [CLASSES[int(k)] for k in logits.detach().argmax(1).tolist()]
            bar.set_postfix(loss=f"{value:.4f}")
            if self.on_step is not None:
                self.on_step(epoch, step, value)
        bar.close()
        if not math.isfinite(total_loss):
            raise InvalidInputError(
                f"the training loss is {total_loss} in epoch {epoch}: the run diverged; lower "
                "the learning rate (--lr) or turn mixed precision off (--no-amp)"
            )
        return {
            "train_loss": total_loss / len(order),
            "train_acc": accuracy(confusion_matrix(y_true, y_pred)),
        }

    def validate(self) -> dict[str, Any]:
        torch = self.torch
        videos = self.val_set.videos
        if not videos:
            return {"val_loss": None, "val_acc": None, "val_auc": None, "confusion": None}
        self._set_mode(False)
        total_loss, y_true, y_pred, p_fake = 0.0, [], [], []
        step = self.config.batch_size
        with torch.no_grad():
            for start in range(0, len(videos), step):
                idx = list(range(start, min(start + step, len(videos))))
                targets = self._targets(self.val_set, idx)
                with self._autocast():
                    feats = self._features(idx, self.val_set, self._val_features, None)
                    logits = sequence_logits(self.model, feats, self.variant).float()
                total_loss += float(self.loss_fn(logits, targets)) * len(idx)
                probs = torch.softmax(logits, dim=1)
                p_fake += probs[:, CLASSES.index("FAKE")].tolist()
                y_true += [videos[i].label for i in idx]
                y_pred += [CLASSES[int(k)] for k in logits.argmax(1).tolist()]
        matrix = confusion_matrix(y_true, y_pred)
        return {
            "val_loss": total_loss / len(videos),
            "val_acc": accuracy(matrix),
            "val_auc": roc_auc(y_true, p_fake),
            "confusion": matrix,
        }

    # -------------------------------------------------------------- state

    def rng_state(self) -> dict[str, Any]:
        torch = self.torch
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        torch = self.torch
        torch.set_rng_state(state["torch"])
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])

    def weights(self) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}


def _fingerprint(config: TrainConfig, extra: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES}
    return json.loads(json.dumps({"config": fields, **extra}))


def _is_better(entry: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    if entry["val_loss"] is None:  # no validation: the last epoch is the best one
        return True

    def key(e: dict[str, Any]) -> tuple[float, float]:
        auc = e["val_auc"] if e["val_auc"] is not None else -math.inf
        return (auc, -e["val_loss"])

    return key(entry) > key(best)


def train(
    labels: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    config: TrainConfig | None = None,
    detector: EngineConfig | None = None,
    progress: bool = True,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
    model: Any = None,
    **options: Any,
) -> TrainResult:
    """Train (or fine-tune) the classifier on the videos of ``labels`` and write ``out_dir``.

    ``labels``: a ``file,label`` CSV (REAL/FAKE, any case, header optional), paths relative to
    ``root`` (default: the CSV's directory); files are videos or ``dfe preprocess`` face clips
    (:mod:`export.datasets`). ``config``: the options of ``dfe train``
    (:class:`core.config.TrainConfig`), or pass its fields as keywords (``seq_len=4,
    lr=1e-3, ...``). ``detector``: the face detection options (``detector``, ``models_dir``,
    ``download``, ``detector_input``, ``score_threshold``, ``detector_batch``,
    ``intra_op_threads``, ``size_probe`` of :class:`EngineConfig`; ``download`` also allows
    fetching the ImageNet weights). ``on_step(epoch, step, loss)`` is called after every
    optimizer step (epochs 1-based, steps 0-based, loss the mini-batch's mean cross-entropy),
    ``on_epoch(entry)`` with each ``history.json`` entry. ``model``: train this module instead
    of building one from ``init`` (any module with ``DeepfakeModel``'s parts: ``model`` (the
    CNN), ``avgpool``, ``lstm``, ``dp``, ``linear1``; its variant is ``config.variant``, default
    ``original``): for experiments and tests; its checkpoints load in ``dfe export`` only if it
    is a ``DeepfakeModel``.

    Shapes: a mini-batch is (B videos, T = ``seq_len`` frames, 3, 112, 112) float32 BGR
    normalised crops; the loss is the mean cross-entropy of (B, 2) video logits against labels
    FAKE 0 / REAL 1. ``history.json`` entries: ``epoch`` (1-based), ``train_loss`` /
    ``val_loss`` (mean cross-entropy per video, nats), ``train_acc`` / ``val_acc`` (0-1),
    ``val_auc`` (ROC AUC, FAKE positive, scored by p_fake; None with one class),
    ``confusion`` (rows true FAKE/REAL, columns predicted), ``seconds`` (training and
    validation of the epoch). Validation values are None without validation.

    Raises :class:`InvalidInputError` (bad labels, a class missing from training, options
    that do not match a run being resumed, an existing run without ``resume``),
    :class:`ArtifactNotFoundError` (detector or ImageNet weights missing offline),
    :class:`CheckpointError`, :class:`BackendUnavailableError` (``device="cuda"`` without
    CUDA) and :class:`MissingDependencyError` (torch: the ``export`` extra; matplotlib: the
    ``eval`` extra, unless ``plots=False``).
    """
    config = (config or TrainConfig()).replace(**options) if options else (config or TrainConfig())
    detector = detector or EngineConfig()
    labels = Path(labels)
    out = Path(out_dir)
    root_path = Path(root) if root is not None else None
    # the labels first: a bad labels file is the same usage error with or without torch
    train_videos, val_videos = _load_sets(labels, root_path, config)
    torch = require("torch", purpose="dfe train")
    if config.plots:
        _check_plots()
    resume_path = _check_resume_path(out, config)
    device = _select_device(config.device)
    init = _initialise(config, detector, model)
    data = _prepare_data(config, detector, init, train_videos, val_videos, out, progress=progress)
    torch.manual_seed(config.seed)  # dropout draws do not depend on how the model was made
    trainer = _Trainer(
        config, init, data.train, data.val, device, progress=progress, on_step=on_step
    )
    run = _Run(
        out=out,
        config=config,
        trainer=trainer,
        data_name=_data_name(config, labels),
        fingerprint=_fingerprint(
            config,
            {
                "variant": init.variant,
                "crops": data.crop_options.describe(),
                "train": [[v.path, v.label] for v in data.train.videos],
                "val": [[v.path, v.label] for v in data.val.videos],
            },
        ),
        validated=bool(data.val.videos),
    )
    if config.resume:
        run.resume(resume_path)
    run.record = _training_record(
        config, detector, labels, root_path, init, data, run.data_name, device, trainer.amp
    )
    run.train_epochs(on_epoch)
    return run.result()


# ------------------------------------------------------------------------------ train() steps


def _check_resume_path(out: Path, config: TrainConfig) -> Path:
    """``out``'s resume state: it must exist with ``config.resume`` and must not without it
    (:class:`InvalidInputError` otherwise)."""
    resume_path = out / RESUME_FILE
    if resume_path.exists() and not config.resume:
        raise InvalidInputError(
            f"{out} already holds a training run ({resume_path.name}); pass --resume to continue "
            "it, or choose another output directory"
        )
    if config.resume and not resume_path.exists():
        raise InvalidInputError(
            f"--resume: {out} holds no run to resume ({resume_path} is missing); start it "
            "without --resume"
        )
    return resume_path


def _initialise(config: TrainConfig, detector: EngineConfig, model: Any) -> Initialised:
    """The model to train: built from ``config.init`` (:func:`initial_model`), or the
    ``model`` passed to :func:`train` (variant ``config.variant``, default ``original``)."""
    if model is None:
        return initial_model(
            config.init, config.variant, seed=config.seed, download=detector.download
        )
    variant = config.variant or "original"
    return Initialised(model, variant, {"init": "module passed to train()"}, "scrfd")


@dataclass(frozen=True)
class _Data:
    """The face crops of a run: the crop style and options, the crop cache, and the
    training and validation sets (their usable videos and crops, those left out)."""

    crop_style: str
    crop_options: CropOptions
    cache: CropCache
    train: PreparedSet
    val: PreparedSet


def _prepare_data(
    config: TrainConfig,
    detector: EngineConfig,
    init: Initialised,
    train_videos: list[LabelledVideo],
    val_videos: list[LabelledVideo],
    out: Path,
    *,
    progress: bool,
) -> _Data:
    """Create ``out`` and the face crops of both sets (from the cache where they are, a
    ``face crops`` progress bar on stderr). Raises :class:`InvalidInputError` when the training
    set lacks a class; warns when validation is lost or has one class only."""
    crop_style = config.crop_style or init.crop_style
    crop_options = options_for(
        config.frames_per_video,
        sampling=config.sampling,
        no_face=config.no_face,
        crop_style=crop_style,
        margin=config.margin,
        inputs=config.inputs,
        detector=detector,
    )
    out.mkdir(parents=True, exist_ok=True)
    cache = CropCache(Path(config.cache_dir) if config.cache_dir else out / CROPS_DIR, crop_options)
    cropper = FaceCropper(crop_options)
    from tqdm import tqdm

    with tqdm(
        total=len(train_videos) + len(val_videos),
        desc="face crops",
        unit="video",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:
        train_set = prepare_crops(
            train_videos, cache, cropper, min_crops=config.seq_len, progress=bar.update
        )
        val_set = prepare_crops(
            val_videos, cache, cropper, min_crops=config.seq_len, progress=bar.update
        )
    counts = _counts(train_set.videos)
    if min(counts.values()) == 0:
        raise InvalidInputError(
            f"the training set has {counts['FAKE']} FAKE and {counts['REAL']} REAL usable "
            f"videos; both classes are needed ({len(train_set.skipped)} left out: "
            f"{[s['reason'] for s in train_set.skipped[:3]]})"
        )
    if val_videos and not val_set.videos:
        log.warning("no usable validation video (all %d left out): no validation", len(val_videos))
    if val_set.videos and min(_counts(val_set.videos).values()) == 0:
        log.warning("the validation set has one class only: its ROC AUC is undefined (None)")
    return _Data(crop_style, crop_options, cache, train_set, val_set)


def _training_record(
    config: TrainConfig,
    detector: EngineConfig,
    labels: Path,
    root: Path | None,
    init: Initialised,
    data: _Data,
    data_name: str,
    device: Any,
    amp: bool,
) -> dict[str, Any]:
    """``train.json`` without its progress (``checkpoints``, ``best_epoch``, ``epochs_done``,
    added after every epoch): options, data, crop style, semantics, versions."""
    return {
        "schema": "deepfake-engine/training",
        "version": 1,
        "command": "dfe train",
        "labels": str(labels),
        "root": str(root) if root else None,
        "config": asdict(config),
        "detector": {k: getattr(detector, k) for k in TRAIN_DETECTOR_FIELDS},
        "variant": init.variant,
        "semantics": (
            "original: each frame one LSTM step from a zero state, video logits = linear1(mean "
            "over frames), as the engine's FrameClassifier runs it"
            if init.variant == "original"
            else "sequence: batch_first LSTM with bias over each video's frames, video logits = "
            "linear1(mean over steps), as head.onnx with reduce=mean"
        ),
        "reduce": "mean",
        "seq_len": config.seq_len,
        "sampling": config.sampling,
        "crop_style": data.crop_style,
        "crops": data.crop_options.describe(),
        "input": "BGR crops, ImageNet RGB mean/std in channel order (preprocess.crop)",
        "labels_map": {"0": "FAKE", "1": "REAL"},
        "init": init.record,
        "data": {
            "name": data_name,
            "train": _counts(data.train.videos),
            "val": _counts(data.val.videos),
            "validation": (
                f"CSV {config.val}"
                if config.val
                else f"{config.validation_share:g} of each class, by video (seed {config.seed})"
            ),
            "skipped": data.train.skipped + data.val.skipped,
            "crops_from_cache": data.train.from_cache + data.val.from_cache,
            "cache": str(data.cache.directory),
        },
        "data_name": data_name,
        "device": str(device),
        "amp": amp,
        "versions": library_versions(("torch", "torchvision", "numpy")),
        "accuracy_source": "val" if data.val.videos else "train",
    }


#: The keys of a ``history.json`` entry, in order.
HISTORY_KEYS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_auc",
    "confusion",
    "seconds",
)


@dataclass
class _Run:
    """A run's epochs and what they leave in ``out``: the ``history`` so far, the ``best``
    entry, the checkpoint ``files`` (name -> the info ``train.json`` lists), the first epoch
    to run (``start``, 1-based), and the training ``record`` (``train.json``)."""

    out: Path
    config: TrainConfig
    trainer: _Trainer
    data_name: str
    fingerprint: dict[str, Any]
    validated: bool  # a validation set is used (else the last epoch is the best)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    start: int = 1
    record: dict[str, Any] = field(default_factory=dict)

    def resume(self, resume_path: Path) -> None:
        """Continue the run saved in ``resume_path``: the weights of its last epoch, optimizer,
        gradient scaler and RNG states, history, best entry and files. Raises
        :class:`InvalidInputError` (another version's state, options or data that differ
        beyond :data:`RESUMABLE_CHANGES`) and :class:`CheckpointError` (the epoch's weights
        missing or changed)."""
        torch = self.trainer.torch
        trainer, fingerprint, out = self.trainer, self.fingerprint, self.out
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state.get("format") != RESUME_FORMAT:
            raise InvalidInputError(f"{resume_path} is not a resume state of this version")
        if state["fingerprint"] != fingerprint:
            diff = sorted(
                k
                for k in {**state["fingerprint"]["config"], **fingerprint["config"]}
                if state["fingerprint"]["config"].get(k) != fingerprint["config"].get(k)
            ) or [k for k in fingerprint if state["fingerprint"].get(k) != fingerprint[k]]
            raise InvalidInputError(
                f"--resume: the options or data differ from the run in {out} ({', '.join(diff)}); "
                f"only {', '.join(RESUMABLE_CHANGES)} may change. Use the same options, or "
                "another output directory for a new run"
            )
        weights = out / state["weights"]
        if not weights.is_file() or sha256_file(weights) != state["weights_sha256"]:
            raise CheckpointError(
                f"--resume: {weights} is missing or changed since {resume_path} was written; "
                "the run cannot be continued exactly"
            )
        trainer.model.load_state_dict(
            torch.load(weights, map_location="cpu", weights_only=True), strict=True
        )
        trainer.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and trainer.amp:
            trainer.scaler.load_state_dict(state["scaler"])
        trainer.set_rng_state(state["rng"])
        self.history, self.best, self.files = state["history"], state["best"], state["files"]
        self.start = int(state["epoch"]) + 1
        log.info("resuming %s after epoch %d", out, self.start - 1)

    def train_epochs(self, on_epoch: EpochCallback | None) -> None:
        """Epochs ``start`` to ``config.epochs``: train, validate, checkpoint, then
        ``on_epoch(entry)``."""
        (self.out / CHECKPOINT_DIR).mkdir(exist_ok=True)
        for epoch in range(self.start, self.config.epochs + 1):
            entry = self.run_epoch(epoch)
            self.history.append(entry)
            self.checkpoint(epoch, entry)
            if on_epoch is not None:
                on_epoch(entry)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train and validate epoch ``epoch``: its ``history.json`` entry (:data:`HISTORY_KEYS`;
        ``seconds`` of training and validation)."""
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"epoch": epoch, **self.trainer.train_epoch(epoch)}
        entry.update(self.trainer.validate())
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        return {k: entry[k] for k in HISTORY_KEYS}

    def checkpoint(self, epoch: int, entry: dict[str, Any]) -> None:
        """Save epoch ``epoch``: its weights, then the links to them (``last.pt``; ``best.pt``
        and the named file if it is the best), ``history.json``, ``curves.png``,
        ``train.json``, then the resume state (the commit point), then drop the epoch files no
        link names."""
        out, config = self.out, self.config
        # weights of this epoch, then the links to them, then the resume state (commit point)
        weights_file = out / CHECKPOINT_DIR / f"epoch_{epoch:03d}.pt"
        digest = _save(self.trainer.weights(), weights_file)
        acc = entry["val_acc"] if self.validated else entry["train_acc"]
        info = {
            "epoch": epoch,
            "sha256": digest,
            "weights": str(weights_file.relative_to(out)),
            "accuracy": None if acc is None else round(100 * acc, 5),
            "accuracy_source": self.record["accuracy_source"],
            "val_auc": entry["val_auc"],
            "seq_len": config.seq_len,
            "data_name": self.data_name,
        }
        _link(weights_file, out / LAST_FILE)
        self.files[LAST_FILE] = info
        if _is_better(entry, self.best):
            self._link_best(entry, weights_file, acc, info)
        self._write_reports(epoch)
        self._save_resume_state(epoch, weights_file, digest)
        self._drop_unlinked_epochs()

    def _link_best(
        self, entry: dict[str, Any], weights_file: Path, acc: float | None, info: dict[str, Any]
    ) -> None:
        """``entry`` is the new best: ``best.pt`` and the named file link to its weights (the
        previous named file is removed)."""
        out, config = self.out, self.config
        self.best = entry
        _link(weights_file, out / BEST_FILE)
        named = f"model_{int(100 * (acc or 0))}_acc_{config.seq_len}_frames_{self.data_name}.pt"
        for old in [k for k in self.files if k.startswith("model_") and k != named]:
            (out / old).unlink(missing_ok=True)
            del self.files[old]
        _link(weights_file, out / named)
        self.files[BEST_FILE] = self.files[named] = info

    def _write_reports(self, epoch: int) -> None:
        """``history.json``, ``curves.png`` (with ``config.plots``) and ``train.json`` after
        epoch ``epoch``."""
        out, best = self.out, self.best or {}  # never None: the first epoch is a best one
        self.record.update(checkpoints=self.files, best_epoch=best["epoch"], epochs_done=epoch)
        _write_json(
            out / HISTORY_FILE,
            {
                "epochs": self.history,
                "best_epoch": best["epoch"],
                "selection": "val_auc, then val_loss" if self.validated else "last epoch",
            },
        )
        if self.config.plots:
            plot_history(self.history, out / CURVES_FILE)
        _write_json(out / TRAINING_RECORD, self.record)

    def _save_resume_state(self, epoch: int, weights_file: Path, digest: str) -> None:
        """``resume.pt``: what :meth:`resume` needs to continue after epoch ``epoch``."""
        trainer = self.trainer
        state = {
            "format": RESUME_FORMAT,
            "epoch": epoch,
            "weights": str(weights_file.relative_to(self.out)),
            "weights_sha256": digest,
            "optimizer": trainer.optimizer.state_dict(),
            "scaler": trainer.scaler.state_dict() if trainer.amp else None,
            "rng": trainer.rng_state(),
            "history": self.history,
            "best": self.best,
            "files": self.files,
            "fingerprint": self.fingerprint,
        }
        _save(state, self.out / RESUME_FILE)

    def _drop_unlinked_epochs(self) -> None:
        """Delete the epoch files under ``checkpoints/`` that no checkpoint file names."""
        keep = {self.out / e["weights"] for e in self.files.values()}
        for old in (self.out / CHECKPOINT_DIR).glob("epoch_*.pt"):
            if old not in keep:
                old.unlink()

    def result(self) -> TrainResult:
        """The :class:`TrainResult`; :class:`InvalidInputError` if no epoch has finished."""
        out = self.out
        if self.best is None:
            raise InvalidInputError(f"{out}: no epoch has finished (epochs={self.config.epochs})")
        named_file = next(k for k in self.files if k.startswith("model_"))
        return TrainResult(
            out_dir=out,
            last=out / LAST_FILE,
            best=out / BEST_FILE,
            named=out / named_file,
            history=self.history,
            best_epoch=int(self.best["epoch"]),
            record=out / TRAINING_RECORD,
        )
