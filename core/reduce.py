"""Per-video reduction of per-frame (or per-step) logits, and the label rule.

The exported graphs return logits per frame; a video's logits are their mean (``reduce=mean``,
the original's training code: mean of LSTM outputs, then the affine ``linear1``) or those of its
last frame (``reduce=last``, the original web app). Label index 1 is REAL, 0 is FAKE (the
original's ``FAKE -> 0, REAL -> 1``; a sidecar's ``labels`` map may say otherwise); the
confidence is the winning class's softmax probability x 100, as the original showed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from core.config import REDUCE_MODES
from core.errors import InvalidInputError

FAKE, REAL = 0, 1
#: The original's label map: class index -> label.
LABELS: dict[int, str] = {FAKE: "FAKE", REAL: "REAL"}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (any shape ``(..., classes)``)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def check_reduce(reduce: str) -> str:
    if reduce not in REDUCE_MODES:
        raise InvalidInputError(
            f"unknown reduce mode {reduce!r}; supported values are {', '.join(REDUCE_MODES)}"
        )
    return reduce


def reduce_logits(frame_logits: np.ndarray, reduce: str) -> np.ndarray:
    """(T, 2) per-frame logits of one video -> (2,) video logits (float64)."""
    check_reduce(reduce)
    x = np.asarray(frame_logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidInputError(f"expected (frames, classes) logits, got shape {x.shape}")
    return x.mean(axis=0) if reduce == "mean" else x[-1]


def label_of(probs: np.ndarray, labels: Mapping[int, str] = LABELS) -> tuple[str, float]:
    """(label, confidence 0-100) from (2,) class probabilities; ties go to the lower index
    (FAKE), like ``torch.max``."""
    idx = int(np.argmax(probs))
    return labels[idx], float(probs[idx] * 100.0)


def fake_index(labels: Mapping[int, str] = LABELS) -> int:
    """The class index whose label is FAKE."""
    for idx, name in labels.items():
        if name == "FAKE":
            return int(idx)
    raise InvalidInputError(f"the label map {dict(labels)} has no FAKE class")


@dataclass(frozen=True)
class VideoScore:
    """One video's verdict from its per-frame logits."""

    p_fake: float  # softmax probability of FAKE of the reduced logits, 0-1
    label: str  # "FAKE" or "REAL"
    confidence: float  # the winning class's probability x 100
    frame_p_fake: list[float]  # per frame (or per step), 0-1
    logits: list[float]  # the video's (reduced) logits, class index order


def score_video(
    frame_logits: np.ndarray, reduce: str, labels: Mapping[int, str] = LABELS
) -> VideoScore:
    """Reduce ``(T, 2)`` per-frame logits with ``reduce`` and read the verdict off the softmax."""
    probs = softmax(reduce_logits(frame_logits, reduce))
    label, confidence = label_of(probs, labels)
    fake = fake_index(labels)
    frame_probs = softmax(frame_logits)
    return VideoScore(
        p_fake=float(probs[fake]),
        label=label,
        confidence=confidence,
        frame_p_fake=[float(p) for p in frame_probs[:, fake]],
        logits=[float(z) for z in reduce_logits(frame_logits, reduce)],
    )
