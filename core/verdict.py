"""Verdicts: FAKE, REAL, UNCERTAIN or NO_FACE, with machine-readable reasons, from a calibrated
score and the quality of the evidence.

Calibration is temperature scaling (Guo et al., "On Calibration of Modern Neural Networks",
ICML 2017): the video's logits are divided by one temperature ``T`` fitted on a labelled set
(``dfe calibrate``), so that ``p = softmax(z / T)`` matches how often such scores are right. With
two classes this is ``p_fake = sigmoid((z_fake - z_real) / T)``. The operating point chooses two
thresholds on the calibrated ``p_fake``: ``fake_at`` (at most the stated share of REAL videos
reach it) and ``real_below`` (at most the stated share of FAKE videos fall below it); between
them the engine says it cannot tell. A model without calibration uses ``T = 1`` (the plain
softmax) and the documented default band [:data:`DEFAULT_REAL_BELOW`, :data:`DEFAULT_FAKE_AT`).

The rule (:func:`decide`), per scored person, in this order:

1. no face in any frame used: ``NO_FACE`` (``NO_FACE_DETECTED``); a probability is still in the
   record, but it is not a verdict about a face;
2. ``UNCERTAIN`` when a quality measure is outside the model's range
   (:mod:`preprocess.quality`), when the model is the untrained demo (``UNTRAINED_MODEL``), or
   when the calibrated ``p_fake`` is inside the band (``SCORE_IN_UNCERTAIN_BAND``); every reason
   that applies is listed, in that order;
3. otherwise ``FAKE`` at or above ``fake_at``, ``REAL`` below ``real_below``.

A video with several people scored is ``FAKE`` if anyone's verdict is (the record says whose),
else ``UNCERTAIN`` if anyone's is, else ``REAL`` if anyone's is, else ``NO_FACE``
(:func:`combine`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import ModelFormatError

VERDICTS = ("FAKE", "REAL", "UNCERTAIN", "NO_FACE")
#: Default band of an uncalibrated model's plain softmax p_fake: REAL below 0.4, FAKE from 0.6.
DEFAULT_REAL_BELOW = 0.4
DEFAULT_FAKE_AT = 0.6

#: Every reason code, in words (the table, the web page, docs/scoring.md). The quality codes are
#: measured by :mod:`preprocess.quality`, whose limits the words quote.
REASONS: dict[str, str] = {
    "NO_FACE_DETECTED": "no face was found in any frame used: there is nothing to judge",
    "UNTRAINED_MODEL": "the model is the untrained demo: its scores mean nothing",
    "FACE_TOO_SMALL": "the face is under 48 px high in the video: too small to judge",
    "FACE_TOO_BLURRY": "the face is blurred (out of focus, motion or heavy compression)",
    "FACE_TOO_DARK": "the face is too dark to judge",
    "FACE_OVEREXPOSED": "the face is overexposed",
    "FACE_ROTATED": "the face is turned more than 45 degrees from upright (a video stored "
    "sideways, or a tilted head); the model was trained on upright faces",
    "GRAYSCALE_SOURCE": (
        "the video has no colour (gray, or one tint such as sepia); the model was trained on "
        "colour video"
    ),
    "INTERLACED_SOURCE": "the video is interlaced: deinterlaced (half of each frame's lines "
    "interpolated) or, with --deinterlace off, its woven fields comb on motion; the model was "
    "trained on progressive video",
    "HEAVY_COMPRESSION": "the video is compressed so hard that artefacts may look like "
    "manipulation",
    "FEW_FACE_FRAMES": "the face was found in fewer than four in five of the frames used",
    "SCORE_IN_UNCERTAIN_BAND": "the score is inside the band where the model cannot tell",
    "MANIPULATED_SEGMENT": "the timeline (--timeline) has a segment judged manipulated",
}


def reason_text(code: str) -> str:
    """The words of a reason code (the code itself when unknown)."""
    return REASONS.get(code, code)


@dataclass(frozen=True)
class Calibration:
    """A model's calibration and operating point (the sidecar's ``calibration`` section).

    ``temperature`` > 0 divides the logits; ``fake_at`` and ``real_below`` are thresholds on
    the calibrated p_fake (0-1, ``real_below <= fake_at``); ``operating_point`` the rates they
    were chosen for; ``fitted_on`` the labelled set (file, videos per class, date, settings);
    ``metrics`` expected calibration error and Brier score before and after. ``calibrated`` is
    False for the default of a model never calibrated."""

    temperature: float = 1.0
    fake_at: float = DEFAULT_FAKE_AT
    real_below: float = DEFAULT_REAL_BELOW
    calibrated: bool = False
    operating_point: dict[str, Any] = field(default_factory=dict)
    fitted_on: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        numbers = (self.temperature, self.fake_at, self.real_below)
        ok = (
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers)
            and all(math.isfinite(v) for v in numbers)
            and self.temperature > 0
            and 0.0 <= self.real_below <= self.fake_at <= 1.0
        )
        if not ok:
            raise ModelFormatError(
                f"the calibration is invalid: temperature {self.temperature!r} must be a number "
                f"> 0 and 0 <= real_below ({self.real_below!r}) <= fake_at ({self.fake_at!r}) "
                "<= 1; run dfe calibrate again (or remove the sidecar's calibration section)"
            )

    @classmethod
    def from_sidecar(cls, section: Mapping[str, Any] | None) -> Calibration:
        """The calibration a sidecar records, or the default (uncalibrated) one."""
        if not section:
            return cls()
        try:
            numbers = {k: section[k] for k in ("temperature", "fake_at", "real_below")}
            if any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers.values()
            ):
                raise ValueError(f"not numbers: {numbers}")
            return cls(
                temperature=float(numbers["temperature"]),
                fake_at=float(numbers["fake_at"]),
                real_below=float(numbers["real_below"]),
                calibrated=True,
                operating_point=dict(section.get("operating_point") or {}),
                fitted_on=dict(section.get("fitted_on") or {}),
                metrics=dict(section.get("metrics") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(
                f"the sidecar's calibration section is incomplete or invalid ({exc}); run dfe "
                "calibrate again (or remove the section)"
            ) from exc

    def to_sidecar(self) -> dict[str, Any]:
        """The sidecar's ``calibration`` section."""
        return {
            "method": "temperature scaling (Guo et al., 2017)",
            "temperature": self.temperature,
            "fake_at": self.fake_at,
            "real_below": self.real_below,
            "operating_point": self.operating_point,
            "fitted_on": self.fitted_on,
            "metrics": self.metrics,
        }

    def to_record(self) -> dict[str, Any]:
        """What a record says of the calibration it was judged with."""
        return {
            "status": "calibrated" if self.calibrated else "uncalibrated",
            "temperature": self.temperature,
            "fake_at": self.fake_at,
            "real_below": self.real_below,
            "operating_point": self.operating_point or None,
            "fitted_on": {k: self.fitted_on.get(k) for k in ("labels", "videos", "date")}
            if self.fitted_on
            else None,
        }

    def p_fake(self, logit_margin: float) -> float:
        """Calibrated p_fake of a video whose logit margin (``z_fake - z_real``) is given."""
        return calibrated_p_fake(logit_margin, self.temperature)


def logit_margin(logits: Sequence[float], fake: int) -> float:
    """``z_fake - z_real`` of a video's two (reduced) logits."""
    z = np.asarray(logits, dtype=np.float64)
    return float(z[fake] - z[1 - fake])


def calibrated_p_fake(margin: float | np.ndarray, temperature: float) -> Any:
    """``sigmoid(margin / T)``: temperature-scaled p_fake of logit margins ``z_fake - z_real``
    (two-class softmax of ``z / T``), computed stably in float64."""
    x = np.asarray(margin, dtype=np.float64) / temperature
    e = np.exp(-np.abs(x))  # never overflows
    out = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class Verdict:
    """One person's (or one video's) verdict and its reason codes, most important first."""

    verdict: str
    reasons: tuple[str, ...] = ()


def decide(
    p_fake: float,
    *,
    found: int,
    calibration: Calibration,
    quality_reasons: Sequence[str] = (),
    untrained: bool = False,
) -> Verdict:
    """The verdict of one scored person (the rule of the module docstring): ``p_fake`` the
    calibrated probability, ``found`` the frames with the person's face."""
    if found == 0:
        return Verdict("NO_FACE", ("NO_FACE_DETECTED",))
    reasons = list(quality_reasons)  # what is wrong with this video's evidence comes first
    if untrained:
        reasons.append("UNTRAINED_MODEL")
    if calibration.real_below <= p_fake < calibration.fake_at:
        reasons.append("SCORE_IN_UNCERTAIN_BAND")
    if reasons:
        return Verdict("UNCERTAIN", tuple(reasons))
    return Verdict("FAKE" if p_fake >= calibration.fake_at else "REAL")


def combine(verdicts: Sequence[Verdict]) -> int:
    """The position of the verdict that decides a video with several people (module
    docstring): the first FAKE, else the first UNCERTAIN, else the first REAL, else the first.
    Callers pass people in the order they want ties broken (most fake first)."""
    for wanted in ("FAKE", "UNCERTAIN", "REAL"):
        for i, v in enumerate(verdicts):
            if v.verdict == wanted:
                return i
    return 0
