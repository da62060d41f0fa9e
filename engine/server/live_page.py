"""The live section of ``dfe serve``'s upload page: a camera or a shared screen/tab, judged as
it plays (the page side of :mod:`engine.server.live_ws`).

Plain HTML and JavaScript, nothing loaded from elsewhere. The page captures the video into a
canvas ``fps`` times a second (scaled to at most :data:`PAGE_MAX_PX` a side), encodes it as JPEG,
and sends it with its capture time over the WebSocket; it sends no new frame while
:data:`IN_FLIGHT` are unacknowledged or the socket's buffer is not empty. Each verdict line
updates its person's panel: the verdict badge (the upload page's styles), the calibrated p_fake
as a percentage, the reasons, the stream time, the latency, and a sparkline of the person's last
p_fake values (inline SVG). All text is set with ``textContent`` (escaped by the DOM). Where the
browser gives no camera (a plain-http page not on localhost, an old browser) the section says
why. ``window.dfeLive`` holds the state (the last lines, the counts, how the socket closed).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from core.verdict import REASONS

#: The largest side (pixels) of the frames the page sends (a 4K screen is scaled down).
PAGE_MAX_PX = 1280
#: Frames the page may have sent but not seen acknowledged.
IN_FLIGHT = 2
#: The page's JPEG quality (canvas.toBlob).
JPEG_QUALITY = 0.85
#: The last p_fake values a person's sparkline shows.
SPARK_POINTS = 40

_STYLE = """
#live_view{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
#live_video{width:320px;max-width:100%;background:#111;border-radius:6px}
#live_people{display:flex;flex-wrap:wrap;gap:12px;flex:1}
.live-person{border:1px solid #ddd;border-radius:8px;padding:8px 12px;min-width:240px}
.live-person h3{margin:0 0 4px;font-size:1em}.live-person.stale{opacity:.5}
.live-person ul{margin:4px 0;padding-left:18px;font-size:.85em}
.live-person p{margin:4px 0;font-size:.85em}
svg.spark{display:block;width:200px;height:40px;background:#fafafa}
#live_counts{font-size:.85em}#live_notices{font-size:.9em}
#live_notices li.error{color:#b01c1c}#live_notices li.warn{color:#8a5300}
"""

_SCRIPT = """
(() => {
const CFG = JSON.parse(document.getElementById('live_cfg').textContent);
const $ = id => document.getElementById(id);
const SVGNS = 'http://www.w3.org/2000/svg';
const video = $('live_video'), canvas = $('live_canvas'), people = $('live_people');
const S = window.dfeLive = {lines: [], sent: 0, acked: 0, skipped: 0, maxInFlight: 0,
  dropped: {rate: 0, queue: 0, scorer: 0}, running: false, stopping: false, ready: false,
  closed: null, closedRecord: null, summary: null, errors: [], history: {}};
let ws = null, media = null, timer = null, closeTimer = null, t0 = 0, busy = false;
let calibrated = false, fakeAt = null, realBelow = null;

function percent(x) {
  if (x >= 0.9995) return '>99.9%';
  if (x < 0.0005) return '<0.1%';
  return (x * 100).toFixed(1) + '%';
}
function sentence(text) {
  if (!text) return '';
  return text[0].toUpperCase() + text.slice(1) + (text.endsWith('.') ? '' : '.');
}
function status(text) { $('live_status').textContent = text; }
function note(kind, text) {
  const li = document.createElement('li');
  li.className = kind;
  li.textContent = text;
  const list = $('live_notices');
  list.appendChild(li);
  while (list.children.length > 8) list.removeChild(list.firstChild);
}
function counts() {
  const d = S.dropped;
  $('live_counts').textContent = 'Frames sent ' + S.sent + ', acknowledged ' + S.acked +
    ', held back (network behind) ' + S.skipped + '. Dropped by the server: ' + d.rate +
    ' over its rate limit, ' + d.queue + ' from its queue, ' + d.scorer +
    ' by the scorer (behind).';
}
function unavailable() {
  if (!CFG.enabled) return CFG.reason;
  if (!('WebSocket' in window)) return 'this browser cannot open a WebSocket';
  if (!window.isSecureContext) {
    return 'browsers give the camera and screen capture only to pages served over https or ' +
      'from localhost, and this page is ' + location.origin + ': open it as http://localhost:' +
      (location.port || '80') + ' on the machine that runs dfe serve, or serve it over https ' +
      '(a TLS proxy in front)';
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return 'this browser does not offer camera capture (navigator.mediaDevices.getUserMedia)';
  }
  return '';
}
const why = unavailable();
const canShare = !why && !!navigator.mediaDevices.getDisplayMedia;
function buttons() {
  $('live_camera').disabled = S.running;
  $('live_screen').disabled = S.running || !canShare;
  $('live_stop').disabled = !S.running || S.stopping;
}
if (why) {
  const box = $('live_unavailable');
  box.textContent = 'Live mode is unavailable: ' + why + '.';
  box.hidden = false;
  $('live_camera').disabled = $('live_screen').disabled = $('live_stop').disabled = true;
  return;
}
if (!canShare) $('live_screen').title = 'this browser cannot share a screen or tab';
buttons();

function reset() {
  while (people.firstChild) people.removeChild(people.firstChild);
  $('live_notices').textContent = '';
  Object.assign(S, {lines: [], sent: 0, acked: 0, skipped: 0, maxInFlight: 0,
    dropped: {rate: 0, queue: 0, scorer: 0}, ready: false, closed: null, closedRecord: null,
    summary: null, errors: [], history: {}});
  counts();
}
function stopMedia() {
  if (media) media.getTracks().forEach(t => t.stop());
  media = null;
  video.srcObject = null;
}
async function start(kind) {
  if (S.running) return;
  S.running = true;
  S.stopping = false;
  buttons();
  reset();
  try {
    media = kind === 'camera'
      ? await navigator.mediaDevices.getUserMedia({video: true, audio: false})
      : await navigator.mediaDevices.getDisplayMedia({video: true, audio: false});
  } catch (e) {
    S.running = false;
    buttons();
    note('error', 'Could not open the ' + (kind === 'camera' ? 'camera' : 'screen or tab') +
      ': ' + ((e && (e.message || e.name)) || e) + '.');
    return;
  }
  video.srcObject = media;
  video.play().catch(() => {});
  media.getVideoTracks().forEach(t => t.addEventListener('ended', () => stop('the capture ended')));
  status('connecting...');
  ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host +
    '/api/v1/live');
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => ws.send(JSON.stringify(
    {fps: CFG.fps, window: CFG.window, hop: CFG.hop, faces: 'all', drop: true}));
  ws.onmessage = ev => {
    if (typeof ev.data !== 'string') return;
    let rec;
    try { rec = JSON.parse(ev.data); } catch (e) { return; }
    received(rec);
  };
  ws.onclose = ev => closed(ev);
}
function received(rec) {
  if (rec.event === 'ready') {
    S.ready = true;
    t0 = performance.now();
    timer = setInterval(capture, 1000 / CFG.fps);
    status('live: sending ' + CFG.fps + ' frames a second');
  } else if (rec.event === 'start') {
    const cal = rec.calibration || {};
    calibrated = cal.status === 'calibrated';
    fakeAt = typeof cal.fake_at === 'number' ? cal.fake_at : null;
    realBelow = typeof cal.real_below === 'number' ? cal.real_below : null;
    (rec.warnings || []).forEach(w => note('warn', sentence(String(w))));
  } else if (rec.event === 'ack') {
    S.acked++;
    S.dropped.rate = rec.dropped.rate;
    S.dropped.queue = rec.dropped.queue;
    counts();
  } else if (rec.event === 'verdict') {
    S.lines.push(rec);
    if (S.lines.length > 200) S.lines.shift();
    S.dropped.scorer = rec.dropped;
    draw(rec);
    counts();
  } else if (rec.event === 'summary') {
    S.summary = rec;
  } else if (rec.event === 'error') {
    S.errors.push(rec.message);
    note('error', 'Server: ' + sentence(String(rec.message)));
  } else if (rec.event === 'closed') {
    S.closedRecord = rec;
  }
}
function capture() {
  if (!ws || ws.readyState !== WebSocket.OPEN || busy || S.stopping) return;
  if (S.sent - S.acked >= CFG.in_flight || ws.bufferedAmount > 0) {
    S.skipped++;
    counts();
    return;
  }
  const w = video.videoWidth, h = video.videoHeight;
  if (!w || !h) return;
  const k = Math.min(1, CFG.max_px / Math.max(w, h));
  canvas.width = Math.max(1, Math.round(w * k));
  canvas.height = Math.max(1, Math.round(h * k));
  canvas.getContext('2d').drawImage(video, 0, 0, canvas.width, canvas.height);
  const t = (performance.now() - t0) / 1000;
  busy = true;
  canvas.toBlob(blob => {
    if (!blob) { busy = false; return; }
    blob.arrayBuffer().then(buf => {
      busy = false;
      if (!ws || ws.readyState !== WebSocket.OPEN || S.stopping) return;
      const out = new Uint8Array(8 + buf.byteLength);
      new DataView(out.buffer).setFloat64(0, t, true);
      out.set(new Uint8Array(buf), 8);
      ws.send(out);
      S.sent++;
      S.maxInFlight = Math.max(S.maxInFlight, S.sent - S.acked);
      counts();
    }, () => { busy = false; });
  }, 'image/jpeg', CFG.quality);
}
function svg(name, attrs) {
  const el = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}
function spark(el, points) {
  while (el.firstChild) el.removeChild(el.firstChild);
  const W = 200, H = 40, y = p => (H - 3 - p * (H - 6)).toFixed(1);
  const title = svg('title', {});
  title.textContent = 'p_fake of the last ' + points.length + ' verdicts (dashed: thresholds)';
  el.appendChild(title);
  if (fakeAt !== null) el.appendChild(svg('line', {x1: 0, x2: W, y1: y(fakeAt), y2: y(fakeAt),
    stroke: '#c22', 'stroke-dasharray': '4 3'}));
  if (realBelow !== null) el.appendChild(svg('line', {x1: 0, x2: W, y1: y(realBelow),
    y2: y(realBelow), stroke: '#282', 'stroke-dasharray': '4 3'}));
  if (!points.length) return;
  const n = Math.max(CFG.spark - 1, 1), x = i => (2 + i / n * (W - 4)).toFixed(1);
  const d = points.map((p, i) => (i ? 'L' : 'M') + x(i) + ',' + y(p)).join(' ');
  el.appendChild(svg('path', {d: d, fill: 'none', stroke: '#1f4e9c', 'stroke-width': 1.6}));
  const last = points.length - 1;
  el.appendChild(svg('circle', {cx: x(last), cy: y(points[last]), r: 2.5, fill: '#1f4e9c'}));
}
function panel(key, rec) {
  const id = 'live_track_' + key;
  let p = $(id);
  if (p) return p;
  p = document.createElement('div');
  p.className = 'live-person';
  p.id = id;
  p.dataset.track = key;
  const title = document.createElement('h3');
  title.textContent = key === 'none' ? 'Nobody in view' : 'Person ' + (rec.track + 1);
  const badge = document.createElement('div');
  badge.id = id + '_badge';
  const words = document.createElement('span');
  words.className = 'words';
  words.id = id + '_words';
  const amount = document.createElement('span');
  amount.className = 'amount';
  amount.id = id + '_p';
  const caption = document.createElement('div');
  caption.className = 'caption';
  caption.id = id + '_caption';
  badge.append(words, ' ', amount, caption);
  const chart = svg('svg', {class: 'spark', id: id + '_spark', viewBox: '0 0 200 40',
    role: 'img', 'aria-label': 'p_fake over the last verdicts'});
  const info = document.createElement('p');
  info.className = 'muted';
  info.id = id + '_info';
  const reasons = document.createElement('ul');
  reasons.className = 'reasons';
  reasons.id = id + '_reasons';
  p.append(title, badge, chart, info, reasons);
  people.appendChild(p);
  return p;
}
function draw(rec) {
  const key = rec.track === null || rec.track === undefined ? 'none' : String(rec.track);
  const p = panel(key, rec), id = p.id;
  const verdict = CFG.words[rec.verdict] ? rec.verdict : 'UNCERTAIN';
  const badge = $(id + '_badge');
  badge.className = 'badge small ' + verdict;
  badge.dataset.verdict = verdict;
  $(id + '_words').textContent = CFG.words[verdict];
  const pc = typeof rec.p_fake_calibrated === 'number' ? rec.p_fake_calibrated : null;
  $(id + '_p').textContent = pc === null ? '' : percent(pc);
  $(id + '_caption').textContent = pc === null
    ? sentence(CFG.reasons[(rec.reasons || [])[0]] || '')
    : (calibrated ? 'Calibrated probability' : "Model's probability (not calibrated)") +
      ' that the face is manipulated';
  p.dataset.time = rec.time;
  p.dataset.pFake = pc === null ? '' : pc;
  $(id + '_info').textContent = 'at ' + Number(rec.time).toFixed(1) + ' s · latency ' +
    Math.round(rec.latency_ms) + ' ms · ' + rec.frames + ' frames, face in ' + rec.present +
    ' of ' + rec.sampled;
  const list = $(id + '_reasons');
  list.textContent = '';
  // without a percentage the caption says the first reason: the list gives the others
  (rec.reasons || []).slice(pc === null ? 1 : 0).forEach(code => {
    const li = document.createElement('li');
    li.dataset.reason = code;
    li.textContent = sentence(CFG.reasons[code] || String(code));
    list.appendChild(li);
  });
  if (pc !== null) {
    const h = S.history[key] = S.history[key] || [];
    h.push(pc);
    while (h.length > CFG.spark) h.shift();
  }
  spark($(id + '_spark'), S.history[key] || []);
  for (const other of people.children) {
    const old = Number(other.dataset.time) < rec.time - 1e-6;
    other.classList.toggle('stale', old);
    if (other.dataset.track === 'none') other.hidden = old;
  }
}
function stop(why) {
  if (!S.running || S.stopping) return;
  S.stopping = true;
  buttons();
  clearInterval(timer);
  timer = null;
  stopMedia();
  if (why) note('warn', 'Stopped: ' + why + '.');
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({event: 'stop'}));
    status('stopping: waiting for the last verdicts...');
    closeTimer = setTimeout(() => { if (ws) ws.close(1000, 'stopped by the page'); }, 10000);
  } else if (ws) {
    ws.close();
  }
}
function closed(ev) {
  clearTimeout(closeTimer);
  clearInterval(timer);
  timer = null;
  stopMedia();
  S.closed = {code: ev.code, reason: ev.reason, clean: ev.wasClean};
  S.running = false;
  S.stopping = false;
  ws = null;
  buttons();
  if (ev.code === 1000) {
    status('stopped: the connection closed cleanly');
  } else if (ev.code === 1001 || ev.code === 1012) {
    status('the server is shutting down or restarting (code ' + ev.code + ')');
  } else {
    status('the connection closed (code ' + ev.code + ')');
    if (!S.errors.length) {
      note('error', 'The connection closed with code ' + ev.code +
        (ev.reason ? ': ' + ev.reason : '') + '.');
    }
  }
  const s = S.summary;
  if (s) {
    note('info', 'Session: ' + s.frames_scored + ' frames scored, ' + s.frames_dropped +
      ' dropped by the scorer, ' + s.people + (s.people === 1 ? ' person, ' : ' people, ') +
      s.lines + (s.lines === 1 ? ' verdict' : ' verdicts') +
      (s.latency_ms && s.latency_ms.median !== null
        ? ', latency median ' + Math.round(s.latency_ms.median) + ' ms' : '') + '.');
  }
}
$('live_camera').addEventListener('click', () => start('camera'));
$('live_screen').addEventListener('click', () => start('screen'));
$('live_stop').addEventListener('click', () => stop(''));
window.addEventListener('pagehide', () => { if (ws) ws.close(1000, 'the page was left'); });
})();
"""


def _script_json(data: Any) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def live_section(settings: dict[str, Any] | None, *, words: dict[str, str]) -> str:
    """The "Live" box of the upload page. ``settings``: :meth:`LiveHub.page_settings`
    (``enabled``, ``reason``, ``fps``, ``window``, ``hop``, ``max_side``; None: live mode off);
    ``words``: the badge's words per verdict."""
    settings = settings or {"enabled": False, "reason": "live mode is off on this server"}
    fps = float(settings.get("fps") or 4.0)
    window, hop = float(settings.get("window") or 4.0), float(settings.get("hop") or 1.0)
    config = {
        "enabled": bool(settings.get("enabled")),
        "reason": str(settings.get("reason") or ""),
        "fps": fps,
        "window": window,
        "hop": hop,
        "max_px": min(PAGE_MAX_PX, int(settings.get("max_side") or PAGE_MAX_PX)),
        "in_flight": IN_FLIGHT,
        "quality": JPEG_QUALITY,
        "spark": SPARK_POINTS,
        "words": dict(words),
        "reasons": dict(REASONS),
    }
    intro = (
        f"Judge a camera, or a screen or tab you share, as it plays: the page sends {fps:g} "
        f"frames a second (JPEG) to this server, which follows each person and gives a verdict "
        f"every {hop:g} s over the last {window:g} s. Nothing is stored."
    )
    return f"""
<style>{_STYLE}</style>
<section class=box id=live>
<h2>Live</h2>
<p class=muted id=live_intro>{escape(intro)}</p>
<p class='box warn' id=live_unavailable hidden></p>
<noscript><p class='box warn'>Live mode needs JavaScript.</p></noscript>
<p id=live_controls><button type=button id=live_camera>Camera</button>
<button type=button id=live_screen>Share screen/tab</button>
<button type=button id=live_stop disabled>Stop</button>
<span id=live_status class=muted></span></p>
<div id=live_view><video id=live_video muted playsinline autoplay></video>
<div id=live_people></div></div>
<p id=live_counts class=muted></p>
<ul id=live_notices></ul>
<canvas id=live_canvas hidden></canvas>
<script type='application/json' id=live_cfg>{_script_json(config)}</script>
<script>{_SCRIPT}</script>
</section>"""
