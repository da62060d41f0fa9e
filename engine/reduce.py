"""Per-video reduction of per-frame (or per-step) logits, and the label rule.

The exported graphs return logits per frame; a video's logits are their mean (``reduce=mean``,
the original's training code: mean of LSTM outputs, then the affine ``linear1``) or those of its
last frame (``reduce=last``, the original web app). Label index 1 is REAL, 0 is FAKE; the
confidence is the winning class's softmax probability x 100, as the original showed it.
"""

from __future__ import annotations

import numpy as np

from engine.errors import InvalidInputError

REDUCE_MODES = ("mean", "last")
FAKE, REAL = 0, 1


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def reduce_logits(frame_logits: np.ndarray, reduce: str) -> np.ndarray:
    """(T, 2) per-frame logits of one video -> (2,) video logits."""
    if reduce not in REDUCE_MODES:
        raise InvalidInputError(
            f"unknown reduce mode {reduce!r}; supported values are {', '.join(REDUCE_MODES)}"
        )
    x = np.asarray(frame_logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidInputError(f"expected (frames, classes) logits, got shape {x.shape}")
    return x.mean(axis=0) if reduce == "mean" else x[-1]


def split_videos(rows: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    """Cut a batch of frames that concatenates several videos back into one array per video."""
    if sum(lengths) != len(rows):
        raise InvalidInputError(f"lengths {lengths} do not add up to {len(rows)} rows")
    return np.split(rows, np.cumsum(lengths)[:-1]) if lengths else []


def label_of(probs: np.ndarray) -> tuple[str, float]:
    """(label, confidence 0-100) from (2,) class probabilities; ties go to FAKE like torch.max."""
    idx = int(np.argmax(probs))
    return ("REAL" if idx == REAL else "FAKE"), float(probs[idx] * 100.0)
