"""Fit a model's calibration on a labelled set and store it in the model's sidecar.

:func:`fit_temperature` is temperature scaling (Guo et al., "On Calibration of Modern Neural
Networks", ICML 2017): the one ``T > 0`` that minimises the negative log-likelihood of the
labels under ``p_fake = sigmoid((z_fake - z_real) / T)``, found on ``log T`` by bounded scalar
minimisation (SciPy's ``minimize_scalar``; the loss is convex in ``1/T``). :func:`thresholds`
turns a stated operating point into the two thresholds of the verdict rule
(:mod:`core.verdict`): ``fake_at``, the lowest p_fake at which at most
``max_false_fake`` of the REAL videos would be called FAKE, and ``real_below``, the highest at
which at most ``max_missed_fake`` of the FAKE videos would be called REAL. Between them the
engine answers UNCERTAIN. :func:`calibrate` scores the set with an engine, fits both and
writes them to the sidecar with the set's size, date and the settings it was scored with.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import InvalidInputError
from core.metrics import brier_score, expected_calibration_error
from core.reduce import fake_index
from core.verdict import Calibration, calibrated_p_fake, logit_margin

if TYPE_CHECKING:
    from engine.api import Engine

log = logging.getLogger(__name__)

#: Default operating point: at most 1% of real videos called FAKE, at most 5% of fakes REAL.
MAX_FALSE_FAKE = 0.01
MAX_MISSED_FAKE = 0.05
#: Fewer videos per class than this: the fit is stored, with a warning that it is coarse.
FEW_PER_CLASS = 50
#: Fewer scored videos of a class than this: refused (one per class fits a temperature to two
#: points and leaves no band).
MIN_PER_CLASS = 2
#: Temperatures searched (log scale).
T_RANGE = (0.01, 100.0)


def fit_temperature(margins: Sequence[float], is_fake: Sequence[bool]) -> float:
    """The temperature minimising the mean negative log-likelihood of ``is_fake`` under
    ``sigmoid(margin / T)`` (``margin = z_fake - z_real``). Raises
    :class:`InvalidInputError` unless both classes are present."""
    from scipy.optimize import minimize_scalar

    m = np.asarray(margins, dtype=np.float64)
    y = np.asarray(is_fake, dtype=bool)
    if len(m) != len(y) or not y.any() or y.all():
        raise InvalidInputError("temperature scaling needs labelled videos of both classes")
    sign = np.where(y, 1.0, -1.0)

    def nll(log_t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -sign * m / math.exp(log_t))))

    lo, hi = (math.log(t) for t in T_RANGE)
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


def thresholds(
    p_fake: Sequence[float],
    is_fake: Sequence[bool],
    *,
    max_false_fake: float = MAX_FALSE_FAKE,
    max_missed_fake: float = MAX_MISSED_FAKE,
) -> tuple[float, float]:
    """``(real_below, fake_at)`` for calibrated ``p_fake`` of labelled videos (see the module
    docstring). When the two overlap (the classes separate better than asked), both are put
    at the midpoint of the gap and nothing is UNCERTAIN."""
    p = np.asarray(p_fake, dtype=np.float64)
    y = np.asarray(is_fake, dtype=bool)
    real, fake = np.sort(p[~y])[::-1], np.sort(p[y])
    if not len(real) or not len(fake):
        raise InvalidInputError("the operating point needs labelled videos of both classes")
    allowed = math.floor(max_false_fake * len(real))  # REAL videos that may be called FAKE
    fake_at = float(np.nextafter(real[allowed], 2.0)) if allowed < len(real) else 0.0
    missed = math.floor(max_missed_fake * len(fake))  # FAKE videos that may be called REAL
    real_below = float(fake[missed]) if missed < len(fake) else 1.0
    fake_at, real_below = min(fake_at, 1.0), min(real_below, 1.0)
    if real_below > fake_at:
        mid = (real_below + fake_at) / 2
        return mid, mid
    return real_below, fake_at


def fit(
    margins: Sequence[float],
    is_fake: Sequence[bool],
    *,
    max_false_fake: float = MAX_FALSE_FAKE,
    max_missed_fake: float = MAX_MISSED_FAKE,
    fitted_on: dict[str, Any] | None = None,
) -> Calibration:
    """The :class:`Calibration` of logit margins of labelled videos: the temperature, the
    thresholds of the operating point, and the expected calibration error and Brier score
    before (T = 1) and after, with the share of the set each verdict would take."""
    for name, rate in (("max_false_fake", max_false_fake), ("max_missed_fake", max_missed_fake)):
        if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
            raise InvalidInputError(f"{name} must be in [0, 1), got {rate}")
    t = fit_temperature(margins, is_fake)
    truth = ["FAKE" if f else "REAL" for f in is_fake]
    before = [float(calibrated_p_fake(m, 1.0)) for m in margins]
    after = [float(calibrated_p_fake(m, t)) for m in margins]
    real_below, fake_at = thresholds(
        after, is_fake, max_false_fake=max_false_fake, max_missed_fake=max_missed_fake
    )
    calls = ["FAKE" if p >= fake_at else "REAL" if p < real_below else "UNCERTAIN" for p in after]
    n_real = sum(not f for f in is_fake)
    n_fake = sum(bool(f) for f in is_fake)
    metrics = {
        "ece_before": expected_calibration_error(truth, before),
        "ece_after": expected_calibration_error(truth, after),
        "brier_before": brier_score(truth, before),
        "brier_after": brier_score(truth, after),
        "on_this_set": {
            "real_called_fake": sum(c == "FAKE" for c, f in zip(calls, is_fake) if not f) / n_real,
            "fake_called_real": sum(c == "REAL" for c, f in zip(calls, is_fake) if f) / n_fake,
            "uncertain": sum(c == "UNCERTAIN" for c in calls) / len(calls),
        },
    }
    return Calibration(
        temperature=t,
        fake_at=fake_at,
        real_below=real_below,
        calibrated=True,
        operating_point={"max_false_fake": max_false_fake, "max_missed_fake": max_missed_fake},
        fitted_on={**(fitted_on or {}), "real": n_real, "fake": n_fake},
        metrics=metrics,
    )


def calibrate(
    engine: Engine,
    labels: Sequence[tuple[str, str]],
    *,
    seq_len: int | None = None,
    sampling: str = "first",
    max_false_fake: float = MAX_FALSE_FAKE,
    max_missed_fake: float = MAX_MISSED_FAKE,
    labels_name: str = "",
) -> tuple[Calibration, list[dict[str, Any]]]:
    """Score the labelled videos ``(path, REAL|FAKE)`` with ``engine`` and :func:`fit` a
    calibration on those with a face (videos that failed or had no face are left out and
    returned among the records). Returns (calibration, records)."""
    paths = list(dict.fromkeys(v for v, _ in labels))
    truth = dict(labels)
    records = [
        p.to_record() for p in engine.predict_many(paths, seq_len=seq_len, sampling=sampling)
    ]
    usable = [r for r in records if r["status"] == "ok" and r["verdict"] != "NO_FACE"]
    counts = {c: sum(truth[r["video"]] == c for r in usable) for c in ("REAL", "FAKE")}
    if min(counts.values()) < MIN_PER_CLASS:
        raise InvalidInputError(
            f"calibration needs at least {MIN_PER_CLASS} scored videos of each class with a "
            f"face; got {counts['REAL']} REAL and {counts['FAKE']} FAKE (of {len(records)} "
            "labelled; the others failed or had no face). Label more videos"
        )
    fake = fake_index(engine.spec_for(seq_len).labels)
    margins = [logit_margin(r["logits"], fake) for r in usable]
    is_fake = [truth[r["video"]] == "FAKE" for r in usable]
    prov = engine.job_provenance(seq_len, sampling)
    cal = fit(
        margins,
        is_fake,
        max_false_fake=max_false_fake,
        max_missed_fake=max_missed_fake,
        fitted_on={
            "labels": labels_name,
            "videos": len(usable),
            "left_out": len(records) - len(usable),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "settings": prov["settings"],
        },
    )
    return cal, records


def write(model_dir: str | Path, calibration: Calibration) -> Path:
    """Store ``calibration`` in the model's sidecar (its other sections kept); returns it."""
    from core.sidecar import update_sidecar

    return update_sidecar(model_dir, calibration=calibration)
