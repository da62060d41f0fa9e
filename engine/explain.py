"""Heatmaps of what the classifier looked at: the original's ``plot_heat_map``, done right.

The map is the original's: the last convolutional feature map of a frame (2048 x 4 x 4 at
112 x 112) weighted by ``linear1``'s row for the video's predicted class, min-max normalised,
upsampled and overlaid on the frame's 112 x 112 face crop (not, as in the original, always on
the last frame). It is not a true CAM: ``linear1`` acts on LSTM outputs, not on CNN channels.

The exported classifier offers the feature map as its optional ``fmap`` output (ONNX Runtime
computes it anyway, as the input of the pooling), so explaining runs the same graph once; the
``linear1`` weight comes from ``linear1.npy`` written at export. Drawing uses OpenCV only, so
the runtime stays free of plotting libraries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from core.classifier import FMAP
from core.errors import ArtifactNotFoundError, ModelFormatError
from core.sidecar import ModelSpec

if TYPE_CHECKING:
    from engine.api import Engine, Prediction

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS_FILE = "linear1.npy"
TILE = 192  # contact-sheet tile and per-frame overlay size, pixels
FAKE_BGR = (40, 40, 220)
REAL_BGR = (60, 160, 40)
UNCERTAIN_BGR = (0, 130, 220)
NO_FACE_BGR = (110, 110, 110)
#: The colour of each verdict's headline (core.verdict.VERDICTS).
VERDICT_BGR = {
    "FAKE": FAKE_BGR,
    "REAL": REAL_BGR,
    "UNCERTAIN": UNCERTAIN_BGR,
    "NO_FACE": NO_FACE_BGR,
}
INK = (40, 40, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PersonExplanation:
    """One scored person (face track): the crops, heatmaps and scores of their frames."""

    track: int | None  # the face track's id (None: per-frame rule, or the caller's crops)
    p_fake: float
    label: str
    frame_indices: list[int]
    frame_p_fake: list[float]
    crops: list[np.ndarray]  # 112x112 BGR face crops, one per frame used
    cams: np.ndarray  # (frames, 4, 4) heatmaps for this person's predicted class
    predicted_class: int


@dataclass(frozen=True)
class Explanation:
    """A prediction plus what the page and ``dfe explain`` draw from it: the deciding person's
    crops, frames and heatmaps, and every scored person's (``people``)."""

    prediction: Prediction
    crops: list[np.ndarray]  # 112x112 BGR face crops, one per frame used
    frames: list[np.ndarray | None]  # the full BGR frames (None when not kept)
    cams: np.ndarray  # (frames, 4, 4) heatmaps, unnormalised
    predicted_class: int  # the class whose linear1 row weights the maps (0 FAKE, 1 REAL)
    people: list[PersonExplanation] = dataclasses.field(default_factory=list)


def explain_weights(spec: ModelSpec) -> np.ndarray:
    """``linear1``'s weight (2, 2048), from the file named in the sidecar."""
    info = spec.graphs.classifier.explain
    path = spec.directory / (info.weights if info and info.weights else DEFAULT_WEIGHTS_FILE)
    if not path.is_file():
        raise ArtifactNotFoundError(
            f"{spec.directory} has no {path.name} (linear1's weights for heatmaps): it was "
            "exported before dfe explain existed; re-export the checkpoint with dfe export"
        )
    w = np.load(path, allow_pickle=False)
    if w.ndim != 2 or w.shape[0] != 2:
        raise ModelFormatError(f"{path}: expected a (2, 2048) array, got {w.shape}; re-export")
    return w.astype(np.float32)


def cam_maps(fmap: np.ndarray, weights: np.ndarray, cls: int) -> np.ndarray:
    """(N, C, h, w) feature maps -> (N, h, w) maps: each position's C-vector dotted with
    ``weights[cls]`` (the original's ``fmap[i].reshape(C, h*w).T @ linear1.weight[idx]``)."""
    return np.einsum("nchw,c->nhw", fmap.astype(np.float32), weights[cls])


def heat_overlay(crop: np.ndarray, cam: np.ndarray, *, size: int = TILE) -> np.ndarray:
    """A BGR crop with the jet-coloured, min-max normalised map upsampled onto it."""
    lo, hi = float(cam.min()), float(cam.max())
    norm = (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)
    heat = cv2.resize((norm * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    heat = cv2.applyColorMap(heat, cv2.COLORMAP_JET)
    img = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(img, 0.55, heat, 0.45, 0)


def explain(
    engine: Engine,
    video: str | os.PathLike[str],
    *,
    seq_len: int | None = None,
    sampling: str = "first",
    keep_frames: bool = True,
    progress: Progress | None = None,
    timeline: bool | None = None,
) -> Explanation:
    """Score ``video`` as :meth:`Engine.predict` does and compute a heatmap per frame used.
    With ``timeline`` (default: the engine's ``timeline`` option) the whole video's timeline
    is computed too (:meth:`Engine.timeline`) and applied to the prediction
    (:func:`engine.timeline.apply_segments`: its ``timeline`` and ``segments``, the verdict
    taking them into account); a timeline that cannot be made is a warning, as in
    :meth:`Engine.predict`."""
    weights = explain_weights(engine.spec_for(seq_len))
    seen = engine.inspect(
        video,
        seq_len=seq_len,
        sampling=sampling,
        outputs=(FMAP,),
        keep_frames=keep_frames,
        progress=progress,
    )
    t = time.perf_counter()
    pred = seen.prediction
    cls = 0 if pred.label == "FAKE" else 1
    cams = cam_maps(seen.outputs[FMAP], weights, cls)
    people = []
    for person in seen.people:
        person_cls = 0 if person.label == "FAKE" else 1
        people.append(
            PersonExplanation(
                track=person.track,
                p_fake=person.p_fake,
                label=person.label,
                frame_indices=person.frame_indices,
                frame_p_fake=person.frame_p_fake,
                crops=person.crops,
                cams=cam_maps(person.outputs[FMAP], weights, person_cls),
                predicted_class=person_cls,
            )
        )
    timings = {**pred.timings, "explain": round(time.perf_counter() - t, 6)}
    pred = dataclasses.replace(pred, timings=timings)
    if engine.config.timeline if timeline is None else timeline:
        pred = with_timeline(engine, video, pred, progress=progress)
    return Explanation(pred, seen.crops, seen.frames, cams, cls, people)


def with_timeline(
    engine: Engine,
    video: str | os.PathLike[str],
    pred: Prediction,
    *,
    progress: Progress | None = None,
) -> Prediction:
    """``pred`` with the timeline of ``video`` at the engine's ``timeline_fps`` applied (its
    segments decide the verdict as in ``dfe predict --timeline``); an error making it is a
    warning and ``pred`` keeps its verdict."""
    from core.errors import EngineError
    from engine.timeline import apply_segments

    if not pred.ok:
        return pred
    if progress is not None:
        progress("computing the whole-video timeline")
    try:
        line = engine.timeline(video)
    except EngineError as exc:
        return dataclasses.replace(
            pred, warnings=[*pred.warnings, f"the timeline could not be made: {exc}"]
        )
    return apply_segments(pred, line)


# ---------------------------------------------------------------------- drawing


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color, thick=1) -> None:
    cv2.putText(img, text, org, FONT, scale, color, thick, cv2.LINE_AA)


def _p_color(p: float) -> tuple[int, int, int]:
    return FAKE_BGR if p >= 0.5 else REAL_BGR


def frame_with_box(frame: np.ndarray, box: Sequence[int] | None, *, width: int = 480) -> np.ndarray:
    """The full frame scaled to ``width`` with the crop box drawn (or a 'no face' note)."""
    scale = width / frame.shape[1]
    img = cv2.resize(frame, (width, round(frame.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    if box is not None:
        x1, y1, x2, y2 = (round(v * scale) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 255, 255), 2)
    else:
        _text(img, "no face: whole frame used", (8, 24), 0.6, (0, 0, 255), 2)
    return img


def score_plot(
    p_fake: Sequence[float],
    indices: Sequence[int],
    *,
    video_p_fake: float | None = None,
    width: int = 900,
    height: int = 260,
    title: tuple[str, tuple[int, int, int]] | None = None,
    bar_color: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Bar chart of per-frame p_fake (red above 0.5, green below, or all ``bar_color``), the 0.5
    line dashed and the video's p_fake as a blue line; ``title`` (text, colour) replaces
    "p_fake per frame"."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 56, 16, 34, 40
    pw, ph = width - left - right, height - top - bottom
    text, color = title or ("p_fake per frame", INK)
    _text(img, text, (left, 22), 0.6, color, 1)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (180, 180, 180), 1)
    for v in (0.0, 0.5, 1.0):
        y = top + round((1 - v) * ph)
        _text(img, f"{v:.1f}", (12, y + 5), 0.45, INK)
        if v == 0.5:
            for x in range(left, left + pw, 12):
                cv2.line(img, (x, y), (min(x + 6, left + pw), y), (120, 120, 120), 1)
    n = max(len(p_fake), 1)
    slot = pw / n
    bar = max(1, math.floor(slot * 0.7))
    label_every = max(1, math.ceil(n / 20))
    for k, (p, idx) in enumerate(zip(p_fake, indices)):
        x = left + round(k * slot + (slot - bar) / 2)
        y = top + round((1 - float(p)) * ph)
        color = bar_color or _p_color(float(p))
        cv2.rectangle(img, (x, y), (x + bar - 1, top + ph), color, -1)
        if k % label_every == 0:
            _text(img, str(idx), (x, top + ph + 16), 0.4, INK)
    _text(img, "frame index", (left + pw // 2 - 40, height - 6), 0.45, INK)
    if video_p_fake is not None:
        y = top + round((1 - video_p_fake) * ph)
        cv2.line(img, (left, y), (left + pw, y), (200, 90, 20), 2)
        _text(img, f"video p_fake {video_p_fake:.3f}", (left + pw - 190, 22), 0.5, (200, 90, 20), 1)
    return img


def _plot_style(pred: Prediction) -> dict[str, Any]:
    """How the score plot shows the video's verdict: in its title; without a face, the scores
    of whole frames in gray and no video p_fake (they are not a verdict)."""
    verdict = pred.verdict or pred.label
    if verdict == "NO_FACE":
        title = ("p_fake of whole frames - NO FACE: not a verdict", NO_FACE_BGR)
        return {"video_p_fake": None, "title": title, "bar_color": NO_FACE_BGR}
    title = (f"p_fake per frame - verdict {verdict}", VERDICT_BGR.get(str(verdict), INK))
    return {"video_p_fake": pred.p_fake, "title": title, "bar_color": None}


def _tile(
    overlay: np.ndarray, idx: int, p: float, face: bool, color: tuple[int, int, int] | None = None
) -> np.ndarray:
    cap = 34
    tile = np.full((TILE + cap, TILE, 3), 255, np.uint8)
    tile[:TILE] = overlay
    cv2.rectangle(tile, (0, TILE), (TILE - 1, TILE + cap - 1), color or _p_color(p), -1)
    _text(tile, f"#{idx}  p_fake {p:.2f}", (6, TILE + 23), 0.55, (255, 255, 255), 1)
    if not face:
        _text(tile, "no face", (6, 20), 0.55, (255, 255, 255), 2)
    return tile


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only."""
    return text.encode("ascii", "replace").decode("ascii")


def _wrap(text: str, width: int, scale: float) -> list[str]:
    """``text`` cut at spaces into lines that fit ``width`` pixels in :data:`FONT`."""
    lines: list[str] = []
    for word in text.split(" "):
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(trial, FONT, scale, 1)[0][0] <= width:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines or [""]


def _percent(x: float) -> str:
    """A probability as a percentage that never claims the certainty it rounds to."""
    return ">99.9%" if x >= 0.9995 else "<0.1%" if x < 0.0005 else f"{x * 100:.1f}%"


def verdict_headline(pred: Prediction) -> tuple[str, str, tuple[int, int, int]]:
    """What the contact sheet says first: the verdict (``FAKE 87.3%`` with the calibrated
    p_fake, ``REAL 88.0%`` with its complement, ``UNCERTAIN``, ``NO FACE``: no probability is a
    verdict), the line under it (the main reason in words for UNCERTAIN and NO_FACE; the rule
    for FAKE and REAL) and the colour."""
    from core.verdict import reason_text

    verdict = pred.verdict or ("NO_FACE" if not pred.faces else pred.label or "UNCERTAIN")
    p = pred.p_fake_calibrated if pred.p_fake_calibrated is not None else pred.p_fake
    cal = pred.calibration or {}
    kind = "calibrated" if cal.get("status") == "calibrated" else "uncalibrated"
    color = VERDICT_BGR.get(verdict, INK)
    if verdict == "FAKE" and p is not None:
        head = f"FAKE  {_percent(p)}"
        line = f"manipulated: {kind} p_fake {p:.3f} >= {cal.get('fake_at', 0.6):.2f}"
    elif verdict == "REAL" and p is not None:
        head = f"REAL  {_percent(1 - p)}"
        line = f"authentic: {kind} p_fake {p:.3f} < {cal.get('real_below', 0.4):.2f}"
    else:
        head = "NO FACE" if verdict == "NO_FACE" else verdict
        main = pred.reasons[0] if pred.reasons else None
        if verdict == "NO_FACE":
            line = reason_text(main or "NO_FACE_DETECTED")
        else:
            line = f"cannot tell: {reason_text(main)}" if main else "cannot tell"
        if len(pred.reasons) > 1:
            line += "; also " + "; ".join(reason_text(code) for code in pred.reasons[1:])
    return head, _ascii(line), color


def contact_sheet(expl: Explanation, overlays: list[np.ndarray], *, cols: int = 5) -> np.ndarray:
    """Header (the verdict and its main reason, :func:`verdict_headline`), a grid of overlays
    captioned with frame index and p_fake, and the score plot underneath."""
    pred = expl.prediction
    n = len(overlays)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    gap = 8
    tile_h = TILE + 34
    grid_w = cols * TILE + (cols + 1) * gap
    width = max(grid_w, 700)
    style = _plot_style(pred)
    plot = score_plot(pred.frame_p_fake, pred.frame_indices, width=width, height=240, **style)
    head, line, color = verdict_headline(pred)
    name = _ascii(Path(pred.video).name)
    score = "" if pred.verdict == "NO_FACE" else f"   p_fake {pred.p_fake:.3f}"
    cls = "FAKE" if expl.predicted_class == 0 else "REAL"
    note = (
        "no face: whole frames, heatmaps say nothing of a face"
        if pred.verdict == "NO_FACE"
        else f"heatmap: evidence for {cls} (red = most)"
    )
    lines = [(t, 0.55, color) for t in _wrap(line, width - 2 * gap, 0.55)]
    lines += [(f"{name}{score}   frames {pred.frames}   faces {pred.faces}", 0.5, INK)]
    lines += [(note, 0.45, INK)]
    header = 48 + 22 * len(lines) + 8
    height = header + rows * (tile_h + gap) + gap + plot.shape[0]
    sheet = np.full((height, width, 3), 255, np.uint8)
    _text(sheet, head, (gap, 40), 1.2, color, 3)
    for k, (text, scale, ink) in enumerate(lines):
        _text(sheet, text, (gap, 66 + 22 * k), scale, ink)
    for k, ov in enumerate(overlays):
        r, c = divmod(k, cols)
        x = gap + c * (TILE + gap)
        y = header + gap + r * (tile_h + gap)
        face = pred.boxes[k] is not None if k < len(pred.boxes) else True
        sheet[y : y + tile_h, x : x + TILE] = _tile(
            ov, pred.frame_indices[k], pred.frame_p_fake[k], face, style["bar_color"]
        )
    sheet[height - plot.shape[0] :, : plot.shape[1]] = plot
    return sheet


def write_explanation(expl: Explanation, outdir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write per-frame overlays, crops and boxed frames, the score plot, the contact sheet and
    ``explain.json`` (the prediction record plus the file names) into ``outdir``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    pred = expl.prediction
    files: dict[str, Any] = {"overlays": [], "crops": [], "frames": []}
    overlays = []
    for k, idx in enumerate(pred.frame_indices):
        ov = heat_overlay(expl.crops[k], expl.cams[k])
        overlays.append(ov)
        names = (f"overlay_{idx:05d}.png", f"crop_{idx:05d}.png")
        cv2.imwrite(str(out / names[0]), ov)
        cv2.imwrite(str(out / names[1]), expl.crops[k])
        files["overlays"].append(names[0])
        files["crops"].append(names[1])
        frame = expl.frames[k] if k < len(expl.frames) else None
        if frame is not None:
            name = f"frame_{idx:05d}.jpg"
            cv2.imwrite(str(out / name), frame_with_box(frame, pred.boxes[k]))
            files["frames"].append(name)
    cv2.imwrite(
        str(out / "scores.png"),
        score_plot(pred.frame_p_fake, pred.frame_indices, **_plot_style(pred)),
    )
    cv2.imwrite(str(out / "contact_sheet.png"), contact_sheet(expl, overlays))
    files["scores"] = "scores.png"
    files["contact_sheet"] = "contact_sheet.png"
    files["people"] = []
    for k, person in enumerate(expl.people):  # every scored person, the deciding one included
        entry: dict[str, Any] = {
            "track": person.track,
            "p_fake": person.p_fake,
            "label": person.label,
            "frame_indices": person.frame_indices,
            "frame_p_fake": person.frame_p_fake,
            "crops": [],
            "overlays": [],
        }
        for j, idx in enumerate(person.frame_indices):
            crop_name, overlay_name = f"p{k}_crop_{idx:05d}.png", f"p{k}_overlay_{idx:05d}.png"
            cv2.imwrite(str(out / crop_name), person.crops[j])
            cv2.imwrite(str(out / overlay_name), heat_overlay(person.crops[j], person.cams[j]))
            entry["crops"].append(crop_name)
            entry["overlays"].append(overlay_name)
        files["people"].append(entry)
    doc = {"record": pred.to_record(), "predicted_class": expl.predicted_class, "files": files}
    (out / "explain.json").write_text(json.dumps(doc, indent=2) + "\n")
    return files


# ---------------------------------------------------------------------- the timeline

#: At most this many sampled frames of a timeline get thumbnails (spread over the video).
TIMELINE_THUMBS = 120
#: Width of a timeline frame thumbnail and side of a person's crop thumbnail, pixels.
THUMB_WIDTH = 160
THUMB_CROP = 64
#: People whose crops get thumbnails (and whose charts the job page draws), most first.
TIMELINE_PEOPLE = 12
_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 80]


def thumbnail_positions(n: int, limit: int = TIMELINE_THUMBS) -> list[int]:
    """Positions of at most ``limit`` of ``n`` sampled frames, evenly spread, the first and the
    last included."""
    if n <= limit:
        return list(range(n))
    if limit <= 1:
        return [0][:limit]
    return sorted({round(k * (n - 1) / (limit - 1)) for k in range(limit)})


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, None when it is missing or not finite (a timeline's time the
    decoder could not give: JSON has no NaN)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _box_in(frame: np.ndarray, box: Sequence[float]) -> tuple[int, int, int, int] | None:
    h, w = frame.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, math.ceil(box[2])), min(h, math.ceil(box[3]))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def write_timeline_thumbnails(
    engine: Engine,
    video: str | os.PathLike[str],
    timeline: dict[str, Any],
    outdir: str | os.PathLike[str],
    *,
    limit: int = TIMELINE_THUMBS,
    width: int = THUMB_WIDTH,
    crop: int = THUMB_CROP,
    people: int = TIMELINE_PEOPLE,
) -> dict[str, Any]:
    """Small JPEGs of a timeline's moments, for the job page: of at most ``limit`` sampled
    frames spread over the video (:func:`thumbnail_positions`), the frame ``width`` px wide
    with the people's boxes (``tl_frame_<index>.jpg``) and each of the first ``people``
    people's crop, ``crop`` px square (``tl_p<k>_<index>.jpg``; None where their face is
    absent). ``timeline`` is the record's (:meth:`engine.timeline.Timeline.to_record`); the
    frames are decoded again, one streaming pass as the timeline's, stopping after the last
    one needed. Returns ``{"times", "indices", "frames", "crops"}`` (``crops``: one list per
    person, aligned with ``frames``)."""
    from preprocess.video import sample_frames

    indices: list[int] = list(timeline.get("frame_indices") or [])
    times: list[float] = list(timeline.get("times") or [])
    persons = list(timeline.get("people") or [])[:people]
    positions = thumbnail_positions(len(indices), limit)
    slot_of = {indices[p]: k for k, p in enumerate(positions)}
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    frames: list[str | None] = [None] * len(positions)
    crops: list[list[str | None]] = [[None] * len(positions) for _ in persons]
    if positions:
        pipeline = engine.pipeline_for(engine.spec_for(None))
        last = indices[positions[-1]]
        stream = sample_frames(
            video,
            lambda index, _t: index in slot_of,
            backend=pipeline.decode_backend,
            threads=pipeline.decode_threads,
            colour=pipeline.colour,
            deinterlace=pipeline.deinterlace,
        )
        try:
            for index, _t, frame in stream:
                k = slot_of[index]
                pos = positions[k]
                scale = width / frame.shape[1]
                small = cv2.resize(
                    frame,
                    (width, max(1, round(frame.shape[0] * scale))),
                    interpolation=cv2.INTER_AREA,
                )
                for j, person in enumerate(persons):
                    box = (person.get("boxes") or [None] * len(indices))[pos]
                    inside = None if box is None else _box_in(frame, box)
                    if inside is None:
                        continue
                    x1, y1, x2, y2 = inside
                    face = cv2.resize(
                        frame[y1:y2, x1:x2], (crop, crop), interpolation=cv2.INTER_AREA
                    )
                    name = f"tl_p{j}_{index:05d}.jpg"
                    cv2.imwrite(str(out / name), face, _JPEG)
                    crops[j][k] = name
                    corners = [round(v * scale) for v in inside]
                    cv2.rectangle(small, tuple(corners[:2]), tuple(corners[2:]), (0, 255, 255), 1)
                name = f"tl_frame_{index:05d}.jpg"
                cv2.imwrite(str(out / name), small, _JPEG)
                frames[k] = name
                if index >= last:
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:  # stop decoding: the rest of the video is not needed
                close()
    return {
        "times": [finite_or_none(times[p]) for p in positions],
        "indices": [indices[p] for p in positions],
        "frames": frames,
        "crops": crops,
    }


def clock(seconds: float) -> str:
    """``0:03.2``, ``12:05.0``, ``1:02:03.5``: a moment of a video, to the tenth of a second."""
    tenths = max(0, round(seconds * 10))
    s, tenth = divmod(tenths, 10)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}.{tenth}" if h else f"{m}:{s:02d}.{tenth}"


def segment_words(segment: dict[str, Any], person: int | None = None) -> str:
    """A segment in plain words: ``Manipulated from 0:03.2 to 0:06.7, person 1, confidence
    96%``; ``person`` is its number as shown (default: the face track's id + 1)."""
    number = person if person is not None else (segment.get("person") or 0) + 1
    score = float(segment.get("score") or 0.0)
    confidence = ">99%" if score >= 0.995 else "<1%" if score < 0.005 else f"{score * 100:.0f}%"
    return (
        f"Manipulated from {clock(segment['start'])} to {clock(segment['end'])}, person "
        f"{number}, confidence {confidence}"
    )


def write_timeline_plot(
    pred: Prediction, path: str | os.PathLike[str], *, people: int = TIMELINE_PEOPLE
) -> Path:
    """``timeline.png``: each person's calibrated p_fake over the video's time (one panel
    each; a break in the line where their face is absent), the thresholds dashed, the
    segments shaded. Needs matplotlib (the ``eval`` extra). Raises ``ValueError`` for a
    prediction without a timeline."""
    from core.deps import require

    require("matplotlib", purpose="the timeline plot (timeline.png)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    line = pred.timeline
    if not line:
        raise ValueError(f"{pred.video}: the prediction has no timeline (use --timeline)")
    times = np.asarray(
        [np.nan if finite_or_none(t) is None else t for t in line.get("times") or []],
        dtype=np.float64,
    )
    rule = line.get("rule") or {}
    cal = pred.calibration or {}
    fake_at = rule.get("opens_at", cal.get("fake_at", 0.6))
    real_below = rule.get("closes_below", cal.get("real_below", 0.4))
    persons = list(line.get("people") or [])[:people]
    rows = max(1, len(persons))
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.2 + 1.9 * rows), sharex=True, squeeze=False)
    end = float(np.nanmax(times)) if np.isfinite(times).any() else 1.0
    kind = "calibrated" if rule.get("calibrated") else "uncalibrated"
    for k, ax in enumerate(axes[:, 0]):
        person = persons[k] if k < len(persons) else None
        if person is not None:
            p = np.asarray([np.nan if v is None else v for v in person["p_fake"]], dtype=np.float64)
            ax.plot(times, p, color="#1f4e9c", lw=1.4, marker="." if len(p) <= 200 else None)
            mine = [g for g in pred.segments if g.get("person") == person.get("track")]
            for j, seg in enumerate(mine):
                label = "judged manipulated" if j == 0 else None
                ax.axvspan(seg["start"], seg["end"], color="#c22", alpha=0.18, lw=0, label=label)
            ax.set_title(
                f"person {k + 1} (track {person.get('track')}, {person.get('frames')} frames)",
                fontsize=9,
                loc="left",
            )
        else:
            ax.text(0.5, 0.5, "no face in any sampled frame", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
        ax.axhline(fake_at, color="#c22", ls="--", lw=1, label=f"manipulated from {fake_at:.2f}")
        ax.axhline(
            real_below, color="#282", ls="--", lw=1, label=f"authentic below {real_below:.2f}"
        )
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, max(end, 1e-3))
        ax.set_ylabel(f"p_fake ({kind})", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("time in the video (s)")
    verdict = pred.verdict or pred.label
    fig.suptitle(
        f"{Path(str(pred.video)).name}: {verdict}, {len(pred.segments)} manipulated "
        f"segment(s), {line.get('frames')} frames at {line.get('fps'):g} fps",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
