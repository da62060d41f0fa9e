"""The result page of ``dfe serve`` drawn from records made here: the verdict badge in each
state, the reasons, the quality outside range, the notes, the people panels and the plurals."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest

from engine.records import Prediction
from engine.server import pages

CALIBRATED = {"status": "calibrated", "temperature": 1.3, "fake_at": 0.7, "real_below": 0.3}
UNCALIBRATED = {"status": "uncalibrated", "temperature": 1.0, "fake_at": 0.6, "real_below": 0.4}


def _track(track: int, p: float, verdict: str, reasons=(), frames=(0, 1, 2, 3)) -> dict:
    return {
        "track": track,
        "frames": len(frames),
        "frame_indices": list(frames),
        "boxes": [[0, 0, 10, 10]] * len(frames),
        "p_fake": p,
        "label": "FAKE" if p >= 0.5 else "REAL",
        "confidence": 100 * max(p, 1 - p),
        "face_coverage": 1.0,
        "verdict": verdict,
        "reasons": list(reasons),
        "p_fake_calibrated": p,
        "quality": {"face_px": 140.0, "face_frames": len(frames), "face_coverage": 1.0},
    }


def _record(
    verdict: str,
    p: float = 0.8,
    *,
    reasons=(),
    frames: int = 4,
    faces: int | None = None,
    tracks: list[dict] | None = None,
    people: int | None = None,
    calibration: dict = CALIBRATED,
    quality: dict | None = None,
    warnings=(),
) -> dict[str, Any]:
    faces = frames if faces is None else faces
    tracks = [_track(0, p, verdict, reasons, tuple(range(frames)))] if tracks is None else tracks
    return Prediction(
        video="clip.mp4",
        status="ok",
        verdict=verdict,
        reasons=list(reasons),
        label="FAKE" if p >= 0.5 else "REAL",
        confidence=100 * max(p, 1 - p),
        p_fake=p,
        p_fake_calibrated=p,
        frames=frames,
        faces=faces,
        frame_p_fake=[p] * frames,
        frame_indices=list(range(frames)),
        boxes=[[0, 0, 10, 10] if k < faces else None for k in range(frames)],
        people=len(tracks) if people is None else people,
        tracks=tracks,
        face_coverage=faces / frames,
        quality=quality or {"face_px": 140.0, "face_frames": faces, "face_coverage": 1.0},
        calibration=calibration,
        warnings=list(warnings),
        reduce="mean",
        backend="ort",
    ).to_record()


def _person_files(track: int | None, p: float, frames: int = 4) -> dict:
    return {
        "track": track,
        "p_fake": p,
        "label": "FAKE" if p >= 0.5 else "REAL",
        "frame_indices": list(range(frames)),
        "frame_p_fake": [p] * frames,
        "crops": [f"/f/p_crop_{k}.png" for k in range(frames)],
        "overlays": [],
    }


def _page(rec: dict, people: list[dict] | None = None, *, demo=False, name="clip.mp4") -> str:
    files = {
        "overlays": [f"/f/overlay_{k}.png" for k in range(rec["frames"])],
        "crops": [f"/f/crop_{k}.png" for k in range(rec["frames"])],
        "frames": [f"/f/frame_{k}.jpg" for k in range(rec["frames"])],
        "scores": "/f/scores.png",
        "contact_sheet": "/f/contact_sheet.png",
        "people": people
        if people is not None
        else [_person_files(t["track"], t["p_fake"], t["frames"]) for t in rec["tracks"]],
    }
    job = {"id": "0" * 32, "status": "done", "filename": name, "result": rec, "files": files}
    return pages.job_page(job, now=0.0, demo=demo)


def _badge(page: str, ident: str = "verdict") -> tuple[str, str, str, str]:
    """(data-verdict, words, amount, caption) of a badge in the page's HTML."""
    m = re.search(
        rf"id={ident} data-verdict=(\w+)><span class=words id={ident}_words>([^<]*)</span>"
        rf"(?: <span class=amount id={ident}_p>([^<]*)</span>)?"
        rf"<div class=caption id={ident}_caption>([^<]*)</div>",
        page,
    )
    assert m, f"no badge {ident}"
    return m.group(1), unescape(m.group(2)), unescape(m.group(3) or ""), unescape(m.group(4))


def test_plural_and_found_read_right():
    assert pages.plural(1, "frame") == "1 frame" and pages.plural(2, "frame") == "2 frames"
    assert pages.plural(0, "frame") == "0 frames"
    assert pages.plural(1, "person", "people") == "1 person"
    assert pages.plural(3, "person", "people") == "3 people"


def test_fake_badge_says_manipulated_with_the_calibrated_probability():
    page = _page(_record("FAKE", 0.873))
    assert _badge(page) == (
        "FAKE",
        "Manipulated",
        "87.3%",
        "calibrated probability that it is manipulated",
    )
    assert "<title>Manipulated 87.3% · clip.mp4</title>" in page
    assert "1 person was found in the video" in page and "4 frames analysed" in page
    assert "is at or above the threshold for manipulated (70%)" in page
    assert "Calibrated model (temperature 1.3)" in page and "id=uncalibrated" not in page
    assert _badge(page, "person_0_verdict")[0] == "FAKE"
    assert "id=label" not in page and "id=decided_by" not in page


def test_real_badge_says_authentic_with_the_probability_that_it_is():
    page = _page(_record("REAL", 0.12))
    assert _badge(page) == (
        "REAL",
        "Authentic",
        "88.0%",
        "calibrated probability that it is authentic",
    )
    assert "below the threshold for authentic (30%)" in page
    assert "&gt;99.9%" in pages.job_page(
        {"id": "0" * 32, "status": "done", "filename": "x", "files": {},
         "result": _record("REAL", 0.00001)},
        now=0,
    )  # fmt: skip


def test_uncertain_badge_gives_the_main_reason_and_lists_the_others():
    reasons = ["FACE_TOO_BLURRY", "FACE_TOO_DARK", "SCORE_IN_UNCERTAIN_BAND"]
    quality = {"face_px": 139.0, "sharpness": 0.0072, "exposure": 14.1, "face_frames": 4,
               "face_coverage": 1.0}  # fmt: skip
    warnings = [
        "FACE_TOO_BLURRY: the face is blurred (out of focus, motion or heavy compression)",
        "FACE_TOO_DARK: the face is too dark to judge",
        "the detector input was not chosen for this video",
    ]
    page = _page(_record("UNCERTAIN", 0.5, reasons=reasons, quality=quality, warnings=warnings))
    verdict, words, amount, caption = _badge(page)
    assert (verdict, words, amount) == ("UNCERTAIN", "Cannot tell", "")
    assert caption == "The face is blurred (out of focus, motion or heavy compression)."
    assert re.findall(r"<li data-reason='(\w+)'>", page)[:3] == reasons
    other = re.search(r"<p id=other_reasons>([^<]*)</p>", page).group(1)
    assert "too dark" in other and "inside the band" in other
    table = re.search(r"<table id=quality>(.*?)</table>", page).group(1)
    assert re.findall(r"data-reason='(\w+)'", table) == ["FACE_TOO_BLURRY", "FACE_TOO_DARK"]
    assert "0.0072" in table and "at least 0.015" in table and "14.1" in table
    assert "40 to 215" in table
    # the reason warnings are said once (as reasons), the others listed as warnings
    listed = re.search(r"<ul id=warnings>(.*?)</ul>", page).group(1)
    assert "detector input" in listed and "FACE_TOO" not in listed
    assert "<title>Cannot tell · clip.mp4</title>" in page


def test_no_face_has_no_percentage_no_person_panel_and_no_face_evidence():
    rec = _record("NO_FACE", 0.075, reasons=["NO_FACE_DETECTED"], faces=0, tracks=[], people=0,
                  warnings=["no face was found in any of the 4 frames used: the score is of "
                            "whole frames, not of a face"])  # fmt: skip
    # explain still lists the whole-frame sequence as a person; the page must not show it
    whole = _page(rec, people=[_person_files(None, 0.075)])
    page = whole.split("<body>")[1]  # the style sheet names every verdict
    verdict, words, amount, caption = _badge(page)
    assert (verdict, words, amount) == ("NO_FACE", "No face to judge", "")
    assert caption.startswith("No face was found in any frame used")
    box = re.search(r"id=verdict_box>(.*?)</div>\s", page, re.S).group(1)
    assert "%" not in box and "p_fake" not in box
    for absent in ("id=person_", "People</h2>", "id=people_intro", "id='heatmaps'", "id='crops'",
                   "id=chart", "REAL", "100.0%", "id=warnings"):  # fmt: skip
        assert absent not in page, absent
    assert "id='frames'" in page and "frame 0 (no face)" in page
    assert "<title>No face to judge · clip.mp4</title>" in whole


def test_no_person_panel_when_no_person_was_scored():
    quality = {"face_px": 140.0, "face_frames": 1, "face_coverage": 0.25}
    rec = _record("UNCERTAIN", 0.55, reasons=["FEW_FACE_FRAMES"], faces=1, tracks=[], people=0,
                  quality=quality)  # fmt: skip
    page = _page(rec, people=[_person_files(None, 0.55)])
    assert "id=person_" not in page and "id=people_intro" not in page
    assert "<th>frames with the face</th><td>1 of 4 frames (25%)</td>" in page
    assert "id=coverage" not in page  # the reason says it already


def test_one_frame_and_one_missing_face_read_in_the_singular():
    page = _page(_record("FAKE", 0.9, frames=1))
    assert "1 frame analysed" in page and "1 frames" not in page
    assert re.search(r"p_fake 0\.900 · 1 frame</p>", page)
    page = _page(_record("FAKE", 0.9, frames=4, faces=3))
    assert "The face was found in 3 of 4 frames; that frame was judged as a whole picture" in page
    page = _page(_record("FAKE", 0.9, frames=4, faces=2))
    assert "the other 2 were judged" in page


def test_two_people_each_with_a_badge_and_the_deciding_one_named():
    fake = _track(1, 0.91, "FAKE")
    real = _track(0, 0.12, "REAL")
    rec = _record("FAKE", 0.91, tracks=[real, fake])  # the record's own values: track 1's
    page = _page(rec)
    assert "2 people were found in the video and 2 people were scored" in page
    assert _badge(page, "person_0_verdict")[:3] == ("REAL", "Authentic", "88.0%")
    assert _badge(page, "person_1_verdict")[:3] == ("FAKE", "Manipulated", "91.0%")
    assert "Decided by person 2 of 2: manipulated." in page
    assert "person 2 decided this one" in page
    panels = re.findall(r"<div class='box person' id=person_(\d) data-verdict=(\w+)>(.*?)</h3>",
                        page)  # fmt: skip
    assert [(k, v, "decided the verdict" in h) for k, v, h in panels] == [
        ("0", "REAL", False),
        ("1", "FAKE", True),
    ]
    assert "Heatmaps of person 2, who decided the verdict" in page


def test_deciding_person_is_found_by_the_records_values_not_the_order():
    persons = [_person_files(3, 0.7), _person_files(5, 0.7)]
    persons[1]["frame_indices"] = [0, 1, 2, 3]
    persons[0]["frame_indices"] = [4, 5, 6, 7]
    rec = _record("UNCERTAIN", 0.7, reasons=["SCORE_IN_UNCERTAIN_BAND"])
    assert pages.deciding_person(rec, persons) == 1


def test_people_not_scored_are_counted_in_words():
    page = _page(_record("REAL", 0.1, people=2))
    assert "2 people were found in the video; only the person seen in the most frames" in page
    assert "1 other person in the video was not scored" in page
    page = _page(_record("REAL", 0.1, people=3, warnings=["2 other people in the video were "
                                                         "not scored (--faces all)"]))  # fmt: skip
    assert "2 other people in the video were not scored" in page and "person(s)" not in page


@pytest.mark.parametrize("demo", [False, True])
def test_uncalibrated_and_untrained_models_say_so(demo):
    reasons = ["UNTRAINED_MODEL"] if demo else []
    verdict = "UNCERTAIN" if demo else "FAKE"
    page = _page(_record(verdict, 0.8, reasons=reasons, calibration=UNCALIBRATED), demo=demo)
    assert "Uncalibrated model." in page and "authentic below 40%, manipulated from 60%" in page
    assert ("Untrained model." in page) is demo
    if not demo:
        assert _badge(page)[3] == "model's probability (not calibrated) that it is manipulated"


def test_values_from_the_job_are_escaped():
    page = _page(_record("FAKE", 0.9, warnings=["<b>x</b>"]), name="<script>.mp4")
    assert "<script>.mp4" not in page and "&lt;script&gt;.mp4" in page
    assert "<b>x</b>" not in page
