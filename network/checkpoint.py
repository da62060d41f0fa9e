"""Loading training checkpoints of the ResNeXt50 + LSTM model, strictly and safely.

Accepted: the original layout (322 keys, ``lstm.weight_ih_l0`` / ``lstm.weight_hh_l0``, no LSTM
bias), the same with a ``module.`` prefix (DataParallel) or nested under ``state_dict`` /
``model_state_dict``, and a retrained variant with LSTM biases and ``batch_first=True``.
Files are read with ``torch.load(weights_only=True)``; anything else (an HTML page saved as
``.pt``, a truncated file, a pickle that would run code, wrong keys or shapes) raises
:class:`CheckpointError` with what was found, what was expected and what to do.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.deps import require
from core.errors import ArtifactNotFoundError, CheckpointError
from core.hashing import sha256_file

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

LSTM_BIAS_KEYS = ("lstm.bias_ih_l0", "lstm.bias_hh_l0")
_NESTING_KEYS = ("state_dict", "model_state_dict", "model")
# model_87_acc_20_frames_final_data.pt, and the notebook's model_97acc_60_frames_FF_data.pt
_NAME_RE = re.compile(r"^model_(?P<acc>\d+(?:\.\d+)?)_?acc_(?P<frames>\d+)_frames_(?P<data>.+)$")


@dataclass(frozen=True)
class CheckpointName:
    """What the original naming convention ``model_<acc>_acc_<N>_frames_<data>.pt`` says."""

    accuracy: float
    seq_len: int
    data: str


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    sha256: str
    size_bytes: int
    state_dict: dict[str, Any]
    variant: str
    lstm_bias: bool
    variant_source: str  # "keys" or "flag"
    layout: str  # e.g. "plain", "module-prefix", "nested:state_dict"
    name: CheckpointName | None


def parse_checkpoint_name(path: str | Path) -> CheckpointName | None:
    m = _NAME_RE.match(Path(path).stem)
    if not m:
        return None
    return CheckpointName(float(m["acc"]), int(m["frames"]), m["data"])


def _sniff(path: Path, head: bytes, size: int) -> None:
    """Reject, before unpickling, files that are clearly not a torch checkpoint."""
    if size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes), not a checkpoint. The download or copy probably failed; "
            "fetch the .pt file again."
        )
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"\xef\xbb\xbf") or text.startswith((b"<!doctype", b"<html", b"<")):
        raise CheckpointError(
            f"{path} is a text/HTML page ({size} bytes, starts with {head[:24]!r}), not a PyTorch "
            "checkpoint. This is what a failed download looks like (Google Drive serves an HTML "
            "warning page for large files; torch reports it as \"invalid load key, '\\xef'\" or "
            "'<'). Download the real ~226 MB .pt file again, e.g. with the browser's own download "
            "or `gdown`, and check its size."
        )
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(
            f"{path} does not look like a PyTorch checkpoint: it is neither a torch zip archive "
            f"(starts with 'PK') nor a legacy pickle (starts with 0x80); found {head[:16]!r}. "
            "Pass the .pt/.pth file written by torch.save(model.state_dict(), ...)."
        )
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except zipfile.BadZipFile as exc:
            raise CheckpointError(
                f"{path} is a truncated or corrupt torch zip archive ({size} bytes; {exc}). "
                "A published checkpoint is about 226.5 MB; download it again."
            ) from exc
        if bad is not None:
            raise CheckpointError(
                f"{path} is corrupt: member {bad!r} fails its CRC check ({size} bytes). "
                "Download the checkpoint again."
            )


def _torch_load(path: Path, size: int) -> Any:
    torch = require("torch", purpose="loading PyTorch checkpoints")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        msg = str(exc)
        if "Weights only load failed" in msg or "Unsupported global" in msg:
            m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
            what = f" (it references {m.group(1)})" if m else ""
            raise CheckpointError(
                f"{path} contains pickled Python objects beyond tensors{what}, which could run "
                "code when loaded, so it was refused (torch.load with weights_only=True). If it "
                "is a whole pickled model from a source you trust, re-save only its weights: "
                "torch.save(model.state_dict(), 'model.pt')."
            ) from exc
        first_line = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({size} bytes): {first_line}. "
            "The file is probably truncated or corrupt; download it again."
        ) from exc


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, Any], str]:
    torch = require("torch")
    layout = "plain"
    if isinstance(obj, dict):
        for key in _NESTING_KEYS:
            inner = obj.get(key)
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(k, str) for k in inner)
                and any(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                obj, layout = inner, f"nested:{key}"
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state_dict (a dict of tensor names to "
            "tensors). Save the weights with torch.save(model.state_dict(), path)."
        )
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        non = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
        raise CheckpointError(
            f"{path} is a dict, but not a state_dict: entries {non} are not tensors. Expected "
            "the model's state_dict, optionally nested under 'state_dict' or 'model_state_dict'."
        )
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
        layout = "module-prefix" if layout == "plain" else f"{layout}+module-prefix"
    return dict(obj), layout


def expected_shapes(variant: str, lstm_bias: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a state_dict of the given architecture (built on the meta device)."""
    torch = require("torch")
    from network.model import Architecture, DeepfakeModel

    with torch.device("meta"):
        model = DeepfakeModel(Architecture(variant=variant, lstm_bias=lstm_bias))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_keys(sd: dict[str, Any], variant: str, lstm_bias: bool, path: Path) -> None:
    expected = expected_shapes(variant, lstm_bias)
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    wrong = [
        f"{k}: expected {list(expected[k])}, found {list(sd[k].shape)}"
        for k in expected
        if k in sd and tuple(sd[k].shape) != expected[k]
    ]
    if not (missing or extra or wrong):
        return
    parts = [
        f"{path} does not match the ResNeXt50 + LSTM model (variant {variant}, LSTM bias "
        f"{'yes' if lstm_bias else 'no'}: {len(expected)} keys expected, {len(sd)} found)."
    ]

    def show(items: list[str]) -> str:
        more = f" and {len(items) - 6} more" if len(items) > 6 else ""
        return ", ".join(items[:6]) + more

    if missing:
        parts.append(f"Missing {len(missing)} keys: {show(missing)}.")
    if extra:
        parts.append(f"Unexpected {len(extra)} keys: {show(extra)}.")
    if wrong:
        parts.append(f"Wrong shapes: {show(wrong)}.")
    parts.append(
        "Pass a state_dict of the original Model(2) (ResNeXt50_32x4d trunk as `model.*`, "
        "`lstm.*`, `linear1.*`); nothing is initialised at random to fill the gaps."
    )
    raise CheckpointError(" ".join(parts))


def load_checkpoint(path: str | Path, *, variant: str | None = None) -> LoadedCheckpoint:
    """Read and validate a checkpoint. ``variant`` overrides detection from the keys:
    no LSTM bias -> ``original``; LSTM bias -> ``sequence`` (a corrected, retrained model)."""
    from network.model import VARIANTS

    if variant is not None and variant not in VARIANTS:
        raise CheckpointError(
            f"unknown variant {variant!r}; supported values are {', '.join(VARIANTS)}"
        )
    path = Path(path)
    if not path.is_file():
        raise ArtifactNotFoundError(
            f"checkpoint {path} does not exist (or is not a file); pass the path of a .pt file"
        )
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(64)
    _sniff(path, head, size)
    obj = _torch_load(path, size)
    sd, layout = _unwrap(obj, path)
    lstm_bias = all(k in sd for k in LSTM_BIAS_KEYS)
    if variant is None:
        variant, source = ("sequence" if lstm_bias else "original"), "keys"
    else:
        source = "flag"
    _check_keys(sd, variant, lstm_bias, path)
    log.info("loaded %s: layout %s, variant %s (from %s)", path, layout, variant, source)
    return LoadedCheckpoint(
        path=path,
        sha256=sha256_file(path),
        size_bytes=size,
        state_dict=sd,
        variant=variant,
        lstm_bias=lstm_bias,
        variant_source=source,
        layout=layout,
        name=parse_checkpoint_name(path),
    )


#: The record ``dfe train`` writes next to its checkpoints (``OUTDIR/train.json``).
TRAINING_RECORD = "train.json"


def training_record(ckpt: LoadedCheckpoint) -> dict[str, Any] | None:
    """What ``dfe train`` recorded about this checkpoint file (crop style, sequence length,
    variant, data, epoch, accuracy), or None when it was not made by ``dfe train``.

    The record is ``train.json`` in the checkpoint's directory; it applies only when its
    ``checkpoints`` entry for this file name holds this file's sha256 (so a copied, renamed or
    overwritten file is not described by a stale record)."""
    path = ckpt.path.parent / TRAINING_RECORD
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
        entry = rec["checkpoints"][ckpt.path.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(entry, dict) or entry.get("sha256") != ckpt.sha256:
        return None
    return {**rec, "checkpoint": entry}


def build_model(ckpt: LoadedCheckpoint) -> torch.nn.Module:
    """The reference ``DeepfakeModel`` with the checkpoint's weights, in eval mode."""
    from network.model import Architecture, DeepfakeModel

    model = DeepfakeModel(Architecture(variant=ckpt.variant, lstm_bias=ckpt.lstm_bias))
    model.load_state_dict(ckpt.state_dict, strict=True)
    return model.eval()
