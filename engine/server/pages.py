"""Server-rendered HTML of ``dfe serve``: the upload form, the progress page, the result page.

Plain HTML and a few lines of JavaScript (the slider's steps, polling the job API); no build
step, nothing loaded from elsewhere. Every value from a job is escaped.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;
color:#222}
h1{font-size:1.5em}.muted{color:#666}.box{border:1px solid #ddd;border-radius:8px;padding:16px;
margin:16px 0}.verdict{font-size:2.4em;font-weight:700}.FAKE{color:#c22}.REAL{color:#282}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;text-align:center;
font-size:.8em}.frames img{width:240px}.crops img{width:112px;height:112px}
.heatmaps img{width:160px;height:160px}table{border-collapse:collapse}td,th{padding:4px 10px;
border-bottom:1px solid #eee;text-align:right}.warn{background:#fff4e0;border-color:#f0b050}
progress{width:320px}
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
    steps: tuple[int, ...], max_bytes: int, *, demo: bool = False, ready: bool = True
) -> str:
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
says REAL or FAKE.</p>
<form class=box id=upload action="/upload" method=post enctype="multipart/form-data">
  <p><label>Video <input type=file name=video id=video accept="video/*" required></label>
  <span class=muted>(up to {max_bytes / 2**20:.0f} MB)</span></p>
  <p><label>Sequence length
  <input type=range id=seq_slider min=0 max={len(steps) - 1} step=1 value={default}></label>
  <output id=seq_out>{steps[default]}</output> frames
  <input type=hidden name=seq_len id=seq_len value={steps[default]}></p>
  <p><button type=submit id=submit>Upload and analyse</button>
  <span id=sending class=muted></span></p>
</form>
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


def _coverage_warning(rec: dict[str, Any]) -> str:
    """The result's basis in plain words, when it is weak."""
    coverage = rec.get("face_coverage")
    if rec["faces"] == 0:
        return (
            "<div class='box warn' id=no_face><b>No face was found in any of the frames "
            "analysed.</b> The model looked at the whole pictures instead, as the original "
            "did, so this verdict says nothing reliable about a face.</div>"
        )
    if coverage is not None and coverage < 0.5:
        return (
            f"<div class='box warn' id=coverage><b>A face was found in only {rec['faces']} of "
            f"{rec['frames']} frames.</b> The rest were judged as whole pictures, so this "
            "verdict rests mostly on them and is not reliable.</div>"
        )
    if rec["faces"] < rec["frames"]:
        return (
            f"<div class='box warn' id=coverage>A face was found in {rec['faces']} of "
            f"{rec['frames']} frames; the others were judged as whole pictures.</div>"
        )
    return ""


def _people(rec: dict[str, Any], files: dict[str, Any]) -> str:
    """One panel per scored person: their face crops and their p_fake."""
    people = files.get("people") or []
    if not people:
        return ""
    total = rec.get("people", len(people))
    intro = (
        f"<p class=muted>{total} people were found in the video; "
        + (
            "each was scored on their own, and the video's verdict is the most-fake person's."
            if len(people) > 1
            else "the verdict is about the person seen in the most frames."
        )
        + "</p>"
    )
    panels = []
    for k, person in enumerate(people):
        label = person["label"]
        captions = [
            f"#{i} p_fake {p:.2f}" for i, p in zip(person["frame_indices"], person["frame_p_fake"])
        ]
        panels.append(
            f"<div class=box id=person_{k}><b>Person {k + 1}</b> "
            f"<span class='{label}'>{label}</span> · p_fake {person['p_fake']:.3f} · "
            f"{len(person['frame_indices'])} frames"
            + _figures(person["crops"], captions, "crops", "crop", ident=f"person_{k}_crops")
            + "</div>"
        )
    return "<h2>People</h2>" + intro + "".join(panels)


def _result(job: dict[str, Any], *, demo: bool = False) -> str:
    rec, files = job["result"], job["files"] or {}
    label = rec["label"]
    indices, p_fake = rec["frame_indices"], rec["frame_p_fake"]
    captions = [f"#{i} p_fake {p:.2f}" for i, p in zip(indices, p_fake)]
    warn = (DEMO_BANNER if demo else "") + _coverage_warning(rec)
    others = [w for w in rec.get("warnings", []) if "not scored" in w]
    if others:
        warn += (
            "<div class='box warn' id=others>Other people in the video were not scored; upload "
            "with every person scored (API: the server's --faces all) to check them too.</div>"
        )
    timings = "".join(
        f"<tr><th>{escape(k)}</th><td>{v * 1000:.0f} ms</td></tr>"
        for k, v in rec.get("timings", {}).items()
    )
    body = f"""
<h1>{escape(job["filename"])}</h1>
{warn}
<div class=box><span class="verdict {label}" id=label>{label}</span>
<span class=verdict id=confidence>{rec["confidence"]:.1f}%</span>
<p class=muted>p_fake {rec["p_fake"]:.4f} · {rec["frames"]} frames · faces in {rec["faces"]} ·
reduce {escape(str(rec.get("reduce")))} · backend {escape(str(rec.get("backend")))}</p></div>
{_people(rec, files)}
<h2>Per-frame p_fake</h2>
<img id=chart src='{escape(files.get("scores", ""))}' alt='per-frame p_fake chart'>
<h2>Heatmaps</h2>
<p class=muted>The last conv feature map weighted by the final layer's row for {label}
(red: most weight), over each face crop.</p>
{_figures(files.get("overlays", []), captions, "heatmaps", "heatmap")}
<h2>Face crops (112x112, as the model saw them)</h2>
{_figures(files.get("crops", []), captions, "crops", "crop")}
<h2>Frames used, with face boxes</h2>
{_figures(files.get("frames", []), [f"frame {i}" for i in indices], "frames", "frame")}
<h2>Timings</h2><table id=timings>{timings}</table>
<p><a href='{escape(files.get("contact_sheet", ""))}'>contact sheet</a> ·
<a href='/api/v1/jobs/{job["id"]}'>JSON</a> · <a href='/'>upload another video</a></p>"""
    return _page(f"{label} {rec['confidence']:.1f}%", body)
