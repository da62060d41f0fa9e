"""Server-rendered HTML of ``dfe serve``: the upload form, the progress page, the result page.

Plain HTML and a few lines of JavaScript (the slider's steps, polling the job API); no build
step, nothing loaded from elsewhere. Every value from a job is escaped.
"""

from __future__ import annotations

import json
import re
from html import escape
from typing import Any

from core.verdict import REASONS, reason_text
from engine.server.live_page import live_section
from preprocess.quality import (
    GRAYSCALE_BELOW,
    INTERLACED_SHARE,
    MAX_EXPOSURE,
    MAX_ROLL,
    MIN_BITS_PER_PIXEL,
    MIN_EXPOSURE,
    MIN_FACE_COVERAGE,
    MIN_FACE_PX,
    MIN_SHARPNESS,
    MONOCHROME_BELOW,
)

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;
color:#222}
h1{font-size:1.5em}.muted{color:#666}.box{border:1px solid #ddd;border-radius:8px;padding:16px;
margin:16px 0}
.badge{display:inline-block;border:2px solid;border-radius:10px;padding:10px 18px;margin:4px 0}
.badge .words{font-size:2.4em;font-weight:700}.badge .amount{font-size:2.4em;margin-left:.4em}
.badge .caption{font-size:1em;margin-top:2px}.badge.small{padding:4px 10px}
.badge.small .words,.badge.small .amount{font-size:1.3em}.badge.small .caption{font-size:.85em}
.badge.FAKE{color:#b01c1c;background:#fdecec;border-color:#c22}
.badge.REAL{color:#1d6b1d;background:#eaf6e6;border-color:#282}
.badge.UNCERTAIN{color:#8a5300;background:#fff4e0;border-color:#e0a030}
.badge.NO_FACE{color:#444;background:#eee;border-color:#888}
.verdict-box.FAKE{border-color:#c22}.verdict-box.REAL{border-color:#282}
.verdict-box.UNCERTAIN{border-color:#e0a030}.verdict-box.NO_FACE{border-color:#888}
.decider{font-size:.8em;font-weight:400;color:#666;margin-left:.5em}
#quality th,#quality td{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;text-align:center;
font-size:.8em}.frames img{width:240px}.crops img{width:112px;height:112px}
.heatmaps img{width:160px;height:160px}table{border-collapse:collapse}td,th{padding:4px 10px;
border-bottom:1px solid #eee;text-align:right}.warn{background:#fff4e0;border-color:#f0b050}
progress{width:320px}
svg.timeline{width:100%;height:auto;cursor:crosshair;display:block}
svg.timeline text{font-size:11px;fill:#555}#segments a{cursor:pointer}
#tl_viewer{display:flex;gap:16px;align-items:flex-start}#tl_viewer figure{margin:0}
#tl_frame{width:320px}#tl_crop{width:128px;height:128px}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


DEMO_BANNER = (
    "<div class='box warn' id=demo><b>Demo model.</b> This server runs the untrained demo "
    "model: its scores mean nothing. Export a trained checkpoint (dfe export) and serve that "
    "for real verdicts.</div>"
)


def upload_page(
    steps: tuple[int, ...],
    max_bytes: int,
    *,
    demo: bool = False,
    ready: bool = True,
    timeline_fps: float = 2.0,
    timeline: bool = False,
    live: dict[str, Any] | None = None,
) -> str:
    """The upload form; ``timeline`` checks its "Whole video timeline" box (a server started
    with ``--timeline``), which scores the whole video at ``timeline_fps``. Below it the live
    section (:func:`engine.server.live_page.live_section`; ``live``: its settings, None: off)."""
    default = 1 if len(steps) > 1 else 0
    banner = DEMO_BANNER if demo else ""
    if not ready:
        banner += (
            "<div class='box warn' id=loading>The models are still loading (or failed to "
            "load): see <a href='/api/v1/health'>/api/v1/health</a>. Uploads are refused until "
            "they are ready.</div>"
        )
    body = f"""
<h1>deepfake-engine</h1>
{banner}
<p class=muted>Upload a video; the model reads its first N frames, finds the face in each and
says whether it looks manipulated or authentic, or that it cannot tell (and why).</p>
<form class=box id=upload action="/upload" method=post enctype="multipart/form-data">
  <p><label>Video <input type=file name=video id=video accept="video/*" required></label>
  <span class=muted>(up to {max_bytes / 2**20:.0f} MB)</span></p>
  <p><label>Sequence length
  <input type=range id=seq_slider min=0 max={len(steps) - 1} step=1 value={default}></label>
  <output id=seq_out>{steps[default]}</output> frames
  <input type=hidden name=seq_len id=seq_len value={steps[default]}></p>
  <p><label><input type=checkbox name=timeline id=timeline value=1{" checked" if timeline else ""}>
  Whole video timeline</label> <span class=muted>(also scores the whole video, {timeline_fps:g}
  frames per second, each person over time, and finds the parts that look manipulated; takes
  longer)</span></p>
  <p><button type=submit id=submit>Upload and analyse</button>
  <span id=sending class=muted></span></p>
</form>
{live_section(live, words=VERDICT_WORDS)}
<p class=muted>JSON API: <a href="/docs">/docs</a></p>
<script>
const steps = {json.dumps(list(steps))};
const slider = document.getElementById('seq_slider');
slider.addEventListener('input', () => {{
  const v = steps[slider.value];
  document.getElementById('seq_out').textContent = v;
  document.getElementById('seq_len').value = v;
}});
document.getElementById('upload').addEventListener('submit', () => {{
  document.getElementById('submit').disabled = true;
  document.getElementById('sending').textContent = 'uploading...';
}});
</script>"""
    return _page("deepfake-engine", body)


def error_page(status: int, message: str) -> str:
    body = (
        f"<h1>Error {status}</h1><p class='box warn' id=error>{escape(message)}</p>"
        "<p><a href='/'>Upload another video</a></p>"
    )
    return _page(f"Error {status}", body)


def job_page(job: dict[str, Any], *, now: float, demo: bool = False) -> str:
    if job["status"] in ("queued", "running"):
        return _progress(job, now)
    if job["status"] == "error":
        return error_page(422, f"{job['filename']}: {job['error']}")
    return _result(job, demo=demo)


def _progress(job: dict[str, Any], now: float) -> str:
    body = f"""
<h1>Analysing {escape(job["filename"])}</h1>
<div class=box id=progress><p><progress id=bar></progress></p>
<p>Status: <b id=status>{escape(job["status"])}</b> <span id=stage class=muted></span></p>
<p class=muted>elapsed <span id=elapsed>{now - job["created"]:.0f}</span> s</p></div>
<script>
const started = Date.now() - {(now - job["created"]) * 1000:.0f};
async function poll() {{
  try {{
    const r = await fetch('/api/v1/jobs/{job["id"]}');
    const j = await r.json();
    document.getElementById('status').textContent = j.status;
    let stage = j.stage || '';
    if (j.status === 'queued' && j.queue_position) stage = 'position ' + j.queue_position;
    document.getElementById('stage').textContent = stage;
    if (j.status === 'done' || j.status === 'error') {{ location.reload(); return; }}
  }} catch (e) {{}}
  document.getElementById('elapsed').textContent = Math.round((Date.now() - started) / 1000);
  setTimeout(poll, 700);
}}
poll();
</script>"""
    return _page("analysing...", body)


def _figures(
    urls: list[str], captions: list[str], cls: str, alt: str, *, ident: str | None = None
) -> str:
    items = "".join(
        f"<figure><img src='{escape(u)}' alt='{alt} {escape(c)}'><figcaption>{escape(c)}"
        "</figcaption></figure>"
        for u, c in zip(urls, captions)
    )
    return f"<div class='grid {cls}' id='{ident or cls}'>{items}</div>"


# ---------------------------------------------------------------------- words


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 frame``, ``2 frames``, ``0 frames``; ``many`` for irregular plurals (people)."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def _found(n: int) -> str:
    """``1 person was found``, ``2 people were found``."""
    return f"{plural(n, 'person', 'people')} {'was' if n == 1 else 'were'} found"


def _percent(x: float) -> str:
    """A probability as a percentage that never claims certainty it rounds to."""
    if x >= 0.9995:
        return ">99.9%"
    if x < 0.0005:
        return "<0.1%"
    return f"{x * 100:.1f}%"


def _threshold(x: float) -> str:
    """A threshold as a percentage, to the tenth when it has one (60%, 82.3%)."""
    return f"{x * 100:.1f}".removesuffix(".0") + "%"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


#: The badge's words per verdict (core.verdict.VERDICTS).
VERDICT_WORDS = {
    "FAKE": "Manipulated",
    "REAL": "Authentic",
    "UNCERTAIN": "Cannot tell",
    "NO_FACE": "No face to judge",
}

#: The quality measure behind each quality reason: (measure, record key, the model's range).
_QUALITY_ROWS: dict[str, tuple[str, str, str]] = {
    "FACE_TOO_SMALL": ("face height", "face_px", f"at least {MIN_FACE_PX:g} px"),
    "FACE_TOO_BLURRY": (
        "sharpness (variance of the Laplacian over the face's own)",
        "sharpness",
        f"at least {MIN_SHARPNESS:g}",
    ),
    "FACE_TOO_DARK": (
        "exposure (mean luma, 0-255)",
        "exposure",
        f"{MIN_EXPOSURE:g} to {MAX_EXPOSURE:g}",
    ),
    "FACE_OVEREXPOSED": (
        "exposure (mean luma, 0-255)",
        "exposure",
        f"{MIN_EXPOSURE:g} to {MAX_EXPOSURE:g}",
    ),
    "FACE_ROTATED": ("rotation from upright (degrees)", "roll", f"at most {MAX_ROLL:g}"),
    "GRAYSCALE_SOURCE": ("colourfulness (0-255)", "colourfulness", f"at least {GRAYSCALE_BELOW:g}"),
    "INTERLACED_SOURCE": (
        "frames flagged interlaced",
        "interlaced",
        f"under {INTERLACED_SHARE:.0%}",
    ),
    "HEAVY_COMPRESSION": (
        "compressed bits per pixel",
        "bits_per_pixel",
        f"at least {MIN_BITS_PER_PIXEL:g}",
    ),
    "FEW_FACE_FRAMES": (
        "frames with the face",
        "face_coverage",
        f"at least {MIN_FACE_COVERAGE:.0%}",
    ),
}

# Engine warnings the page says in its own words (the verdict's reasons, the face coverage, the
# people not scored), so that they are not shown twice.
_RESTATED = re.compile(
    r"^(?:(?:" + "|".join(REASONS) + r"): |no face was found in (?:any of|the frame) |"
    r"\d+ of \d+ frames had no face |(?:1 other person|\d+ other people) in the video w)"
)


def _verdict_of(rec: dict[str, Any]) -> str:
    """The record's verdict (records made before verdicts: NO_FACE without a face, else the
    label)."""
    verdict = rec.get("verdict")
    if verdict in VERDICT_WORDS:
        return verdict
    if not rec.get("faces"):
        return "NO_FACE"
    return rec.get("label") if rec.get("label") in ("FAKE", "REAL") else "UNCERTAIN"


def _person_verdict(person: dict[str, Any], video_verdict: str) -> str:
    """A scored person's verdict (the video's when their record has none)."""
    verdict = person.get("verdict")
    return verdict if verdict in VERDICT_WORDS else video_verdict


def _p_calibrated(rec: dict[str, Any]) -> float | None:
    p = rec.get("p_fake_calibrated")
    return rec.get("p_fake") if p is None else p


def _calibrated(rec: dict[str, Any]) -> bool:
    return (rec.get("calibration") or {}).get("status") == "calibrated"


def _badge(
    verdict: str,
    p_fake: float | None,
    reasons: list[str],
    *,
    calibrated: bool,
    ident: str,
    small: bool = False,
    segment_score: float | None = None,
) -> str:
    """The verdict badge: its words, the probability of what it says (FAKE, REAL) or the main
    reason (UNCERTAIN, NO_FACE); a video FAKE for its manipulated segments alone shows its
    most confident segment's ``segment_score`` (:func:`segment_decided`). ``data-verdict``
    holds the verdict code."""
    kind = "calibrated probability" if calibrated else "model's probability (not calibrated)"
    amount, caption = "", ""
    if verdict == "FAKE" and segment_score is not None:
        amount = _percent(segment_score)
        caption = (
            "confidence of the most certain segment the whole-video timeline judged manipulated"
        )
    elif verdict == "FAKE" and p_fake is not None:
        amount, caption = _percent(p_fake), f"{kind} that it is manipulated"
    elif verdict == "REAL" and p_fake is not None:
        amount, caption = _percent(1.0 - p_fake), f"{kind} that it is authentic"
    elif reasons:
        caption = _sentence(reason_text(reasons[0]))
    amount_html = f" <span class=amount id={ident}_p>{escape(amount)}</span>" if amount else ""
    return (
        f"<div class='badge {verdict}{' small' if small else ''}' id={ident} "
        f"data-verdict={verdict}><span class=words id={ident}_words>"
        f"{escape(VERDICT_WORDS[verdict])}</span>{amount_html}"
        f"<div class=caption id={ident}_caption>{escape(caption)}</div></div>"
    )


def _reasons_list(reasons: list[str], ident: str) -> str:
    items = "".join(
        f"<li data-reason='{escape(code)}'>{escape(_sentence(reason_text(code)))}</li>"
        for code in reasons
    )
    return f"<ul class=reasons id={ident}>{items}</ul>"


def _quality_value(key: str, quality: dict[str, Any], rec: dict[str, Any]) -> str:
    value = quality.get(key)
    if value is None:
        return "not measured"
    if key == "face_px":
        return f"{value:.0f} px"
    if key == "interlaced":
        return f"{value:.0%}"
    if key == "bits_per_pixel":
        return f"{value:.3f}"
    if key == "sharpness":
        return f"{value:.2g}"
    if key == "face_coverage":
        used = rec.get("frames") or 0
        return f"{quality.get('face_frames', 0)} of {plural(used, 'frame')} ({value:.0%})"
    return f"{value:.1f}"


def _quality_table(reasons: list[str], quality: dict[str, Any] | None, rec: dict[str, Any]) -> str:
    """The quality measures outside the model's range (those the reasons name)."""
    rows = []
    for code in reasons:
        if code not in _QUALITY_ROWS:
            continue
        measure, key, limit = _QUALITY_ROWS[code]
        q = quality or {}
        coloured = (q.get("colourfulness") or 0) >= GRAYSCALE_BELOW
        tinted = coloured and q.get("hue_spread") is not None
        if code == "GRAYSCALE_SOURCE" and tinted:  # colour, but one hue: tinted monochrome
            measure = "spread of hues (degrees)"
            key, limit = "hue_spread", f"at least {MONOCHROME_BELOW:g}"
        rows.append(
            f"<tr data-reason='{escape(code)}'><th>{escape(measure)}</th>"
            f"<td>{escape(_quality_value(key, quality or {}, rec))}</td>"
            f"<td>{escape(limit)}</td></tr>"
        )
    if not rows:
        return ""
    return (
        "<h3>Quality outside the model's range</h3><table id=quality>"
        "<tr><th>measure</th><th>this video</th><th>the model's range</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _model_note(rec: dict[str, Any], *, demo: bool) -> str:
    """What the model can promise: untrained (demo) or uncalibrated, said plainly."""
    notes = []
    if demo or "UNTRAINED_MODEL" in (rec.get("reasons") or []):
        notes.append(
            "<p id=untrained><b>Untrained model.</b> This server runs the untrained demo model: "
            "its scores mean nothing. Export a trained checkpoint (dfe export) and serve that "
            "for real verdicts.</p>"
        )
    cal = rec.get("calibration") or {}
    if not _calibrated(rec):
        real_below, fake_at = cal.get("real_below", 0.4), cal.get("fake_at", 0.6)
        notes.append(
            "<p id=uncalibrated><b>Uncalibrated model.</b> Its probabilities are the plain "
            "softmax, not fitted to how often such scores are right, and the thresholds are the "
            f"defaults (authentic below {_threshold(real_below)}, manipulated from "
            f"{_threshold(fake_at)}). "
            "Calibrate it on labelled videos (dfe calibrate) before trusting the percentages."
            "</p>"
        )
    if notes:
        return "<div class='box warn' id=model_note>" + "".join(notes) + "</div>"
    fitted = cal.get("fitted_on") or {}
    on = f", fitted on {fitted['videos']} videos" if fitted.get("videos") else ""
    return (
        f"<p class=muted id=model_note>Calibrated model (temperature {cal.get('temperature', 1):g}"
        f"{on}): manipulated from {_threshold(cal.get('fake_at', 0))}, authentic below "
        f"{_threshold(cal.get('real_below', 0))}, cannot tell in between.</p>"
    )


def segment_decided(rec: dict[str, Any]) -> float | None:
    """The confidence of the most certain manipulated segment when the segments alone made the
    video FAKE (the timeline's ``MANIPULATED_SEGMENT``, the first frames' score under the
    threshold for manipulated); None otherwise."""
    segments = rec.get("segments") or []
    if rec.get("verdict") != "FAKE" or not segments:
        return None
    if (rec.get("reasons") or [])[:1] != ["MANIPULATED_SEGMENT"]:
        return None
    p, cal = _p_calibrated(rec), rec.get("calibration") or {}
    if p is not None and p >= cal.get("fake_at", 0.6):
        return None  # the first frames say so too: their probability stays the headline
    return max(float(g.get("score") or 0.0) for g in segments)


def _basis(rec: dict[str, Any], verdict: str) -> str:
    """Why a FAKE or REAL verdict was given: the score against its threshold, and the segments
    the whole-video timeline judged manipulated."""
    p, cal = _p_calibrated(rec), rec.get("calibration") or {}
    segments = rec.get("segments") or []
    found = ""
    if segments:
        first = _segment_text(segments[0], rec.get("timeline") or {})
        found = (
            f"The whole-video timeline found {plural(len(segments), 'segment')} judged "
            f"manipulated, the first: {escape(first)}."
        )
    if segment_decided(rec) is not None:
        first_frames = "" if p is None else f" (their probability: {_percent(p)})"
        return (
            f"<p id=basis>{found} A video with a manipulated segment is not authentic, "
            f"whatever its first frames say{first_frames}.</p>"
        )
    if p is None:
        return f"<p id=basis>{found}</p>" if found else ""
    if verdict == "FAKE":
        rule = f"at or above the threshold for manipulated ({_threshold(cal.get('fake_at', 0.6))})"
    elif verdict == "REAL":
        rule = f"below the threshold for authentic ({_threshold(cal.get('real_below', 0.4))})"
    else:
        return f"<p id=basis>{found}</p>" if found else ""
    also = f" {found}" if found else ""
    return (
        f"<p id=basis>The face evidence is within the model's range, and the probability that "
        f"the video is manipulated, {_percent(p)}, is {rule}.{also}</p>"
    )


def _coverage_note(rec: dict[str, Any], verdict: str, reasons: list[str]) -> str:
    """Frames judged whole because the face was missing in them (when the reasons do not say
    so already)."""
    faces, frames = rec.get("faces") or 0, rec.get("frames") or 0
    if verdict == "NO_FACE" or "FEW_FACE_FRAMES" in reasons or not 0 < faces < frames:
        return ""
    missing = frames - faces
    return (
        f"<p id=coverage>The face was found in {faces} of {plural(frames, 'frame')}; "
        f"{'that frame was' if missing == 1 else f'the other {missing} were'} judged as a whole "
        "picture.</p>"
    )


def _why(rec: dict[str, Any], verdict: str) -> str:
    """The reasons in words, the quality measures outside range and the warnings."""
    reasons = list(rec.get("reasons") or [])
    parts = ["<h2>Why</h2>"]
    if reasons:
        parts.append(_reasons_list(reasons, "reasons"))
    parts.append(_basis(rec, verdict))
    parts.append(_coverage_note(rec, verdict, reasons))
    parts.append(_quality_table(reasons, rec.get("quality"), rec))
    warnings = [w for w in rec.get("warnings") or [] if not _RESTATED.match(w)]
    if warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
        parts.append(f"<h3>Warnings</h3><ul id=warnings>{items}</ul>")
    return "<div class=box id=why>" + "".join(parts) + "</div>"


# ---------------------------------------------------------------------- people


def _persons(rec: dict[str, Any], files: dict[str, Any]) -> list[dict[str, Any]]:
    """Every scored person: their files (crops) merged with their record (``tracks``: verdict,
    reasons, calibrated p_fake). A person without a track record (a single sequence) takes the
    record's own verdict."""
    tracks = {t.get("track"): t for t in rec.get("tracks") or []}
    people = list(files.get("people") or [])
    if not people:  # no files: the record's tracks alone
        people = [{**t, "crops": []} for t in tracks.values()]
    out = []
    for person in people:
        track = tracks.get(person.get("track"))
        if track is None and len(people) == 1:
            track = rec
        merged = dict(person)
        if track is not None:
            for key in ("verdict", "reasons", "p_fake_calibrated"):
                merged[key] = track.get(key)
            merged.setdefault("frame_indices", track.get("frame_indices"))
        out.append(merged)
    return out


def deciding_person(rec: dict[str, Any], persons: list[dict[str, Any]]) -> int | None:
    """The position of the person who decided the video's verdict: the one whose values are the
    record's own (same frames and p_fake; else the closest p_fake)."""
    if not persons or rec.get("p_fake") is None:
        return None
    for k, person in enumerate(persons):
        if person.get("frame_indices") == rec.get("frame_indices") and (
            abs(person.get("p_fake", -1.0) - rec["p_fake"]) < 1e-9
        ):
            return k
    return min(range(len(persons)), key=lambda k: abs(persons[k].get("p_fake", 9) - rec["p_fake"]))


def _people(
    rec: dict[str, Any], persons: list[dict[str, Any]], decider: int | None, verdict: str
) -> str:
    """One panel per scored person (their verdict badge and face crops); none without a face."""
    total = rec.get("people") or 0
    if verdict == "NO_FACE" or total == 0 or not persons:
        return ""
    scored = len(persons)
    if scored == 1 and total == 1:
        intro = f"{_found(1)} in the video; the verdict is about them."
    elif scored == 1:
        intro = (
            f"{_found(total)} in the video; only the person seen in the most frames was scored, "
            "and the verdict is about them."
        )
    else:
        words = VERDICT_WORDS
        intro = (
            f"{_found(total)} in the video and {plural(scored, 'person', 'people')} "
            f"{'was' if scored == 1 else 'were'} scored, each on their own. A video is "
            f"{words['FAKE']} if anyone in it is, else {words['UNCERTAIN']} if anyone's is, else "
            f"{words['REAL']}"
            + (f": person {decider + 1} decided this one." if decider is not None else ".")
        )
    panels = []
    for k, person in enumerate(persons):
        indices = person.get("frame_indices") or []
        captions = [f"#{i} p_fake {p:.2f}" for i, p in zip(indices, person.get("frame_p_fake", []))]
        person_verdict = _verdict_of(person) if person.get("verdict") in VERDICT_WORDS else verdict
        badge = _badge(
            person_verdict,
            _p_calibrated(person),
            list(person.get("reasons") or []),
            calibrated=_calibrated(rec),
            ident=f"person_{k}_verdict",
            small=True,
        )
        decided = " <span class=decider>decided the verdict</span>" if k == decider else ""
        extra = ""
        if person_verdict == "UNCERTAIN" and len(person.get("reasons") or []) > 1:
            extra = _reasons_list(list(person["reasons"]), f"person_{k}_reasons")
        p = person.get("p_fake")
        panels.append(
            f"<div class='box person' id=person_{k} data-verdict={person_verdict}>"
            f"<h3>Person {k + 1}{decided}</h3>{badge}"
            f"<p class=muted>{'' if p is None else f'p_fake {p:.3f} · '}"
            f"{plural(len(indices), 'frame')}</p>{extra}"
            + _figures(
                person.get("crops") or [], captions, "crops", "crop", ident=f"person_{k}_crops"
            )
            + "</div>"
        )
    return "<h2>People</h2>" + f"<p class=muted id=people_intro>{intro}</p>" + "".join(panels)


# ---------------------------------------------------------------------- the timeline

#: The timeline chart's drawing box (SVG user units) and margins around the plot.
CHART_W, CHART_H = 900, 170
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 10, 26
#: Timeline charts drawn at most (the people seen in the most sampled frames are first).
MAX_CHARTS = 12


def _clock(seconds: float) -> str:
    from engine.explain import clock

    return clock(seconds)


def _person_numbers(timeline: dict[str, Any]) -> dict[Any, int]:
    """Face track id -> the person's number on the page (1, 2, ...: the timeline's order)."""
    return {p.get("track"): k + 1 for k, p in enumerate(timeline.get("people") or [])}


def _segment_text(segment: dict[str, Any], timeline: dict[str, Any]) -> str:
    from engine.explain import segment_words

    return segment_words(segment, _person_numbers(timeline).get(segment.get("person")))


def _tick_step(total: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if total / step <= 10:
            return step
    return 7200.0


def _chart(
    k: int,
    person: dict[str, Any],
    times: list[float | None],
    segments: list[dict[str, Any]],
    *,
    end: float,
    fake_at: float,
    real_below: float,
) -> str:
    """One person's timeline as an inline SVG: time on x, calibrated p_fake on y (the line
    breaks where the face is absent), the thresholds dashed, their segments shaded, and a
    cursor the page's script moves to the moment shown."""
    pw, ph = CHART_W - _LEFT - _RIGHT, CHART_H - _TOP - _BOTTOM

    def x(t: float) -> float:
        return _LEFT + min(max(t, 0.0), end) / end * pw

    def y(p: float) -> float:
        return _TOP + (1.0 - p) * ph

    parts = [
        f"<rect x={_LEFT} y={_TOP} width={pw} height={ph} fill=#fff stroke=#ccc></rect>",
    ]
    for seg in segments:
        x0, x1 = x(seg["start"]), x(seg["end"])
        parts.append(
            f"<rect class=segment x={x0:.1f} y={_TOP} width={max(x1 - x0, 1.0):.1f} "
            f"height={ph} fill=#c22 fill-opacity=0.16><title>{escape(seg['_words'])}</title>"
            "</rect>"
        )
    for v in (0.0, 0.5, 1.0):
        parts.append(f"<text x={_LEFT - 6} y={y(v) + 4:.1f} text-anchor=end>{v * 100:.0f}%</text>")
    for value, colour, cls, words in (
        (fake_at, "#c22", "threshold-fake", f"manipulated from {_threshold(fake_at)}"),
        (real_below, "#282", "threshold-real", f"authentic below {_threshold(real_below)}"),
    ):
        parts.append(
            f"<line class={cls} x1={_LEFT} x2={_LEFT + pw} y1={y(value):.1f} y2={y(value):.1f} "
            f"stroke={colour} stroke-dasharray='6 4'><title>{escape(words)}</title></line>"
        )
    step = _tick_step(end)
    t = 0.0
    while t <= end + 1e-9:
        label = _clock(t).removesuffix(".0")
        parts.append(
            f"<line x1={x(t):.1f} x2={x(t):.1f} y1={_TOP + ph} y2={_TOP + ph + 4} stroke=#999>"
            f"</line><text x={x(t):.1f} y={CHART_H - 8} text-anchor=middle>{label}</text>"
        )
        t += step
    values = person.get("p_fake") or []
    path, pen = [], False
    dots = []
    for i, (t, p) in enumerate(zip(times, values)):
        if t is None:
            continue  # no time to place it at
        if p is None:
            pen = False
            continue
        path.append(f"{'L' if pen else 'M'}{x(t):.1f},{y(p):.1f}")
        alone = (i == 0 or values[i - 1] is None) and (
            i + 1 >= len(values) or values[i + 1] is None
        )
        if alone or len(values) <= 240:
            dots.append(f"<circle cx={x(t):.1f} cy={y(p):.1f} r={2.5 if alone else 1.6}></circle>")
        pen = True
    if path:
        parts.append(
            f"<path class=p-fake d='{' '.join(path)}' fill=none stroke=#1f4e9c "
            "stroke-width=1.6></path>"
        )
    parts.append(f"<g fill=#1f4e9c>{''.join(dots)}</g>")
    parts.append(
        f"<line class=cursor id=timeline_{k}_cursor x1=0 x2=0 y1={_TOP} y2={_TOP + ph} "
        "stroke=#000 stroke-width=1.2 visibility=hidden></line>"
    )
    label = (
        f"Person {k + 1}: calibrated probability of manipulation over the video's "
        f"{_clock(end)}; {plural(len(segments), 'segment')} judged manipulated"
    )
    return (
        f"<svg class=timeline id=timeline_{k} data-person={k} viewBox='0 0 {CHART_W} {CHART_H}' "
        f"role=img aria-label='{escape(label)}'><title>{escape(label)}</title>"
        + "".join(parts)
        + "</svg>"
    )


def _script_json(data: Any) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_TIMELINE_SCRIPT = """
(() => {
const TL = JSON.parse(document.getElementById('tl_data').textContent);
const frameImg = document.getElementById('tl_frame');
const cropImg = document.getElementById('tl_crop');
function nearest(arr, t) {
  let best = -1;
  for (let i = 0; i < arr.length; i++) {
    if (arr[i] === null) continue;
    if (best < 0 || Math.abs(arr[i] - t) < Math.abs(arr[best] - t)) best = i;
  }
  return Math.max(best, 0);
}
function clock(s) {
  const t = Math.max(0, Math.round(s * 10)), m = Math.floor(t / 600), r = (t % 600) / 10;
  return m + ':' + (r < 10 ? '0' : '') + r.toFixed(1);
}
function show(t, person) {
  let at = t;
  const th = TL.thumbs;
  if (th && th.t.length) {
    const i = nearest(th.t, t);
    at = th.t[i];
    if (frameImg && th.frames[i]) {
      frameImg.src = th.frames[i];
      frameImg.dataset.index = th.indices[i];
    }
    const crop = (th.crops[person] || [])[i];
    if (cropImg) {
      if (crop) { cropImg.src = crop; cropImg.style.visibility = 'visible'; }
      else cropImg.style.visibility = 'hidden';
    }
  }
  const j = nearest(TL.times, at);
  const p = (TL.p[person] || [])[j];
  document.getElementById('tl_caption').textContent =
    'frame ' + TL.indices[j] + ' at ' + clock(TL.times[j]);
  document.getElementById('tl_crop_caption').textContent = 'person ' + (person + 1) + ': ' +
    (p === null || p === undefined ? 'no face here' : 'p_fake ' + Math.round(p * 100) + '%');
  const x = TL.left + Math.min(TL.times[j], TL.end) / TL.end * TL.pw;
  document.querySelectorAll('svg.timeline .cursor').forEach(c => {
    c.setAttribute('x1', x); c.setAttribute('x2', x); c.setAttribute('visibility', 'visible');
  });
}
document.querySelectorAll('svg.timeline').forEach(svg => svg.addEventListener('click', ev => {
  const r = svg.getBoundingClientRect();
  const x = (ev.clientX - r.left) / r.width * TL.width;
  show(Math.min(TL.end, Math.max(0, (x - TL.left) / TL.pw * TL.end)), +svg.dataset.person);
}));
document.querySelectorAll('#segments a').forEach(a => a.addEventListener('click', ev => {
  ev.preventDefault();
  show(+a.dataset.t, +a.dataset.person);
  document.getElementById('tl_viewer').scrollIntoView({block: 'nearest'});
}));
})();
"""


def _timeline(job: dict[str, Any]) -> str:
    """The whole-video timeline (when the job computed one): the segments in words, each
    person's chart, and the moment viewer (a sampled frame's thumbnail and the person's face
    there) that clicking a chart or a segment jumps to."""
    rec, files = job["result"], job.get("files") or {}
    line = rec.get("timeline")
    if not line:
        return ""
    from engine.explain import finite_or_none

    # a time the decoder could not give is None (the JSON has no NaN): such a frame is not drawn
    times = [finite_or_none(t) for t in line.get("times") or []]
    known = [t for t in times if t is not None]
    people = list(line.get("people") or [])
    fps = float(line.get("fps") or 2.0)
    step = 1.0 / fps
    end = max([*known, 0.0, *(g["end"] for g in rec.get("segments") or [])])
    end = max(end, step)
    rule = line.get("rule") or {}
    cal = rec.get("calibration") or {}
    fake_at = float(rule.get("opens_at", cal.get("fake_at", 0.6)))
    real_below = float(rule.get("closes_below", cal.get("real_below", 0.4)))
    numbers = _person_numbers(line)
    segments = []
    for g in rec.get("segments") or []:
        k = numbers.get(g.get("person"), 1) - 1
        segments.append({**g, "_k": k, "_words": _segment_text(g, line)})
    parts = [
        "<div class=box id=timeline><h2>Whole video timeline</h2>",
        f"<p class=muted id=timeline_intro>The whole video, {_clock(end)} long, sampled "
        f"{fps:g} times a second ({plural(len(times), 'frame')}): each person's calibrated "
        f"probability that their face is manipulated, over time. Dashed: the thresholds "
        f"(manipulated from {_threshold(fake_at)}, authentic below {_threshold(real_below)}); "
        "shaded: the segments judged manipulated (the rule: engine/timeline.py). Click a chart "
        "or a segment to see that moment.</p>",
    ]
    if segments:
        items = "".join(
            f"<li><a href='#tl_viewer' data-t='{min(g['start'] + step / 2, g['end']):.3f}' "
            f"data-person={g['_k']}>{escape(g['_words'])}</a></li>"
            for g in segments
        )
        parts.append(f"<h3>Segments judged manipulated</h3><ul id=segments>{items}</ul>")
    else:
        parts.append(
            "<p id=segments_none>No part of the video was judged manipulated: no person's "
            f"smoothed probability stayed at or above {_threshold(fake_at)} for "
            f"{rule.get('min_segment_s', 1.0):g} s or more.</p>"
        )
    if not people:
        parts.append("<p id=timeline_no_face>No face was found in the sampled frames.</p></div>")
        return "".join(parts)
    thumbs = files.get("timeline") or None
    viewer = ""
    if thumbs and thumbs.get("frames"):
        crops0 = (thumbs.get("crops") or [[]])[0] or [None]
        first_crop = crops0[0]
        crop_img = (
            f"<img id=tl_crop src='{escape(first_crop)}' alt='the person&#39;s face there'>"
            if first_crop
            else "<img id=tl_crop alt='the person&#39;s face there' style='visibility:hidden'>"
        )
        viewer = (
            "<div id=tl_viewer>"
            f"<figure><img id=tl_frame src='{escape(thumbs['frames'][0] or '')}' "
            f"data-index={thumbs['indices'][0]} alt='the frame at the chosen moment'>"
            f"<figcaption id=tl_caption>frame {thumbs['indices'][0]} at "
            f"{_clock(thumbs['times'][0] or 0.0)}</figcaption></figure>"
            f"<figure>{crop_img}<figcaption id=tl_crop_caption>person 1</figcaption></figure>"
            "</div>"
        )
    else:
        viewer = (
            "<div id=tl_viewer><p class=muted>No thumbnails were kept for this job.</p>"
            "<p id=tl_caption></p><p id=tl_crop_caption></p></div>"
        )
    shown = people[:MAX_CHARTS]
    for k, person in enumerate(shown):
        mine = [g for g in segments if g["_k"] == k]
        parts.append(
            f"<div class=person-timeline id=timeline_person_{k}><h3>Person {k + 1} "
            f"<span class=muted>(face in {person.get('frames', 0)} of "
            f"{plural(len(times), 'sampled frame')})</span></h3>"
            + _chart(k, person, times, mine, end=end, fake_at=fake_at, real_below=real_below)
            + "</div>"
        )
    if len(people) > len(shown):
        parts.append(
            "<p class=muted id=timeline_more>"
            f"{plural(len(people) - len(shown), 'more person', 'more people')} in the timeline "
            "(see the JSON).</p>"
        )
    parts.append(viewer)
    pw = CHART_W - _LEFT - _RIGHT
    data = {
        "times": times,
        "indices": line.get("frame_indices") or [],
        "p": [p.get("p_fake") or [] for p in shown],
        "end": end,
        "left": _LEFT,
        "pw": pw,
        "width": CHART_W,
        "thumbs": None
        if not thumbs
        else {
            "t": thumbs.get("times") or [],
            "indices": thumbs.get("indices") or [],
            "frames": thumbs.get("frames") or [],
            "crops": (thumbs.get("crops") or [])[: len(shown)],
        },
    }
    parts.append(
        f"<script type='application/json' id=tl_data>{_script_json(data)}</script>"
        f"<script>{_TIMELINE_SCRIPT}</script></div>"
    )
    return "".join(parts)


# ---------------------------------------------------------------------- the result


def _result(job: dict[str, Any], *, demo: bool = False) -> str:
    rec, files = job["result"], job["files"] or {}
    verdict = _verdict_of(rec)
    reasons = list(rec.get("reasons") or [])
    if verdict == "NO_FACE" and not reasons:
        reasons = ["NO_FACE_DETECTED"]
    p_cal = _p_calibrated(rec)
    persons = _persons(rec, files)
    decider = deciding_person(rec, persons) if len(persons) > 1 else None
    top_segment = segment_decided(rec)
    badge = _badge(
        verdict,
        p_cal,
        reasons,
        calibrated=_calibrated(rec),
        ident="verdict",
        segment_score=top_segment,
    )
    decided = ""
    if decider is not None:
        decided = (
            f"<p id=decided_by>Decided by person {decider + 1} of {len(persons)}: "
            f"{VERDICT_WORDS[_person_verdict(persons[decider], verdict)].lower()}.</p>"
        )
    if len(reasons) > 1 and verdict == "UNCERTAIN":
        decided += (
            "<p id=other_reasons>Also: "
            + "; ".join(escape(reason_text(code)) for code in reasons[1:])
            + ".</p>"
        )
    frames, faces = rec.get("frames") or 0, rec.get("faces") or 0
    score = (
        ""
        if verdict == "NO_FACE" or rec.get("p_fake") is None
        else (
            f"p_fake {rec['p_fake']:.4f}"
            + (f" (calibrated {p_cal:.4f})" if _calibrated(rec) and p_cal is not None else "")
            + " · "
        )
    )
    details = (
        f"<p class=muted id=details>{score}{plural(frames, 'frame')} analysed · face found in "
        f"{faces} of them · reduce {escape(str(rec.get('reduce')))} · backend "
        f"{escape(str(rec.get('backend')))}</p>"
    )
    others = int(rec.get("people") or 0) - len(persons)
    other_box = ""
    if verdict != "NO_FACE" and others > 0 and persons:
        other_box = (
            f"<div class='box warn' id=others>{plural(others, 'other person', 'other people')} "
            f"in the video {'was' if others == 1 else 'were'} not scored; upload with every "
            "person scored (the server's --faces all) to check them too.</div>"
        )
    indices, p_fake = rec.get("frame_indices") or [], rec.get("frame_p_fake") or []
    captions = [f"#{i} p_fake {p:.2f}" for i, p in zip(indices, p_fake)]
    frame_captions = [
        f"frame {i}" + ("" if k < len(rec.get("boxes") or []) and rec["boxes"][k] else " (no face)")
        for k, i in enumerate(indices)
    ]
    if verdict == "NO_FACE":  # whole frames: no score, heatmap or crop says anything of a face
        evidence = (
            "<h2>Frames analysed</h2><p class=muted>No face was found in any of them, so "
            "nothing was judged.</p>"
            + _figures(files.get("frames", []), frame_captions, "frames", "frame")
        )
    else:
        label = escape(str(rec.get("label")))
        whose = "" if decider is None else f" of person {decider + 1}, who decided the verdict"
        evidence = f"""
<h2>Per-frame p_fake{whose}</h2>
<img id=chart src='{escape(files.get("scores", ""))}' alt='per-frame p_fake chart'>
<h2>Heatmaps{whose}</h2>
<p class=muted>The last conv feature map weighted by the final layer's row for the class the
model leaned to ({label}; red: most weight), over each face crop.</p>
{_figures(files.get("overlays", []), captions, "heatmaps", "heatmap")}
<h2>Face crops{whose} (112x112, as the model saw them)</h2>
{_figures(files.get("crops", []), captions, "crops", "crop")}
<h2>Frames used, with face boxes{whose}</h2>
{_figures(files.get("frames", []), frame_captions, "frames", "frame")}"""
    timings = "".join(
        f"<tr><th>{escape(k)}</th><td>{v * 1000:.0f} ms</td></tr>"
        for k, v in rec.get("timings", {}).items()
    )
    body = f"""
<h1>{escape(job["filename"])}</h1>
<div class='box verdict-box {verdict}' id=verdict_box>{badge}{decided}{details}</div>
{_model_note(rec, demo=demo)}
{other_box}
{_why(rec, verdict)}
{_timeline(job)}
{_people(rec, persons, decider, verdict)}
{evidence}
<h2>Timings</h2><table id=timings>{timings}</table>
<p><a href='{escape(files.get("contact_sheet", ""))}'>contact sheet</a> ·
<a href='/api/v1/jobs/{job["id"]}'>JSON</a> · <a href='/'>upload another video</a></p>"""
    amount = ""
    if top_segment is not None:
        amount = " " + _percent(top_segment)
    elif verdict in ("FAKE", "REAL") and p_cal is not None:
        amount = " " + _percent(p_cal if verdict == "FAKE" else 1.0 - p_cal)
    return _page(f"{VERDICT_WORDS[verdict]}{amount} · {job['filename']}", body)
