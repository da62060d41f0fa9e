"""The verdict on ``dfe explain``'s contact sheet and score plot (the page links both): the
verdict and its main reason, never a bare label and confidence."""

from __future__ import annotations

import numpy as np
import pytest

from engine.explain import (
    FAKE_BGR,
    NO_FACE_BGR,
    REAL_BGR,
    UNCERTAIN_BGR,
    Explanation,
    contact_sheet,
    verdict_headline,
)
from engine.records import Prediction

CALIBRATED = {"status": "calibrated", "temperature": 1.2, "fake_at": 0.7, "real_below": 0.3}


def _pred(verdict: str, p: float, reasons=(), faces: int = 4, **extra) -> Prediction:
    return Prediction(
        video="/videos/clip.mp4",
        status="ok",
        verdict=verdict,
        reasons=list(reasons),
        label="FAKE" if p >= 0.5 else "REAL",
        confidence=100 * max(p, 1 - p),
        p_fake=p,
        p_fake_calibrated=p,
        frames=4,
        faces=faces,
        frame_p_fake=[p] * 4,
        frame_indices=[0, 1, 2, 3],
        boxes=[[0, 0, 10, 10] if k < faces else None for k in range(4)],
        calibration=extra.pop("calibration", CALIBRATED),
        **extra,
    )


@pytest.mark.parametrize(
    ("pred", "head", "line", "color"),
    [
        (_pred("FAKE", 0.873), "FAKE  87.3%", "manipulated: calibrated p_fake 0.873 >= 0.70",
         FAKE_BGR),
        (_pred("REAL", 0.12), "REAL  88.0%", "authentic: calibrated p_fake 0.120 < 0.30",
         REAL_BGR),
        (_pred("REAL", 0.00001), "REAL  >99.9%", "authentic: calibrated p_fake 0.000 < 0.30",
         REAL_BGR),
        (_pred("UNCERTAIN", 0.5, ["GRAYSCALE_SOURCE", "SCORE_IN_UNCERTAIN_BAND"]), "UNCERTAIN",
         "cannot tell: the video has no colour (gray, or one tint such as sepia); the model was "
         "trained on colour video; also the "
         "score is inside the band where the model cannot tell", UNCERTAIN_BGR),
        (_pred("NO_FACE", 0.0, ["NO_FACE_DETECTED"], faces=0), "NO FACE",
         "no face was found in any frame used: there is nothing to judge",
         NO_FACE_BGR),
    ],
)  # fmt: skip
def test_headline_is_the_verdict_and_its_main_reason(pred, head, line, color):
    assert verdict_headline(pred) == (head, line, color)


def test_uncalibrated_headline_says_so():
    pred = _pred("FAKE", 0.8, calibration={"status": "uncalibrated", "fake_at": 0.6})
    assert verdict_headline(pred)[1] == "manipulated: uncalibrated p_fake 0.800 >= 0.60"


@pytest.mark.parametrize(
    ("verdict", "p", "reasons", "color"),
    [
        ("UNCERTAIN", 0.5, ["FACE_TOO_BLURRY", "FACE_TOO_DARK", "SCORE_IN_UNCERTAIN_BAND"],
         UNCERTAIN_BGR),
        ("NO_FACE", 0.99, ["NO_FACE_DETECTED"], NO_FACE_BGR),
        ("REAL", 0.1, [], REAL_BGR),
    ],
)  # fmt: skip
def test_contact_sheet_draws_the_headline_in_the_verdicts_colour(verdict, p, reasons, color):
    pred = _pred(verdict, p, reasons, faces=0 if verdict == "NO_FACE" else 4)
    crops = [np.full((112, 112, 3), 128, np.uint8)] * 4
    expl = Explanation(pred, crops, [None] * 4, np.zeros((4, 4, 4)), 1)
    overlays = [np.full((192, 192, 3), 200, np.uint8)] * 4
    sheet = contact_sheet(expl, overlays)
    header = sheet[:100]
    near = np.abs(sheet[:48].astype(int) - np.array(color)).sum(axis=2) < 30
    assert near.sum() > 200  # the headline's strokes
    other = FAKE_BGR if verdict != "FAKE" else REAL_BGR
    assert (np.abs(header.astype(int) - np.array(other)).sum(axis=2) < 30).sum() == 0
    # a long list of reasons wraps onto a second line instead of running off the sheet
    if verdict != "NO_FACE":  # (gray: also the edges of the dark text under it)
        line = np.abs(sheet[:140].astype(int) - np.array(color)).sum(axis=2) < 30
        assert not line[:, -4:].any()
        assert bool(line[78:92].any()) is (len(reasons) > 1)


def test_contact_sheet_of_a_faceless_video_says_no_face(tiny_engine, tmp_path):
    import cv2

    from engine.explain import explain, write_explanation
    from tests.engine.server.conftest import no_face_video

    expl = explain(tiny_engine, no_face_video(tmp_path / "gradients.mp4"), seq_len=4)
    assert expl.prediction.verdict == "NO_FACE"
    assert verdict_headline(expl.prediction)[0] == "NO FACE"
    files = write_explanation(expl, tmp_path / "out")
    sheet = cv2.imread(str(tmp_path / "out" / files["contact_sheet"]))
    near = np.abs(sheet[:48].astype(int) - np.array(NO_FACE_BGR)).sum(axis=2) < 30
    assert near.sum() > 200
    for color in (FAKE_BGR, REAL_BGR):  # no FAKE or REAL headline
        assert (np.abs(sheet[:48].astype(int) - np.array(color)).sum(axis=2) < 30).sum() == 0
